#!/usr/bin/env python3
"""Export a segmentation model (a Hub id or a Hub-layout directory, loaded as the service loads it) to ONNX, and
check the ONNX Runtime answer against PyTorch's.

usage: python scripts/export_onnx.py MODEL_ID OUT.onnx [--size 1024] [--batch 1] [--precision fp32|fp16] [--no-check]
                                     [--out-json FILE]

What the export needs, and what this does for it:
- torchvision's `deform_conv2d` (BiRefNet's decoder) has no ONNX export of its own; ONNX has `DeformConv` since
  opset 19, with the same inputs (input, weight, offset, bias, mask) and attributes. The export translates the one
  to the other (`DEFORM_CONV`), at opset 19.
- `torch.onnx.export(..., dynamo=True)` (torch.export, then onnxscript) traces the model's own code as the Hub
  ships it: no edit of the downloaded files. The graph is exported with a fixed input size and batch, in fp32 or
  (`--precision fp16`, weights and activations; the peers' fast path on a GPU) in fp16.
Then the exported fp32 file runs under ONNX Runtime (whatever providers this machine has; CPU by default) on one
random image, and the logits are compared with PyTorch eager fp32 on the same image; `--no-check` skips that
(scripts/bench_onnxruntime.py checks a GPU run against PyTorch on the GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve_app.model.core import final_logits  # noqa: E402
from serve_app.model.loading import load_segmentation_module  # noqa: E402

OPSET = 19  # the first with DeformConv


class Logits(torch.nn.Module):
    """The network's final prediction as float32 logits (B, 1, h, w), as the service takes it."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return final_logits(self.module(pixels))


def _deform_conv(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                 n_weight_grps, n_offset_grps, use_mask):
    """torchvision::deform_conv2d as ONNX's DeformConv (opset 19): the same computation, inputs reordered."""
    from onnxscript import opset19 as op

    return op.DeformConv(input, weight, offset, bias, mask, dilations=[dil_h, dil_w], group=n_weight_grps,
                         offset_group=n_offset_grps, pads=[pad_h, pad_w, pad_h, pad_w], strides=[stride_h, stride_w])


def export(module: torch.nn.Module, path: Path, *, size: tuple[int, int], batch: int = 1) -> dict:
    """Write `module` (eval; its dtype is the graph's) as ONNX to `path` for (batch, 3, height, width) inputs;
    what it took."""
    import torchvision.ops  # noqa: F401  (registers torchvision::deform_conv2d)

    width, height = size
    example = torch.rand(batch, 3, height, width, dtype=next(module.parameters()).dtype)
    started = time.perf_counter()
    program = torch.onnx.export(Logits(module).eval(), (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                custom_translation_table={torch.ops.torchvision.deform_conv2d.default: _deform_conv})
    program.save(str(path))
    return {"opset": OPSET, "input_shape": list(example.shape), "dtype": str(example.dtype).removeprefix("torch."),
            "export_s": round(time.perf_counter() - started, 1),
            "bytes": path.stat().st_size,
            "translated": ["torchvision::deform_conv2d -> DeformConv"]}


def compare(module: torch.nn.Module, path: Path, *, size: tuple[int, int], batch: int = 1, seed: int = 0,
            providers: list[str] | None = None) -> dict:
    """ONNX Runtime's logits against PyTorch eager fp32's for one random batch."""
    import onnxruntime

    width, height = size
    pixels = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = Logits(module).eval()(pixels).numpy()
    runtime = onnxruntime.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    started = time.perf_counter()
    got = runtime.run(None, {runtime.get_inputs()[0].name: pixels.numpy()})[0]
    difference = np.abs(got - expected)
    return {"providers": runtime.get_providers(), "run_s": round(time.perf_counter() - started, 2),
            "max_abs_logit_diff": float(difference.max()), "mean_abs_logit_diff": float(difference.mean()),
            "logit_range": [float(expected.min()), float(expected.max())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_id", help="Hub id or Hub-layout directory (loaded with trust_remote_code)")
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    parser.add_argument("--size", type=int, default=1024, help="input width and height")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime run (always, for fp16)")
    parser.add_argument("--out-json", type=Path, help="write the record here too")
    args = parser.parse_args()
    module = load_segmentation_module(args.model_id).float().eval()
    size = (args.size, args.size)
    exported = module.half() if args.precision == "fp16" else module
    record = {"model_id": args.model_id, "torch": torch.__version__,
              "export": export(exported, args.out, size=size, batch=args.batch)}
    if args.precision == "fp32" and not args.no_check:
        record["check"] = compare(module, args.out, size=size, batch=args.batch)
    print(json.dumps(record, indent=2))
    if args.out_json:
        args.out_json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ONNX Runtime on the GPU, the engine rembg runs BiRefNet on: an exported model's batches per second under the
CUDA execution provider (or another that is installed), with its input and output bound in device memory, and its
logits against PyTorch eager fp32 on the same batch.

    python scripts/export_onnx.py /path/to/hub-dir birefnet_b8_fp16.onnx --batch 8 --precision fp16
    python scripts/bench_onnxruntime.py birefnet_b8_fp16.onnx --model-id /path/to/hub-dir --out ort.json

The input is a seeded random batch in [0, 1) of the file's fixed shape: the model's kernels do the same work
whatever the pixels, and PyTorch gets the very same tensor. Every node the provider leaves to the CPU is counted
(`nodes_by_provider`): one such node makes the figure one of ONNX Runtime with copies, not of the provider alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.accuracy import logit_agreement, mask_agreement, verdict  # noqa: E402
from serve_app.model.core import final_logits  # noqa: E402
from serve_app.model.loading import load_segmentation_module  # noqa: E402

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider", "cpu": "CPUExecutionProvider"}
DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


class ProviderUnavailable(RuntimeError):
    """The execution provider asked for did not start here: a figure from the fallback would not be its figure."""


def open_runtime(path: Path, provider: str, profile_nodes: bool) -> onnxruntime.InferenceSession:
    if PROVIDERS[provider] not in onnxruntime.get_available_providers():
        raise ProviderUnavailable(f"this onnxruntime ({onnxruntime.__version__}) has no {PROVIDERS[provider]}: "
                                  f"only {', '.join(onnxruntime.get_available_providers())}")
    if provider != "cpu":
        # CUDA, cuBLAS and cuDNN as torch loaded them (its pip packages), then ONNX Runtime's own search for them
        torch.zeros(1, device="cuda")
        if hasattr(onnxruntime, "preload_dlls"):
            onnxruntime.preload_dlls()
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_nodes:  # which provider ran each node, read back from the profile of one run (then deleted)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="bench_onnxruntime_")) / "profile")
    provider_options = {"device_id": 0} if provider != "cpu" else {}
    fallback = ["CPUExecutionProvider"] if provider != "cpu" else []  # for the nodes the provider has no kernel of
    runtime = onnxruntime.InferenceSession(str(path), options,
                                           providers=[(PROVIDERS[provider], provider_options), *fallback])
    # A provider whose libraries do not load (TensorRT's without libnvinfer) leaves the runtime on the CPU alone,
    # with ONNX Runtime's reason in its log above.
    if PROVIDERS[provider] not in runtime.get_providers():
        raise ProviderUnavailable(f"{PROVIDERS[provider]} did not start (the runtime runs on "
                                  f"{', '.join(runtime.get_providers())}); ONNX Runtime's log above says why")
    return runtime


def nodes_by_provider(profile_file: str) -> dict[str, int]:
    """How many node runs each provider did in the profiled runs (ONNX Runtime's profile JSON, deleted here)."""
    path = Path(profile_file)
    events = json.loads(path.read_text())
    shutil.rmtree(path.parent, ignore_errors=True)
    counts: dict[str, int] = {}
    for event in events:
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider and event.get("name", "").endswith("_kernel_time"):
            counts[provider] = counts.get(provider, 0) + 1
    return counts


def measure(path: Path, provider: str = "cuda", *, iterations: int = 20, warmup: int = 3,
            seed: int = 0) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Time `iterations` batches of the file's fixed shape under `provider`, after `warmup` untimed ones (and one
    profiled run that counts which provider ran each node); the record, the input batch and the last logits."""
    device = torch.device("cuda" if provider != "cpu" else "cpu")
    started = time.perf_counter()
    runtime = open_runtime(path, provider, profile_nodes=True)
    open_s = time.perf_counter() - started
    [source], [target] = runtime.get_inputs(), runtime.get_outputs()
    dtype = DTYPES[source.type]
    pixels = torch.rand(*source.shape, generator=torch.Generator().manual_seed(seed))
    inputs = pixels.to(device, dtype).contiguous()
    outputs = torch.empty(*target.shape, device=device, dtype=DTYPES[target.type])
    binding = runtime.io_binding()
    element = {torch.float32: np.float32, torch.float16: np.float16}
    binding.bind_input(source.name, device.type, 0, element[dtype], list(inputs.shape), inputs.data_ptr())
    binding.bind_output(target.name, device.type, 0, element[outputs.dtype], list(outputs.shape), outputs.data_ptr())
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    runtime.run_with_iobinding(binding)  # the one profiled run: which provider ran each node
    counts = nodes_by_provider(runtime.end_profiling())
    for _ in range(warmup):
        runtime.run_with_iobinding(binding)
    synchronize()
    started = time.perf_counter()
    for _ in range(iterations):
        runtime.run_with_iobinding(binding)
    synchronize()
    batch_ms = (time.perf_counter() - started) * 1000 / iterations
    record = {
        "onnx": str(path), "onnxruntime": onnxruntime.__version__, "providers": runtime.get_providers(),
        "nodes_by_provider": counts, "input_shape": list(source.shape), "dtype": str(dtype).removeprefix("torch."),
        "open_s": round(open_s, 1), "iterations": iterations, "batch_ms": round(batch_ms, 2),
        "images_per_s": round(int(source.shape[0]) * 1000 / batch_ms, 2),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    return record, pixels, outputs


def against_eager_fp32(module: torch.nn.Module, pixels: torch.Tensor, logits: torch.Tensor) -> dict:
    """`logits` (the runtime's, for `pixels`) against `module`'s eager fp32 logits for the same batch, on the
    logits' device, image by image with scripts/check_accuracy.py's measures and bounds (harness/accuracy.py)."""
    module = module.float().eval().to(logits.device)
    with torch.inference_mode():
        expected = final_logits(module(pixels.to(logits.device))).float().cpu().numpy()
    got = logits.float().cpu().numpy()
    rows = [mask_agreement(_alpha(candidate), _alpha(reference)) | logit_agreement(candidate, reference)
            for candidate, reference in zip(got, expected, strict=True)]
    return {**verdict(rows), "mean_abs_logit_diff": max(row["mean_abs_logit_diff"] for row in rows),
            "logit_range": [float(expected.min()), float(expected.max())]}


def _alpha(logits: np.ndarray) -> np.ndarray:
    """The uint8 mask of logits, as the service makes it (sigmoid, x255, rounded)."""
    return np.round(255 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path, help="the exported model (fixed input shape)")
    parser.add_argument("--model-id", help="the Hub-layout directory it was exported from: PyTorch eager fp32 "
                                           "logits of the same batch are the reference")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cuda")
    parser.add_argument("--iterations", type=int, default=20, help="timed batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (cuDNN's algorithm search)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    try:
        record, pixels, logits = measure(args.onnx, args.provider, iterations=args.iterations, warmup=args.warmup,
                                         seed=args.seed)
    except ProviderUnavailable as error:
        sys.exit(f"bench_onnxruntime: {error}")
    if args.model_id:
        record["against_eager_fp32"] = against_eager_fp32(load_segmentation_module(args.model_id), pixels, logits)
    print(json.dumps(record, indent=2))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

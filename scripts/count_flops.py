#!/usr/bin/env python3
"""Floating-point operations of one forward pass, by operator and by top-level module: how much work the model is,
to set beside its measured time (what fraction of the GPU's peak each kind of kernel reaches).

    python scripts/count_flops.py /path/to/hub-dir --size 1024 --out flops.json

Counted by PyTorch's FlopCounterMode on one image in fp32 on the CPU (counts do not depend on the device or dtype),
with the window attention fused as the service runs it. Matrix products and convolutions are counted; operators
without a formula (the deformable convolution, PyTorch's CPU attention, elementwise work) count as zero, so the
total is a floor.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve_app.model.attention import fuse_window_attention  # noqa: E402
from serve_app.model.loading import load_segmentation_module  # noqa: E402


def count(module: torch.nn.Module, size: int) -> dict:
    """GFLOP of one (1, 3, size, size) forward of `module` (fp32, CPU), by operator and by top-level module."""
    pixels = torch.rand(1, 3, size, size)
    started = time.perf_counter()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(pixels)
    counts = counter.get_flop_counts()
    root = type(module).__name__
    return {
        "input": [1, 3, size, size],
        "total_flops": counter.get_total_flops(),
        "total_gflop": round(counter.get_total_flops() / 1e9, 1),
        "by_operator_flops": {str(op): flops for op, flops in
                              sorted(counts.get("Global", {}).items(), key=lambda item: -item[1])},
        "by_module_flops": {name.removeprefix(f"{root}."): sum(ops.values())
                            for name, ops in counts.items() if name.count(".") == 1 and name.startswith(root)},
        "count_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_id", help="Hub id or Hub-layout directory (loaded with trust_remote_code)")
    parser.add_argument("--size", type=int, default=1024, help="input width and height")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    module = load_segmentation_module(args.model_id).float().eval()
    record = {"model_id": args.model_id, "torch": torch.__version__,
              "fused_window_attention_layers": fuse_window_attention(module), **count(module, args.size)}
    print(json.dumps(record, indent=2))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

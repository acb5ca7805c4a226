"""Accuracy of fast executions against the eager fp32 reference, on real photos (scikit-image's samples).

Runs the reference (eager, fp32 without TF32, batch 1, the model's own attention code) and each candidate (the
model settings of --config, configs/prod.yaml by default, with the candidate's execution and precision) on the same
weights and photos, and compares masks (mean absolute alpha difference, IoU at 0.5) and raw logits at the model's
input size. Exit status 1 when a candidate misses a bound or ran a batch size on the eager stand-in of a saved
bucket that did not load:

    python scripts/check_accuracy.py --model-id /path/to/hub-layout-dir --photos 50 \
        --candidates eager:fp16,compiled:fp16 --batch-size 8 --out accuracy.json

`--subjects shapes` uses generated photos of the kind `scripts/train_shapes.py` trains on instead, for its weights:
their masks of the sample photos can be a few dozen pixels, where IoU counts single pixels.

A candidate may name kernel candidates to put in the model (scripts/harness/model_kernels.py) after a second colon,
e.g. compiled_graphs:fp16:deform+linear.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.accuracy import (
    MAX_ABS_LOGIT_DIFF,
    MAX_MEAN_ALPHA_DIFF,
    MAX_REL_LOGIT_DIFF,
    MIN_IOU,
    logit_agreement,
    mask_agreement,
    verdict,
)
from harness.model_kernels import kernels_label, load_model, parse_kernels
from harness.photos import SIZE_RANGE, sample_photo_jpegs
from harness.run_record import run_record
from harness.shapes import shape_photos
from serve_app.imaging import decode_image
from serve_app.model.core import BackgroundRemovalModel, split_masks
from serve_app.model.graph_rewrites import REWRITES
from serve_app.serve_config import app_args, parse_overrides, read_config
from serve_app.settings import ModelSettings, parse_app_args
from serve_app.versions import component_versions

SHAPES_SEED = 2718  # --subjects shapes: a seed of its own, not train_shapes.py's default nor its held-out one


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "prod.yaml",
                        help="the Serve config whose args.model the candidates' settings start from (the shipped "
                             "ones by default); the command line's options and --set go over them")
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--input-size", type=int, default=1024)
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--photo-dir", type=Path, help="folder of scikit-image's sample photos (default: installed)")
    parser.add_argument("--subjects", choices=["photos", "shapes"], default="photos",
                        help="photos: scikit-image's samples; shapes: generated photos of the kind "
                             "scripts/train_shapes.py trains on (not its training or held-out batches), for its "
                             "weights, whose masks of real photos can be a few pixels")
    parser.add_argument("--candidates", default="compiled:fp16",
                        help="comma-separated EXECUTION:PRECISION[:KERNELS], KERNELS +-joined")
    parser.add_argument("--batch-size", type=int, default=8, help="candidates run in batches of this size")
    parser.add_argument("--compile-cache-dir", type=Path)
    parser.add_argument("--compile-options", type=json.loads, default={})
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other model setting of the candidates (serve_app/settings.py ModelSettings), "
                             "value as YAML, e.g. --set deform_conv_channels_last=true; repeatable")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


def outputs(model: BackgroundRemovalModel, images: list[np.ndarray], batch_size: int) -> tuple[list, list]:
    """Masks at each photo's size and logits at the input size, batch by batch."""
    masks, logits = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            sizes = [image.shape[:2] for image in batch]
            batch_logits = model.forward(model.preprocess(batch))  # one pass gives both, as predict() runs it
            masks += split_masks(model.postprocess(batch_logits, sizes).cpu(), sizes)
            logits += list(batch_logits.float().cpu().numpy())
    return masks, logits


def main() -> int:
    # An H200 run died with SIGSEGV at interpreter exit after writing its record: should it
    # happen again, every thread's Python stack goes to stderr.
    faulthandler.enable()
    args = parse_args()
    if args.subjects == "shapes":
        images = shape_photos(args.photos, SIZE_RANGE, seed=SHAPES_SEED)
    else:
        images = [decode_image(jpeg, max_pixels=50_000_000).rgb
                  for jpeg in sample_photo_jpegs(args.photos, photo_dir=args.photo_dir)]

    shipped = parse_app_args(app_args(read_config(args.config))).default.model_dump()

    def load(execution: str, precision: str, kernels: tuple[str, ...] = (), **settings: Any) -> BackgroundRemovalModel:
        return load_model(ModelSettings.model_validate({
            **shipped, "model_id": args.model_id, "revision": None, "input_size": args.input_size,
            "precision": precision, "device": args.device, "execution": execution,
            "graph_batch_sizes": (args.batch_size,), "compile_cache_dir": args.compile_cache_dir,
            "compile_options": args.compile_options or shipped["compile_options"], "probe_batch_limit": False,
            **settings}), kernels)

    # The reference is the model as its own code computes it, in true fp32: the downloaded attention, not this
    # project's kernel (which the candidates run: a fault in it would cancel out), and no TF32 in cuDNN.
    with strict_fp32():
        reference = load("eager", "fp32", fused_window_attention=False)
        reference_masks, reference_logits = outputs(reference, images, batch_size=1)
    record: dict = run_record(versions=component_versions(), device=reference.describe()["device_name"],
                              bounds={"max_mean_abs_alpha_diff": MAX_MEAN_ALPHA_DIFF, "min_iou": MIN_IOU,
                                      "max_abs_logit_diff": MAX_ABS_LOGIT_DIFF,
                                      "max_rel_logit_diff": MAX_REL_LOGIT_DIFF},
                              subjects=args.subjects, settings=parse_overrides(args.set),
                              photo_sizes=[list(image.shape[1::-1]) for image in images],
                              candidates=[])
    del reference
    failed = 0
    for candidate in args.candidates.split(","):
        execution, precision, kernels = (*candidate.split(":"), "none")[:3]
        model = load(execution, precision, parse_kernels(kernels), **parse_overrides(args.set))
        model.wait_for_buckets()  # every batch through the candidate's own compiled code, not the eager stand-in
        masks, logits = outputs(model, images, args.batch_size)
        # A saved bucket that failed to load leaves that batch size on the eager forward: not the candidate.
        eager_stand_in = model.describe()["eager_batch_sizes"]
        rows = [mask_agreement(mask, ref) | logit_agreement(logit, ref_logit)
                for mask, ref, logit, ref_logit in zip(masks, reference_masks, logits, reference_logits, strict=True)]
        description = model.describe()
        summary = {"execution_requested": execution, "execution": model.execution, "precision": precision,
                   "kernels": kernels_label(parse_kernels(kernels)),
                   "capturable_deform_conv": description["capturable_deform_conv"],
                   "deform_conv_kernel": description["deform_conv_kernel"],
                   "window_attention_kernel": description["window_attention_kernel"],
                   **{name: description[name] for name in REWRITES}, "compile_warmup": description["compile_warmup"],
                   "eager_batch_sizes": eager_stand_in, **verdict(rows)}
        failed += not summary["within_bounds"] or bool(eager_stand_in)
        print(json.dumps(summary), flush=True)
        record["candidates"].append({**summary, "per_image": rows})
        del model
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 1 if failed else 0


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for cuDNN's convolutions (on by default in PyTorch) and for matrix products, then as it was."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


if __name__ == "__main__":
    sys.exit(main())

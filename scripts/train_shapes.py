#!/usr/bin/env python3
"""Weights with structure for accuracy checks: a Hub-layout model trained for minutes to cut generated subjects out.

Random weights give logits within a few hundredths of 0, so every mask is nearly the same value everywhere and a
fast execution's IoU against eager fp32 says little. Trained for a few minutes on generated photos of shapes
(scripts/harness/shapes.py), the same architecture and the same remote code give masks with edges, confident
logits on both sides of 0 and real background: masks that fp16, fused kernels and compiled graphs must keep. The
photos are drawn at the sizes of the accuracy check's (`--photo-sizes`, default the benchmark photos' range) and
squeezed to the model's input as the service squeezes every photo: a network trained on square photos only meets
the check's wide and tall photos as strangers, its masks there can be empty, and IoU on an empty mask counts pixels.

    python scripts/train_shapes.py /path/to/hub-dir /path/to/trained-dir --minutes 4 --batch 4

OUT_DIR gets SOURCE_DIR's files (config and remote code) and a model.safetensors of the trained weights, in the
dtype of the source's weights; it loads with `from_pretrained(OUT_DIR, trust_remote_code=True)` like the source.
The network trains in eval mode (normalisation statistics fixed, the inference path that the service runs) with
AdamW (a linear warm-up, then a cosine decay to 0 at the end of the budget), on binary cross-entropy (a subject
pixel's weighted by `--subject-weight`) plus soft IoU, in bf16 autocast on a GPU. The record (`--out-json`) gives
the IoU against the true masks of a held-out batch before training, after it and after reloading the saved
directory.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.photos import SIZE_RANGE  # noqa: E402
from harness.shapes import shapes_batch  # noqa: E402
from serve_app.model.core import IMAGENET_MEAN, IMAGENET_STD, final_logits  # noqa: E402
from serve_app.model.loading import load_segmentation_module  # noqa: E402

WEIGHTS = "model.safetensors"
HELD_OUT_SEED = 12345  # the evaluation batch: never drawn for training (training draws from --seed)


def logits_for(module: torch.nn.Module, photos: torch.Tensor) -> torch.Tensor:
    """The network's final logits for photos in [0, 1], at the photos' size (as the service normalises them)."""
    mean = torch.tensor(IMAGENET_MEAN, device=photos.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=photos.device).view(1, 3, 1, 1)
    logits = final_logits(module((photos - mean) / std))
    if logits.shape[2:] != photos.shape[2:]:
        logits = F.interpolate(logits, size=photos.shape[2:], mode="bilinear", align_corners=False)
    return logits


def iou(logits: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean IoU over the batch of the masks at logit 0 (alpha 0.5) against the true ones."""
    predicted, truth = logits > 0, masks > 0.5
    union = (predicted | truth).sum(dim=(1, 2, 3)).clamp(min=1)
    return ((predicted & truth).sum(dim=(1, 2, 3)) / union).mean().item()


def evaluate(module: torch.nn.Module, photos: torch.Tensor, masks: torch.Tensor, dtype: torch.dtype) -> dict:
    with torch.inference_mode(), torch.autocast(photos.device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = logits_for(module, photos).float()
    magnitude = logits.abs().flatten()
    return {"iou": round(iou(logits, masks), 4), "foreground_share": round((logits > 0).float().mean().item(), 4),
            "abs_logit_median": round(magnitude.median().item(), 3),
            "confident_share": round((magnitude > 2).float().mean().item(), 4)}


def lr_factor(step: int, progress: float, warmup_steps: int) -> float:
    """The learning rate's share at `step`, `progress` (0-1) through the time or step budget: a linear warm-up
    (full-size steps on freshly random attention layers can throw the network into a corner, every pixel
    background, that it takes many steps to leave), times a cosine from 1 down to 0 as the budget runs out: at a
    constant rate the saved weights are wherever the last noisy step left them
    (docs/benchmarks/2026-12-06-h100-trained-accuracy/)."""
    return min(1.0, (step + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def balanced_subject_weight(masks: torch.Tensor, most: float = 20.0) -> torch.Tensor:
    """The weight of a subject pixel's cross-entropy that gives the batch's subject as much pull as its background
    (background pixels over subject pixels, from 1 to `most`): on photos at the check's sizes most pixels are
    background, and at equal weights a training of minutes settles on calling every pixel background."""
    subject = masks.sum()
    return ((masks.numel() - subject) / subject.clamp(min=1)).clamp(1.0, most)


def subject_weight_arg(text: str) -> float | None:
    """--subject-weight: a positive number, or `balanced` (None: balanced per batch)."""
    if text == "balanced":
        return None
    try:
        weight = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number nor 'balanced': {text!r}") from None
    if not weight > 0:
        raise argparse.ArgumentTypeError(f"a subject weight is above 0, not {text}")
    return weight


def weights_dtype(path: Path) -> torch.dtype:
    """The floating-point dtype of a safetensors file's first floating-point tensor."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as weights:
        for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
            tensor = weights.get_slice(key)
            dtype = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}.get(tensor.get_dtype())
            if dtype is not None:
                return dtype
    return torch.float32


def train(source: Path, out: Path, *, size: tuple[int, int], batch: int, minutes: float, max_steps: int | None,
          lr: float, scenes: float, seed: int, device: torch.device, warmup_steps: int = 50,
          photo_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None, coarse_size: int = 512,
          coarse_batch: int | None = None, coarse_share: float = 0.0, subject_weight: float | None = None,
          log_every: int = 20) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    coarse_batch = coarse_batch or 2 * batch
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != "model.safetensors.index.json":
            shutil.copyfile(path, out / path.name)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    module = load_segmentation_module(str(source)).float().to(device).eval()
    module.requires_grad_(True)
    held_out = shapes_batch(batch, size, torch.Generator().manual_seed(HELD_OUT_SEED), scenes=scenes,
                            photo_sizes=photo_sizes, device=device)
    record: dict = {"source": str(source), "out": str(out), "size": list(size), "batch": batch, "lr": lr,
                    "warmup_steps": warmup_steps, "photo_sizes": photo_sizes and [list(s) for s in photo_sizes],
                    "scenes": scenes, "device": str(device), "autocast": str(dtype).removeprefix("torch."),
                    "coarse": {"size": coarse_size, "batch": coarse_batch, "share": coarse_share},
                    "subject_weight": "balanced" if subject_weight is None else subject_weight,
                    "before": evaluate(module, *held_out, dtype)}
    print(json.dumps({"before": record["before"]}), flush=True)
    optimiser = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    fixed_weight = None if subject_weight is None else torch.tensor(subject_weight, device=device)
    started, step, losses, coarse_steps = time.perf_counter(), 0, [], 0
    while (progress := max((time.perf_counter() - started) / (minutes * 60),
                           0.0 if max_steps is None else step / max_steps)) < 1:
        for group in optimiser.param_groups:
            group["lr"] = lr * lr_factor(step, progress, warmup_steps)
        coarse = progress < coarse_share
        coarse_steps += coarse
        photos, masks = shapes_batch(coarse_batch if coarse else batch,
                                     (coarse_size, coarse_size) if coarse else size, generator, scenes=scenes,
                                     photo_sizes=photo_sizes, device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = logits_for(module, photos).float()
        probabilities = torch.sigmoid(logits)
        overlap = (probabilities * masks).sum(dim=(1, 2, 3))
        soft_iou = overlap / (probabilities.sum(dim=(1, 2, 3)) + masks.sum(dim=(1, 2, 3)) - overlap + 1.0)
        weight = balanced_subject_weight(masks) if fixed_weight is None else fixed_weight
        loss = F.binary_cross_entropy_with_logits(logits, masks, pos_weight=weight) + (1 - soft_iou).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimiser.step()
        step += 1
        losses.append(loss.item())
        if step % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            print(f"step {step}  {time.perf_counter() - started:6.0f} s  {photos.shape[-1]} px  loss {recent:.4f}"
                  f"  batch IoU {iou(logits.detach(), masks):.3f}", flush=True)
    record |= {"steps": step, "coarse_steps": coarse_steps, "train_s": round(time.perf_counter() - started, 1),
               "lr_last": optimiser.param_groups[0]["lr"],
               "loss_first": round(losses[0], 4) if losses else None,
               "loss_last": round(sum(losses[-log_every:]) / len(losses[-log_every:]), 4) if losses else None,
               "after": evaluate(module, *held_out, dtype)}
    print(json.dumps({"after": record["after"]}), flush=True)

    from safetensors.torch import save_file

    saved_dtype = weights_dtype(source / WEIGHTS) if (source / WEIGHTS).exists() else torch.float32
    state = {key: (tensor.to(saved_dtype) if tensor.is_floating_point() else tensor).detach().cpu().contiguous()
             for key, tensor in module.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    reloaded = load_segmentation_module(str(out)).float().to(device).eval()
    record["reloaded"] = evaluate(reloaded, *held_out, dtype)
    record["saved_dtype"] = str(saved_dtype).removeprefix("torch.")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="Hub-layout directory: config, remote code, weights to start from")
    parser.add_argument("out", type=Path, help="directory to write (the source's files, the trained weights)")
    parser.add_argument("--size", type=int, nargs="+", default=[1024], metavar="PX",
                        help="photo width [and height] to train at (default 1024, the model's input size)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=4.0, help="training time (after the model is loaded)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps, if sooner")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-steps", type=int, default=50, help="steps of linear learning-rate warm-up")
    parser.add_argument("--scenes", type=float, default=0.5, help="share of photos on a busy scene, not a backdrop")
    parser.add_argument("--photo-sizes", type=int, nargs=4, default=[*SIZE_RANGE[0], *SIZE_RANGE[1]],
                        metavar=("MIN_W", "MIN_H", "MAX_W", "MAX_H"),
                        help="draw each photo at a size from this range, squeezed to --size (default: the benchmark "
                             "photos' range, which the accuracy check's photos share); 0 0 0 0: square photos")
    parser.add_argument("--coarse-share", type=float, default=0.0,
                        help="share of the budget spent first on photos squeezed to --coarse-size instead, in "
                             "batches of --coarse-batch (at 512 px, four times the photos a second of 1024 px)")
    parser.add_argument("--coarse-size", type=int, default=512, metavar="PX")
    parser.add_argument("--coarse-batch", type=int, help="batch size of the coarse steps (default: twice --batch)")
    parser.add_argument("--subject-weight", type=subject_weight_arg, default="balanced", metavar="W|balanced",
                        help="weight of a subject pixel's cross-entropy against a background pixel's; balanced "
                             "(default): the batch's background-to-subject ratio (at most 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    width, height = (args.size * 2)[:2]
    min_width, min_height, max_width, max_height = args.photo_sizes
    photo_sizes = ((min_width, min_height), (max_width, max_height)) if any(args.photo_sizes) else None
    record = train(args.source, args.out, size=(width, height), batch=args.batch, minutes=args.minutes,
                   max_steps=args.max_steps, lr=args.lr, scenes=args.scenes, seed=args.seed, device=device,
                   warmup_steps=args.warmup_steps, photo_sizes=photo_sizes, coarse_size=args.coarse_size,
                   coarse_batch=args.coarse_batch, coarse_share=args.coarse_share,
                   subject_weight=args.subject_weight)
    print(json.dumps(record, indent=2))
    if args.out_json:
        args.out_json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

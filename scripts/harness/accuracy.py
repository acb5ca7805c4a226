"""How closely a fast execution (compiled, fp16) reproduces the eager fp32 reference, image by image."""

from __future__ import annotations

import numpy as np

# Accuracy bounds: outputs must match the eager fp32 reference on real photos.
MAX_MEAN_ALPHA_DIFF = 1 / 255  # mean |alpha - alpha_ref| with alpha in [0, 1]
MIN_IOU = 0.99  # masks thresholded at 0.5
# Random weights give near-degenerate masks, so the raw logits are compared too: fp16 keeps about three
# significant digits, and logits of a few units differ by a few hundredths from an fp32 run. A difference may be
# MAX_ABS_LOGIT_DIFF, or MAX_REL_LOGIT_DIFF of the reference's logit where that is more: fp16's spacing grows with
# the value (0.0156 at 16), so trained weights' confident logits of -15 or 30 differ by a tenth or more from fp32's
# through precision alone, at alphas of 3e-7 and 1 - 1e-13 that the difference does not move.
MAX_ABS_LOGIT_DIFF = 0.1
MAX_REL_LOGIT_DIFF = 0.01


def logit_tolerance(reference: np.ndarray) -> np.ndarray:
    """The largest difference from each reference logit that the bound allows."""
    return np.maximum(MAX_ABS_LOGIT_DIFF, MAX_REL_LOGIT_DIFF * np.abs(reference.astype(np.float32)))


def mask_agreement(candidate: np.ndarray, reference: np.ndarray) -> dict:
    """Mean absolute alpha difference (0..1) and IoU at threshold 0.5 of two uint8 masks of one image."""
    if candidate.shape != reference.shape:
        raise ValueError(f"mask shapes differ: {candidate.shape} vs {reference.shape}")
    mean_abs = float(np.abs(candidate.astype(np.int16) - reference.astype(np.int16)).mean()) / 255
    fg_candidate, fg_reference = candidate >= 128, reference >= 128
    union = int(np.logical_or(fg_candidate, fg_reference).sum())
    # Two empty masks agree completely.
    iou = 1.0 if union == 0 else int(np.logical_and(fg_candidate, fg_reference).sum()) / union
    # IoU counts single pixels on a foreground of a few dozen: the counts say when it does.
    return {"mean_abs_alpha_diff": mean_abs, "iou": iou, "reference_foreground": float(fg_reference.mean()),
            "reference_foreground_pixels": int(fg_reference.sum()),
            "pixels_differing": int(np.logical_xor(fg_candidate, fg_reference).sum())}


def logit_agreement(candidate: np.ndarray, reference: np.ndarray) -> dict:
    difference = np.abs(candidate.astype(np.float32) - reference.astype(np.float32))
    # The share of confident reference pixels (|logit| > 2, alpha beyond 0.12..0.88): near 0 for random weights,
    # whose masks are ~0.5 everywhere; most of the image for weights with structure (scripts/train_shapes.py).
    uncertain = np.abs(reference) <= 2
    # The worst difference as a share of what the bound allows there (within the bound: at most 1).
    share = difference / logit_tolerance(reference)
    # Where the largest difference sits: beyond |logit| 2 a difference moves alpha less than half as much as near 0,
    # where masks are decided, and at |logit| 10 about 2e-4 times as much.
    return {"max_abs_logit_diff": float(difference.max()), "mean_abs_logit_diff": float(difference.mean()),
            "max_logit_diff_of_bound": float(share.max()),
            "reference_logit_at_max_of_bound": float(reference.reshape(-1)[int(share.argmax())]),
            "reference_logit_at_max_diff": float(reference.reshape(-1)[int(difference.argmax())]),
            "max_abs_logit_diff_uncertain": float(difference[uncertain].max()) if uncertain.any() else 0.0,
            "reference_logit_range": [float(reference.min()), float(reference.max())],
            "reference_confident_share": float((np.abs(reference) > 2).mean())}


def verdict(rows: list[dict]) -> dict:
    """Worst case over all images, and whether every bound holds."""
    worst = {
        "images": len(rows),
        "max_mean_abs_alpha_diff": max(row["mean_abs_alpha_diff"] for row in rows),
        "min_iou": min(row["iou"] for row in rows),
        "max_pixels_differing": max(row["pixels_differing"] for row in rows),
        "max_abs_logit_diff": max(row["max_abs_logit_diff"] for row in rows),
        "max_abs_logit_diff_uncertain": max(row["max_abs_logit_diff_uncertain"] for row in rows),
        "max_logit_diff_of_bound": max(row["max_logit_diff_of_bound"] for row in rows),
        # what the reference masks were like: a bound met on masks with no structure proves little
        "reference_foreground_range": [min(row["reference_foreground"] for row in rows),
                                       max(row["reference_foreground"] for row in rows)],
        "reference_confident_share_min": min(row["reference_confident_share"] for row in rows),
        # photos where the reference marks no subject at all: no edges there for the candidate to keep
        "reference_masks_without_subject": sum(row["reference_foreground_pixels"] == 0 for row in rows),
    }
    worst["within_bounds"] = (worst["max_mean_abs_alpha_diff"] <= MAX_MEAN_ALPHA_DIFF
                              and worst["min_iou"] >= MIN_IOU and worst["max_logit_diff_of_bound"] <= 1)
    return worst

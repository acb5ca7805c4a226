"""The benchmark inputs (real photos at mixed sizes) and the accuracy verdict of fast executions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from harness.accuracy import MAX_MEAN_ALPHA_DIFF, logit_agreement, mask_agreement, verdict
from harness.photos import SAMPLE_PHOTOS, SIZE_RANGE, sample_photo_dir, sample_photo_jpegs
from harness.shapes import shape_photos


def test_sample_photos_are_jpegs_of_mixed_sizes_within_the_range_and_repeatable() -> None:
    assert all((sample_photo_dir() / name).exists() for name in SAMPLE_PHOTOS)
    photos = sample_photo_jpegs(4, seed=3)
    (min_w, min_h), (max_w, max_h) = SIZE_RANGE
    sizes = []
    for jpeg in photos:
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert min_w <= image.width <= max_w and min_h <= image.height <= max_h
        sizes.append(image.size)
    assert len(set(sizes)) == 4
    assert sample_photo_jpegs(4, seed=3) == photos


def test_identical_masks_agree_and_inverted_ones_do_not() -> None:
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[10:30, 20:50] = 255
    same = mask_agreement(mask, mask)
    assert same["mean_abs_alpha_diff"] == 0 and same["iou"] == 1.0
    inverted = mask_agreement(255 - mask, mask)
    assert inverted["iou"] == 0.0 and inverted["mean_abs_alpha_diff"] == 1.0
    assert mask_agreement(np.zeros_like(mask), np.zeros_like(mask))["iou"] == 1.0  # both empty
    # A foreground of a few dozen pixels: one pixel more is IoU 0.976, and the counts say so.
    speck = np.zeros((40, 60), dtype=np.uint8)
    speck[0, :41] = 255
    grown = speck.copy()
    grown[0, 41] = 255
    one_more = mask_agreement(grown, speck)
    assert one_more["iou"] == 41 / 42
    assert one_more["reference_foreground_pixels"] == 41 and one_more["pixels_differing"] == 1


def test_verdict_holds_only_within_every_bound() -> None:
    mask = np.full((10, 10), 200, dtype=np.uint8)
    logits = np.zeros((1, 8, 8), dtype=np.float32)
    close = mask_agreement(mask, mask - 1) | logit_agreement(logits + 0.01, logits)
    assert close["mean_abs_alpha_diff"] <= MAX_MEAN_ALPHA_DIFF
    assert verdict([close])["within_bounds"]
    far_logits = mask_agreement(mask, mask) | logit_agreement(logits + 0.5, logits)
    assert not verdict([close, far_logits])["within_bounds"]
    shifted = mask_agreement(mask, mask - 3) | logit_agreement(logits, logits)
    assert not verdict([shifted])["within_bounds"]


def test_confident_logits_may_differ_by_a_share_of_their_size_as_fp16_spaces_them() -> None:
    mask = np.full((2, 2), 255, dtype=np.uint8)
    reference = np.array([[[-16.0, -1.0], [0.2, 30.0]]], dtype=np.float32)
    # 0.12 at -16 and 0.25 at 30: more than 0.1, within 1% of those logits (fp16's spacing there is 0.0156, 0.0313)
    confident = logit_agreement(reference + np.array([[[0.12, 0.0], [0.0, 0.25]]], np.float32), reference)
    assert verdict([mask_agreement(mask, mask) | confident])["within_bounds"]
    assert confident["max_logit_diff_of_bound"] == pytest.approx(0.25 / 0.3)
    # near 0, where masks are decided, the absolute bound holds: 0.12 at 0.2 is over it
    near_zero = logit_agreement(reference + np.array([[[0.0, 0.0], [0.12, 0.0]]], np.float32), reference)
    assert not verdict([mask_agreement(mask, mask) | near_zero])["within_bounds"]
    assert near_zero["reference_logit_at_max_of_bound"] == pytest.approx(0.2)


def test_the_verdict_says_how_much_structure_the_reference_masks_had() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:5] = 255
    flat = mask_agreement(mask, mask) | logit_agreement(np.full((1, 10, 10), 0.01, np.float32),
                                                        np.full((1, 10, 10), 0.01, np.float32))
    confident_logits = np.where(mask[None] > 0, 8.0, -8.0).astype(np.float32)
    structured = mask_agreement(mask, mask) | logit_agreement(confident_logits, confident_logits)
    assert verdict([flat])["reference_confident_share_min"] == 0.0
    assert verdict([structured])["reference_confident_share_min"] == 1.0
    assert verdict([structured])["reference_foreground_range"] == [0.5, 0.5]
    nothing = np.zeros_like(mask)
    empty = mask_agreement(nothing, nothing) | logit_agreement(np.full((1, 10, 10), -8.0, np.float32),
                                                               np.full((1, 10, 10), -8.0, np.float32))
    assert verdict([structured, empty, empty])["reference_masks_without_subject"] == 2
    assert verdict([structured])["reference_masks_without_subject"] == 0


def test_the_largest_logit_difference_is_placed_among_confident_or_uncertain_pixels() -> None:
    reference = np.array([[[-11.0, -0.5], [1.5, 9.0]]], dtype=np.float32)
    candidate = reference + np.array([[[0.12, 0.03], [-0.05, 0.0]]], dtype=np.float32)
    row = logit_agreement(candidate, reference)
    assert row["reference_logit_at_max_diff"] == -11.0
    assert abs(row["max_abs_logit_diff"] - 0.12) < 1e-5
    assert abs(row["max_abs_logit_diff_uncertain"] - 0.05) < 1e-5
    assert abs(verdict([mask_agreement(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8)) | row])[
        "max_abs_logit_diff_uncertain"] - 0.05) < 1e-5


def test_shape_photos_are_repeatable_rgb_photos_of_sizes_within_the_range() -> None:
    size_range = ((64, 48), (96, 80))
    photos = shape_photos(3, size_range, seed=1)
    for photo in photos:
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        assert 48 <= photo.shape[0] <= 80 and 64 <= photo.shape[1] <= 96
        assert photo.std() > 5  # a subject on a backdrop or scene, not a flat image
    assert all(np.array_equal(a, b) for a, b in zip(photos, shape_photos(3, size_range, seed=1), strict=True))
    assert not np.array_equal(photos[0], shape_photos(1, size_range, seed=2)[0])

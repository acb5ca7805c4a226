"""Weights with structure (scripts/train_shapes.py): a few steps on generated subjects make a Hub-layout model's
masks better than its random ones, and the directory written loads through from_pretrained with those masks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from train_shapes import balanced_subject_weight, train

from harness.photos import SIZE_RANGE
from harness.shapes import shape_photos, shapes_batch


def test_generated_photos_come_with_their_subjects_masks() -> None:
    photos, masks = shapes_batch(3, (80, 60), torch.Generator().manual_seed(0), scenes=0.0)
    assert photos.shape == (3, 3, 60, 80) and masks.shape == (3, 1, 60, 80)
    assert 0 <= photos.min() and photos.max() <= 1
    shares = masks.mean(dim=(1, 2, 3))
    assert ((shares > 0) & (shares < 1)).all()  # every photo has a subject and background
    # on a studio backdrop the background is light and the subject is something else
    background = photos.permute(1, 0, 2, 3)[:, masks[:, 0] == 0]
    assert background.mean() > 0.6
    again, _ = shapes_batch(3, (80, 60), torch.Generator().manual_seed(0), scenes=0.0)
    assert torch.equal(photos, again)


def test_every_photo_at_the_benchmark_sizes_shows_a_subject_of_real_size() -> None:
    # wide, tall and square photos alike: a subject of a few pixels gives an accuracy check's IoU nothing to measure
    # and a short training a reason to call every pixel background
    _, masks = shapes_batch(200, (64, 64), torch.Generator().manual_seed(0), photo_sizes=SIZE_RANGE)
    shares = masks.mean(dim=(1, 2, 3))
    assert shares.min() > 0.01 and shares.max() < 0.8, (shares.min(), shares.max())
    assert 0.1 < shares.median() < 0.3


def test_photos_drawn_at_a_size_come_squeezed_to_the_model_input_as_the_service_squeezes_them() -> None:
    # a 3:1 photo of the accuracy check (shape_photos), resized to a square, is the training photo of that size
    wide = ((480, 160), (480, 160))
    for seed in range(3):
        photo = torch.from_numpy(shape_photos(1, wide, seed=seed, scenes=1.0)[0]).permute(2, 0, 1)[None] / 255
        squeezed = F.interpolate(photo, size=(160, 160), mode="bilinear", antialias=True, align_corners=False)
        drawn, masks = shapes_batch(1, (160, 160), torch.Generator().manual_seed(seed), scenes=1.0, photo_sizes=wide)
        square, _ = shapes_batch(1, (160, 160), torch.Generator().manual_seed(seed), scenes=1.0)
        assert (drawn - squeezed).abs().mean() < 0.01 < (square - squeezed).abs().mean()
        assert 0 < masks.mean() < 1


def test_a_few_steps_give_masks_with_structure_that_the_saved_directory_keeps(cutout_net_dir: Path,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "trained"
    # subjects on studio backdrops: what a network this small learns in seconds on two CPU cores; the first quarter
    # of the steps on smaller photos (the coarse phase)
    record = train(cutout_net_dir, out, size=(64, 48), batch=4, minutes=5, max_steps=40, lr=2e-3, scenes=0.0,
                   seed=0, device=torch.device("cpu"), warmup_steps=1, coarse_size=32, coarse_share=0.25,
                   log_every=10)
    assert (record["steps"], record["coarse_steps"]) == (40, 10)
    assert record["subject_weight"] == "balanced"  # the default
    assert record["lr_last"] < 2e-3 / 100  # the rate decays to nearly 0 by the end of the budget: weights at rest
    assert record["after"]["iou"] > max(0.5, record["before"]["iou"] + 0.3), record
    assert record["after"]["confident_share"] > record["before"]["confident_share"] + 0.2, record
    assert record["reloaded"] == record["after"]  # what was written is what was trained
    assert json.loads((out / "config.json").read_text()) == json.loads((cutout_net_dir / "config.json").read_text())


def test_balanced_weights_give_the_subject_as_much_pull_as_the_background_and_a_fixed_weight_trains_too(
        cutout_net_dir: Path, tmp_path: Path) -> None:
    masks = torch.zeros(2, 1, 10, 10)
    masks[0, 0, :2] = 1  # 20 of 200 pixels: background 9 times the subject
    assert balanced_subject_weight(masks).item() == 9.0
    assert balanced_subject_weight(torch.zeros(1, 1, 10, 10)).item() == 20.0  # no subject: the most
    assert balanced_subject_weight(torch.ones(1, 1, 10, 10)).item() == 1.0  # all subject: never under 1
    record = train(cutout_net_dir, tmp_path / "trained", size=(64, 48), batch=4, minutes=5, max_steps=30, lr=2e-3,
                   scenes=0.0, seed=0, device=torch.device("cpu"), warmup_steps=1, subject_weight=1.0, log_every=10)
    assert record["subject_weight"] == 1.0  # plain cross-entropy
    assert record["after"]["iou"] > max(0.5, record["before"]["iou"] + 0.3), record

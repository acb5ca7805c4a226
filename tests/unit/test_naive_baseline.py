"""The naive baseline loop cuts out like the service does, so that comparing their speed is fair."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.naive import naive_cutout
from serve_app.model.loading import load_segmentation_module
from tests.images import SIZE, assert_mask_matches, encode, expected_alpha, red_square


def test_naive_loop_returns_an_rgba_png_with_the_object_cut_out(tiny_model_dir: Path) -> None:
    network = load_segmentation_module(str(tiny_model_dir))
    png = naive_cutout(network, encode(red_square(), "PNG"), (256, 256), torch.device("cpu"))
    result = Image.open(io.BytesIO(png))
    assert result.format == "PNG" and result.mode == "RGBA" and result.size == SIZE
    # resizing 320x200 to 256x256 and back blurs edges by a few pixels, as in the service
    assert_mask_matches(np.asarray(result)[..., 3], expected_alpha(), 5)

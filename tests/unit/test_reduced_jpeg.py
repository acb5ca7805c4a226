"""The model's reduced copy of a large JPEG: its size, its orientation, and when there is none."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serve_app.imaging import decode_image, reduced_jpeg
from serve_app.protocol import ReducedImage
from tests.images import encode, red_square

MODEL_INPUT = (256, 256)
LIMIT = 10**8


def jpeg(size: tuple[int, int], box: tuple[int, int, int, int], orientation: int = 1) -> bytes:
    image = red_square(size, box)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def red_fraction_by_quadrant(pixels: np.ndarray) -> list[float]:
    """Share of reddish pixels in the top-left, top-right, bottom-left, bottom-right quarters."""
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 100)
    height, width = red.shape
    halves = (slice(0, height // 2), slice(height // 2, height)), (slice(0, width // 2), slice(width // 2, width))
    return [float(red[rows, columns].mean()) for rows in halves[0] for columns in halves[1]]


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_not_below_the_model_input() -> None:
    data = jpeg((1200, 800), (100, 100, 500, 400))
    copy = reduced_jpeg(data, min_size=MODEL_INPUT, max_pixels=LIMIT)
    assert isinstance(copy, ReducedImage)
    assert copy.size == (800, 1200)  # the mask's size: the whole photo's
    height, width = copy.pixels.shape[:2]
    # libjpeg scales by n/8: the smallest such scale keeping both sides at 256 or more (3/8 here: 450x300).
    assert 256 <= height <= 400 and width == pytest.approx(height * 1.5, abs=1)
    full = Image.fromarray(decode_image(data, max_pixels=LIMIT).rgb).resize((width, height), Image.BOX)
    assert np.abs(copy.pixels.astype(int) - np.asarray(full).astype(int)).mean() < 6  # the same picture


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_is_applied_as_in_the_full_decode(orientation: int) -> None:
    data = jpeg((1600, 1200), (0, 0, 600, 500), orientation)
    copy = reduced_jpeg(data, min_size=MODEL_INPUT, max_pixels=LIMIT)
    full = decode_image(data, max_pixels=LIMIT).rgb
    assert copy is not None and copy.size == full.shape[:2]
    assert copy.pixels.shape[0] / copy.pixels.shape[1] == pytest.approx(full.shape[0] / full.shape[1], rel=0.01)
    np.testing.assert_allclose(red_fraction_by_quadrant(copy.pixels), red_fraction_by_quadrant(full), atol=0.02)


def test_no_copy_for_small_jpegs_other_formats_or_too_many_pixels() -> None:
    assert reduced_jpeg(jpeg((500, 400), (10, 10, 100, 100)), min_size=MODEL_INPUT, max_pixels=LIMIT) is None
    assert reduced_jpeg(encode(red_square((1200, 800), (100, 100, 500, 400))), min_size=MODEL_INPUT,
                        max_pixels=LIMIT) is None  # PNG
    assert reduced_jpeg(jpeg((1200, 800), (100, 100, 500, 400)), min_size=MODEL_INPUT, max_pixels=10**5) is None
    assert reduced_jpeg(b"\xff\xd8\xff not really", min_size=MODEL_INPUT, max_pixels=LIMIT) is None

"""Test pictures with known geometry: coloured rectangles on white, in any mode or container."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# (left, top, right, bottom) of the object in a 320x200 picture: wider than tall, off-centre, so that a
# swapped width/height or a mirrored mask shows.
SIZE = (320, 200)
BOX = (40, 30, 140, 110)


def red_square(size: tuple[int, int] = SIZE, box: tuple[int, int, int, int] = BOX,
               color: tuple[int, int, int] = (220, 20, 20)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(color, box)
    return image


def distinct_pictures(count: int) -> list[np.ndarray]:
    """`count` red squares of different sizes and positions, so that a mask given to the wrong image shows."""
    return [np.asarray(red_square((80 + 9 * i, 60 + 5 * i), (4 + i, 5, 40 + 3 * i, 50))) for i in range(count)]


def distinct_pngs(count: int, base: tuple[int, int] = (320, 200)) -> list[bytes]:
    """`count` PNG red squares of growing sizes, so that an answer meant for another request shows as a wrong size."""
    return [encode(red_square((base[0] + 8 * i, base[1] + 4 * i))) for i in range(count)]


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_scan_cut_short_with_an_end_marker() -> bytes:
    """The red square as a JPEG whose scan stops halfway and then ends properly: libjpeg warns and fills the rows
    it did not reach; nvJPEG reports nothing and leaves those rows as its output memory held them."""
    whole = encode(red_square(), "JPEG", quality=90)
    return whole[:(whole.index(b"\xff\xda") + len(whole)) // 2] + b"\xff\xd9"


def expected_alpha(size: tuple[int, int] = SIZE, box: tuple[int, int, int, int] = BOX) -> np.ndarray:
    """A (H, W) boolean array: True inside the object."""
    inside = np.zeros((size[1], size[0]), dtype=bool)
    left, top, right, bottom = box
    inside[top:bottom, left:right] = True
    return inside


def assert_mask_matches(alpha: np.ndarray, inside: np.ndarray, margin: int = 4) -> None:
    """Alpha near 255 inside the object and near 0 outside, ignoring a thin band at its edges."""
    assert alpha.shape == inside.shape, f"mask {alpha.shape} vs image {inside.shape}"
    core, outside = _erode(inside, margin), _erode(~inside, margin)
    assert alpha[core].min() >= 240, f"object pixels reach down to alpha {alpha[core].min()}"
    assert alpha[outside].max() <= 15, f"background pixels reach up to alpha {alpha[outside].max()}"


def _erode(mask: np.ndarray, margin: int) -> np.ndarray:
    """Binary erosion by a (2*margin+1)^2 square, one axis after the other."""
    out = mask
    for axis in (0, 1):
        eroded = out.copy()
        for shift in range(1, margin + 1):
            eroded &= np.roll(out, shift, axis=axis) & np.roll(out, -shift, axis=axis)
        out = eroded
    return out

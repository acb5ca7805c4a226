"""HEIC/HEIF and AVIF uploads: decoded upright, and checked like every other format."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serve_app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from serve_app.imaging import decode_image, sniff_format
from tests.images import encode

MAX_PIXELS = 10_000_000
WIDTH, HEIGHT = 64, 48
FORMATS = ["HEIF", "AVIF"]


def decode(data: bytes, max_pixels: int = MAX_PIXELS):
    return decode_image(data, max_pixels=max_pixels)


def red_top_left_photo() -> Image.Image:
    """Blue with a red top-left quadrant: every turn and flip moves the red to another place."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    pixels[..., 2] = 255
    pixels[: HEIGHT // 2, : WIDTH // 2] = (255, 0, 0)
    return Image.fromarray(pixels)


def photo_file(fmt: str, orientation: int = 1) -> bytes:
    """The photo encoded as `fmt` with an EXIF orientation; both encoders also store it as irot/imir."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(red_top_left_photo(), fmt, exif=exif.tobytes(), quality=90)


def red_quadrants(rgb: np.ndarray) -> list[str]:
    half_height, half_width = rgb.shape[0] // 2, rgb.shape[1] // 2
    quadrants = {
        "top-left": rgb[:half_height, :half_width],
        "top-right": rgb[:half_height, half_width:],
        "bottom-left": rgb[half_height:, :half_width],
        "bottom-right": rgb[half_height:, half_width:],
    }
    return [name for name, pixels in quadrants.items() if pixels[..., 0].mean() > 200 > pixels[..., 2].mean()]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("orientation", "shape", "red"),
    [
        (1, (HEIGHT, WIDTH, 3), "top-left"),
        (2, (HEIGHT, WIDTH, 3), "top-right"),  # mirrored
        (3, (HEIGHT, WIDTH, 3), "bottom-right"),  # turned 180 degrees
        (4, (HEIGHT, WIDTH, 3), "bottom-left"),  # flipped
        (5, (WIDTH, HEIGHT, 3), "top-left"),  # transposed
        (6, (WIDTH, HEIGHT, 3), "top-right"),  # turned 90 degrees clockwise
        (7, (WIDTH, HEIGHT, 3), "bottom-right"),  # transversed
        (8, (WIDTH, HEIGHT, 3), "bottom-left"),  # turned 90 degrees anticlockwise
    ],
)
def test_orientation_is_applied_exactly_once(fmt: str, orientation: int, shape: tuple[int, int, int],
                                             red: str) -> None:
    decoded = decode(photo_file(fmt, orientation))
    assert decoded.rgb.shape == shape and decoded.rgb.dtype == np.uint8
    assert red_quadrants(decoded.rgb) == [red]
    assert decoded.alpha is None


def test_heic_with_both_irot_and_exif_orientation_turns_once() -> None:
    """As phones write them: the turn stored as a transform libheif applies, and again in EXIF."""
    data = photo_file("HEIF", 6)
    assert b"irot" in data
    assert Image.open(io.BytesIO(data)).info["original_orientation"] == 6
    assert red_quadrants(decode(data).rgb) == ["top-right"], "a second turn would put it bottom-right"


@pytest.mark.parametrize("fmt", FORMATS)
def test_transparency_is_kept(fmt: str) -> None:
    photo = red_top_left_photo().convert("RGBA")
    photo.putalpha(Image.linear_gradient("L").resize(photo.size))
    decoded = decode(encode(photo, fmt, quality=90))
    assert decoded.alpha is not None and decoded.alpha.shape == (HEIGHT, WIDTH)
    assert decoded.alpha[0].max() < 40 and decoded.alpha[-1].min() > 215


def test_avif_with_the_generic_mif1_brand_decodes_as_avif() -> None:
    data = bytearray(photo_file("AVIF"))
    data[8:12] = b"mif1"  # a brand HEIF files use too
    assert red_quadrants(decode(bytes(data)).rgb) == ["top-left"]


def test_av1_pixels_in_a_file_branded_heic_are_unsupported_not_a_server_error() -> None:
    data = bytearray(photo_file("AVIF"))
    data[8:12] = b"heic"
    with pytest.raises(UnsupportedMediaType, match="AV1"):
        decode(bytes(data))


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_header_is_invalid_and_named(fmt: str) -> None:
    with pytest.raises(InvalidImage, match=f"starts like a {fmt} file but is not a valid one") as raised:
        decode(photo_file(fmt)[:40])
    assert raised.value.status == 422


def heic_without_its_pixels() -> bytes:
    """A HEIC cut off after its header. Without EXIF: that sits beside the pixels and is read with the header."""
    data = encode(red_top_left_photo(), "HEIF")
    return data[: data.index(b"mdat") + 8]


def test_heic_with_truncated_pixels_is_invalid_image() -> None:
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode(heic_without_its_pixels())


def test_pixel_limit_is_checked_from_the_heic_header_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match=f"{WIDTH}x{HEIGHT}") as raised:
        decode(heic_without_its_pixels(), max_pixels=WIDTH * HEIGHT - 1)  # decoding would fail: not attempted
    assert raised.value.status == 413


def test_pixel_limit_applies_to_avif() -> None:
    with pytest.raises(PayloadTooLarge, match=f"{WIDTH}x{HEIGHT}"):
        decode(photo_file("AVIF"), max_pixels=WIDTH * HEIGHT - 1)


@pytest.mark.parametrize(
    ("brand", "fmt"),
    [(b"heic", "HEIF"), (b"heix", "HEIF"), (b"mif1", "HEIF"), (b"msf1", "HEIF"), (b"avif", "AVIF"),
     (b"avis", "AVIF"), (b"isom", None)],
)
def test_sniff_format_reads_the_ftyp_brand(brand: bytes, fmt: str | None) -> None:
    assert sniff_format(b"\x00\x00\x00\x1cftyp" + brand + b"\x00" * 16) == fmt

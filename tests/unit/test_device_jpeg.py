"""JPEG uploads decoded by the model replica itself: which uploads qualify, and that its decode (torchvision's,
nvJPEG on a GPU) gives the model the pixels, orientation and size that the ingress's own decode gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app import imaging
from serve_app.errors import InvalidImage, PayloadTooLarge
from serve_app.imaging import device_decodable_jpeg
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.jpeg import decode_on_device, upright
from serve_app.protocol import DeviceDecodeFailed, EncodedJpeg
from serve_app.settings import ModelSettings
from tests.images import SIZE, encode, red_square

LIMIT = 50_000_000
CPU = torch.device("cpu")


def jpeg_with_orientation(orientation: int, image: Image.Image | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image or red_square(), "JPEG", quality=95, exif=exif.tobytes())


def test_colour_and_grey_jpegs_qualify_with_their_upright_size() -> None:
    width, height = SIZE
    assert device_decodable_jpeg(encode(red_square(), "JPEG"), max_pixels=LIMIT).size == (width, height)
    grey = device_decodable_jpeg(encode(red_square().convert("L"), "JPEG"), max_pixels=LIMIT)
    assert grey is not None and grey.orientation == 1
    turned = device_decodable_jpeg(jpeg_with_orientation(6), max_pixels=LIMIT)
    assert (turned.orientation, turned.size) == (6, (height, width))


@pytest.mark.parametrize("body", [
    encode(red_square(), "PNG"),
    encode(red_square().convert("CMYK"), "JPEG"),
    b"\xff\xd8\xff\xe0 not really a jpeg",
    b"",
], ids=["png", "cmyk-jpeg", "broken-header", "empty"])
def test_other_uploads_take_the_pixel_path(body: bytes) -> None:
    assert device_decodable_jpeg(body, max_pixels=LIMIT) is None


def test_a_jpeg_over_the_pixel_limit_is_left_to_decode_image_to_refuse() -> None:
    body = encode(red_square(), "JPEG")
    assert device_decodable_jpeg(body, max_pixels=SIZE[0] * SIZE[1] - 1) is None
    with pytest.raises(PayloadTooLarge):
        imaging.decode_image(body, max_pixels=SIZE[0] * SIZE[1] - 1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoded_on_the_device_as_the_ingress_decodes_it(orientation: int) -> None:
    rng = np.random.default_rng(orientation)
    picture = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))  # asymmetric: turns show
    body = jpeg_with_orientation(orientation, picture)
    encoded = device_decodable_jpeg(body, max_pixels=LIMIT)
    on_device = decode_on_device(encoded, CPU)
    expected = imaging.decode_image(body, max_pixels=LIMIT).rgb
    assert on_device.dtype == torch.uint8 and tuple(on_device.shape) == expected.shape
    np.testing.assert_array_equal(on_device.numpy(), expected)  # the same libjpeg-turbo settings on the CPU


@pytest.mark.parametrize("orientation", range(1, 9))
def test_torch_turns_match_the_numpy_ones(orientation: int) -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(upright(torch.from_numpy(pixels), orientation).numpy(),
                                  imaging._upright(pixels, orientation))


def test_an_undecodable_file_or_a_wrong_size_raises_device_decode_failed() -> None:
    body = encode(red_square(), "JPEG")
    with pytest.raises(DeviceDecodeFailed):
        decode_on_device(EncodedJpeg(body[:2] + b"\x00" * 64, 1, SIZE), CPU)
    with pytest.raises(DeviceDecodeFailed, match="header said"):
        decode_on_device(EncodedJpeg(body, 1, (SIZE[0] + 1, SIZE[1])), CPU)


def test_the_model_gives_a_device_decoded_jpeg_the_mask_of_its_pixels(tiny_model_dir: Path) -> None:
    model = BackgroundRemovalModel.from_settings(ModelSettings(model_id=str(tiny_model_dir), input_size=(160, 96)))
    body = encode(red_square(), "JPEG", quality=90)
    pixels = imaging.decode_image(body, max_pixels=LIMIT).model_input
    from_file, from_pixels = model.predict([model.decode_jpeg(device_decodable_jpeg(body, max_pixels=LIMIT)),
                                            pixels])
    np.testing.assert_array_equal(from_file, from_pixels)
    with pytest.raises(ValueError, match="uint8 tensor"):
        model.predict([torch.zeros(4, 4, 3)])


def test_a_truncated_scan_fails_on_both_decoders() -> None:
    body = bytearray(encode(red_square(), "JPEG"))
    start = body.index(b"\xff\xda") + 20
    body[start:] = b"\xff\x00" * ((len(body) - start) // 2)  # scan data of escaped 0xff bytes, then no EOI
    encoded = device_decodable_jpeg(bytes(body), max_pixels=LIMIT)
    assert encoded is not None  # the header is fine
    with pytest.raises(DeviceDecodeFailed, match="truncated"):
        decode_on_device(encoded, CPU)
    with pytest.raises(InvalidImage):  # what the client hears, from the ingress's own decode (422)
        imaging.decode_image(bytes(body), max_pixels=LIMIT)


def test_a_jpeg_without_its_last_byte_is_refused_by_torchvision_only() -> None:
    """The premise of the e2e test of the ingress's fallback to pixels (test_http_routes.py)."""
    body = encode(red_square(), "JPEG", quality=75)[:-1]
    with pytest.raises(DeviceDecodeFailed):
        decode_on_device(device_decodable_jpeg(body, max_pixels=LIMIT), CPU)
    assert imaging.decode_image(body, max_pixels=LIMIT).size == SIZE

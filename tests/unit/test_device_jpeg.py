"""JPEG uploads decoded by the model replica itself: which uploads qualify, and that its decode (torchvision's on
the CPU; nvJPEG on a GPU, tests/gpu) gives the model the pixels, orientation and size the ingress's decode gives."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app import imaging
from serve_app.errors import InvalidImage, PayloadTooLarge
from serve_app.imaging import device_decodable_jpeg
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.jpeg_on_device import decode_on_device, upright
from serve_app.protocol import DeviceDecodeFailed, EncodedJpeg
from serve_app.settings import ModelSettings
from tests.images import SIZE, encode, jpeg_scan_cut_short_with_an_end_marker, red_square

LIMIT = 50_000_000
CPU = torch.device("cpu")
WIDTH, HEIGHT = SIZE


def jpeg_with_orientation(orientation: int, image: Image.Image | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image or red_square(), "JPEG", quality=95, exif=exif.tobytes())


def qualifying(body: bytes) -> EncodedJpeg:
    encoded = device_decodable_jpeg(body, max_pixels=LIMIT)
    assert encoded is not None
    return encoded


def test_colour_grey_and_progressive_jpegs_qualify_with_their_upright_height_and_width() -> None:
    assert qualifying(encode(red_square(), "JPEG")).size == (HEIGHT, WIDTH)
    grey = qualifying(encode(red_square().convert("L"), "JPEG"))
    assert grey.orientation == 1 and grey.size == (HEIGHT, WIDTH)
    assert qualifying(encode(red_square(), "JPEG", progressive=True)).size == (HEIGHT, WIDTH)
    turned = qualifying(jpeg_with_orientation(6))
    assert (turned.orientation, turned.size) == (6, (WIDTH, HEIGHT))  # a quarter turn: the width is the height


def test_four_four_four_and_four_two_two_jpegs_qualify_too() -> None:
    assert qualifying(encode(red_square(), "JPEG", subsampling=0)).size == (HEIGHT, WIDTH)
    assert qualifying(encode(red_square(), "JPEG", subsampling=1)).size == (HEIGHT, WIDTH)


def with_luma_sampling(body: bytes, factors: int) -> bytes:
    """`body` (a baseline JPEG) with its luma's sampling factors in the frame header set to `factors` (0x12: 4:4:0,
    0x41: 4:1:1 beside chroma at 0x11): the header a layout the device tests do not cover declares."""
    data = bytearray(body)
    frame = data.index(b"\xff\xc0")
    data[frame + 11] = factors  # marker, length, precision, height, width, component count, first id: its factors
    return bytes(data)


@pytest.mark.parametrize("factors", [0x12, 0x41], ids=["4:4:0", "4:1:1"])
def test_rarer_chroma_layouts_take_the_pixel_path(factors: int) -> None:
    body = with_luma_sampling(encode(red_square(), "JPEG", subsampling=1), factors)
    assert imaging.header_size(body) == (WIDTH, HEIGHT)  # a header Pillow reads, as a good photo's
    assert device_decodable_jpeg(body, max_pixels=LIMIT) is None


@pytest.mark.parametrize("body", [
    encode(red_square(), "PNG"),
    encode(red_square().convert("CMYK"), "JPEG"),
    encode(red_square(), "JPEG", keep_rgb=True),
    encode(red_square(), "JPEG")[:30],
    b"\xff\xd8\xff\xe0 not really a jpeg",
    b"",
], ids=["png", "cmyk-jpeg", "rgb-stored-jpeg", "header-cut-short", "broken-header", "empty"])
def test_other_uploads_take_the_pixel_path(body: bytes) -> None:
    assert device_decodable_jpeg(body, max_pixels=LIMIT) is None


def test_a_jpeg_over_the_pixel_limit_is_left_to_decode_image_to_refuse() -> None:
    body = encode(red_square(), "JPEG")
    assert device_decodable_jpeg(body, max_pixels=WIDTH * HEIGHT - 1) is None
    with pytest.raises(PayloadTooLarge):
        imaging.decode_image(body, max_pixels=WIDTH * HEIGHT - 1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoded_on_the_device_as_the_ingress_decodes_it(orientation: int) -> None:
    rng = np.random.default_rng(orientation)
    picture = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))  # asymmetric: turns show
    body = jpeg_with_orientation(orientation, picture)
    on_device = decode_on_device(qualifying(body), CPU)
    expected = imaging.decode_image(body, max_pixels=LIMIT).rgb
    assert on_device.dtype == torch.uint8 and tuple(on_device.shape) == expected.shape
    # A wrong turn of random pixels differs by ~85 levels on average.
    assert np.abs(on_device.numpy().astype(int) - expected).mean() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_torch_turns_match_the_numpy_ones(orientation: int) -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(upright(torch.from_numpy(pixels), orientation).numpy(),
                                  imaging._upright(pixels, orientation))


@pytest.mark.parametrize("data", [b"", b"\xff\xd8" + b"\x00" * 64, b"GIF89a not a jpeg"],
                         ids=["empty", "zeros-after-the-marker", "another-format"])
def test_a_file_torchvision_cannot_read_raises_device_decode_failed(data: bytes) -> None:
    with pytest.raises(DeviceDecodeFailed, match="cannot decode"):
        decode_on_device(EncodedJpeg(data, 1, (HEIGHT, WIDTH)), CPU)


def test_a_size_other_than_the_headers_raises_device_decode_failed() -> None:
    body = encode(red_square(), "JPEG")
    with pytest.raises(DeviceDecodeFailed, match="header said"):
        decode_on_device(EncodedJpeg(body, 1, (HEIGHT + 1, WIDTH)), CPU)
    with pytest.raises(DeviceDecodeFailed, match="header said"):
        decode_on_device(EncodedJpeg(body, 1, (WIDTH, HEIGHT)), CPU)  # (width, height): the wrong convention


def test_a_truncated_scan_fails_on_both_decoders() -> None:
    body = bytearray(encode(red_square(), "JPEG"))
    start = body.index(b"\xff\xda") + 20
    body[start:] = b"\xff\x00" * ((len(body) - start) // 2)  # scan data of escaped 0xff bytes, then no EOI
    encoded = qualifying(bytes(body))  # the header is fine
    with pytest.raises(DeviceDecodeFailed, match="truncated"):
        decode_on_device(encoded, CPU)
    with pytest.raises(InvalidImage):  # what the client hears, from the ingress's own decode (422)
        imaging.decode_image(bytes(body), max_pixels=LIMIT)


def test_a_jpeg_without_its_last_byte_is_refused_by_torchvision_only() -> None:
    """The premise of the integration test of the ingress's fallback to pixels (test_device_jpeg_decode.py)."""
    body = encode(red_square(), "JPEG", quality=75)[:-1]
    with pytest.raises(DeviceDecodeFailed):
        decode_on_device(qualifying(body), CPU)
    assert imaging.decode_image(body, max_pixels=LIMIT).size == SIZE


def test_device_decode_failed_keeps_its_type_and_message_through_pickling() -> None:
    """Ray pickles the replica's exception to the ingress, which tells it from other failures by its type."""
    copy = pickle.loads(pickle.dumps(DeviceDecodeFailed("torchvision cannot decode this JPEG: truncated")))
    assert isinstance(copy, DeviceDecodeFailed) and isinstance(copy, ValueError)
    assert str(copy) == "torchvision cannot decode this JPEG: truncated"


def test_the_model_gives_a_device_decoded_jpeg_the_mask_of_its_pixels(tiny_model_dir: Path) -> None:
    model = BackgroundRemovalModel.from_settings(ModelSettings(model_id=str(tiny_model_dir), input_size=(160, 96)))
    body = jpeg_with_orientation(6, red_square(color=(60, 20, 20)))
    pixels = imaging.decode_image(body, max_pixels=LIMIT).model_input
    from_file, from_pixels = model.predict([model.decode_jpeg(qualifying(body)), pixels])
    assert from_file.shape == from_pixels.shape == (WIDTH, HEIGHT)  # upright: turned a quarter
    assert from_pixels.max() - from_pixels.min() > 200  # a mask with an object in it, not a flat one
    assert np.abs(from_file.astype(int) - from_pixels).max() <= 2
    with pytest.raises(ValueError, match="uint8 tensor"):
        model.predict([torch.zeros(4, 4, 3)])
    with pytest.raises(ValueError, match="uint8 tensor"):
        model.predict([torch.zeros(4, 4, 4, dtype=torch.uint8)])


def damaged_copies(data: bytes, count: int, seed: int) -> list[bytes]:
    """`count` copies of a JPEG, each cut short, with bytes flipped or with bytes inserted somewhere past its
    first quarter (the scan, mostly)."""
    rng = np.random.default_rng(seed)
    copies = []
    for index in range(count):
        copy = bytearray(data)
        at = int(rng.integers(len(data) // 4, len(data) - 2))
        if index % 3 == 0:
            del copy[at:]
        elif index % 3 == 1:
            for place in rng.integers(len(data) // 4, len(data) - 2, size=int(rng.integers(1, 6))):
                copy[place] ^= int(rng.integers(1, 256))
        else:
            copy[at:at] = rng.integers(0, 256, size=int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
        copies.append(bytes(copy))
    return copies


@pytest.mark.parametrize("layout", [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2},
                                    {"progressive": True}, {"restart_marker_blocks": 4}, {"grey": True}])
def test_the_scan_check_finds_a_clean_scan_exactly_where_the_full_decode_does(layout: dict) -> None:
    """The ingress only checks the scan (at 1/8 scale, to grey) of a JPEG whose PNG the replica writes; it must
    refuse the replica's decode wherever the full decode would have warned, and accept it wherever not."""
    rng = np.random.default_rng(7)
    picture = Image.fromarray(rng.integers(0, 256, (120, 168, 3), dtype=np.uint8)).resize((336, 240))
    params = {key: value for key, value in layout.items() if key != "grey"}
    whole = encode(picture.convert("L") if layout.get("grey") else picture, "JPEG", quality=85, **params)
    clean_seen = damaged_seen = 0
    for data in [whole, *damaged_copies(whole, 60, seed=len(whole))]:
        try:
            clean = imaging.decode_image(data, max_pixels=LIMIT).clean_jpeg_scan
        except InvalidImage:
            clean = False
        assert imaging.scan_jpeg(data).clean == clean
        clean_seen += clean
        damaged_seen += not clean
    assert clean_seen and damaged_seen  # both outcomes were met
    assert imaging.scan_jpeg(jpeg_scan_cut_short_with_an_end_marker()) == imaging.JpegScan(False, None)


def test_only_a_jpeg_read_to_the_end_without_a_warning_has_a_clean_scan() -> None:
    assert imaging.decode_image(encode(red_square(), "JPEG"), max_pixels=LIMIT).clean_jpeg_scan
    assert imaging.decode_image(encode(red_square().convert("L"), "JPEG"), max_pixels=LIMIT).clean_jpeg_scan
    cut_short = imaging.decode_image(jpeg_scan_cut_short_with_an_end_marker(), max_pixels=LIMIT)
    assert cut_short.size == SIZE and not cut_short.clean_jpeg_scan  # Pillow still decodes it: a 200, not a 422
    assert not imaging.decode_image(encode(red_square(), "PNG"), max_pixels=LIMIT).clean_jpeg_scan

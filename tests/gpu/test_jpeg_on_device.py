"""A JPEG decoded on the GPU (nvJPEG through torchvision) for the model: the upright pixels the ingress decodes, within
nvJPEG's chroma differences, every row of them for the encodings cameras write, and the masks of those pixels, also
with a pass already running on the device; no decode while another model sets up on the device. Skipped without
CUDA; `SERVE_APP_GPU_TIER_ON_CPU=1` runs the same steps on the CPU, to check the test itself.

    .venv/bin/python -m pytest -n 0 -m gpu tests/gpu/test_jpeg_on_device.py
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app import imaging
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.cuda_graphs import DEVICE_SETUP_LOCK
from serve_app.model.jpeg_on_device import decode_on_device
from serve_app.protocol import DeviceDecodeFailed
from serve_app.settings import ModelSettings
from tests.images import encode, red_square

ON_CPU = os.environ.get("SERVE_APP_GPU_TIER_ON_CPU") == "1"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
LIMIT = 10**8

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() or ON_CPU), reason="needs a CUDA device")]


def photo_like(orientation: int, size: tuple[int, int] = (640, 400)) -> bytes:
    """A smooth picture with an object (chroma upsampling shows at colour edges, as in photos), EXIF-turned."""
    width, height = size
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.stack([columns * 255 // width, rows * 255 // height, np.full_like(rows, 128)], axis=-1)
    pixels[height // 4 : height // 2, width // 8 : width // 3] = (200, 30, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(pixels.astype(np.uint8)), "JPEG", quality=90, exif=exif.tobytes())


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> BackgroundRemovalModel:
    return BackgroundRemovalModel.from_settings(ModelSettings(model_id=str(tiny_model_dir), input_size=(256, 256),
                                                              device=DEVICE.type))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_device_decode_is_the_ingress_decode_within_chroma_upsampling(orientation: int) -> None:
    body = photo_like(orientation)
    expected = imaging.decode_image(body, max_pixels=LIMIT).rgb
    encoded = imaging.device_decodable_jpeg(body, max_pixels=LIMIT)
    assert encoded is not None
    pixels = decode_on_device(encoded, DEVICE)
    assert pixels.device.type == DEVICE.type and tuple(pixels.shape) == expected.shape
    difference = np.abs(pixels.cpu().numpy().astype(int) - expected)
    # nvJPEG upsamples chroma its own way (mean 0.6 levels on photos); a wrong turn is tens of levels off.
    assert difference.mean() < 2, difference.mean()


CAMERA_ENCODINGS = {  # what cameras, phones and editors write, as Pillow's encoder parameters
    "4:2:0": {}, "4:2:2": {"subsampling": 1}, "4:4:4": {"subsampling": 0}, "progressive": {"progressive": True},
    "progressive 4:4:4": {"progressive": True, "subsampling": 0}, "optimised tables": {"optimize": True},
    "restart markers": {"restart_marker_blocks": 4},
}


@pytest.mark.parametrize("size", [(640, 400), (1001, 667)], ids=["even", "odd"])
@pytest.mark.parametrize("params", CAMERA_ENCODINGS.values(), ids=CAMERA_ENCODINGS.keys())
def test_every_row_of_a_camera_encoding_is_decoded_whatever_the_memory_held(params: dict,
                                                                             size: tuple[int, int]) -> None:
    """nvJPEG leaves rows it does not reach as its output memory held them, without an error: decoded right after
    another photo of the same size (the memory it is likely to get), no row may come out as that photo's."""
    picture = Image.open(io.BytesIO(photo_like(1, size)))
    body = encode(picture, "JPEG", quality=90, **params)
    inverted = encode(Image.fromarray(255 - np.asarray(picture)), "JPEG", quality=90, **params)
    expected = imaging.decode_image(body, max_pixels=LIMIT).rgb
    decode_on_device(imaging.device_decodable_jpeg(inverted, max_pixels=LIMIT), DEVICE)  # freed at once, for the next
    pixels = decode_on_device(imaging.device_decodable_jpeg(body, max_pixels=LIMIT), DEVICE).cpu().numpy()
    difference = np.abs(pixels.astype(int) - expected)
    assert difference.mean() < 2, difference.mean()
    # A row left from the inverted photo is ~100 levels off on average; chroma differences are ~1.
    assert difference.mean(axis=(1, 2)).max() < 10, np.flatnonzero(difference.mean(axis=(1, 2)) >= 10)[:10]


@pytest.mark.parametrize("size", [(640, 400), (1001, 667), (4000, 3000)], ids=["even", "odd", "12 MP"])
def test_a_grey_jpeg_decodes_to_the_ingress_greys(size: tuple[int, int]) -> None:
    """A grey JPEG goes to the device too (and its pixels into a device PNG): no chroma to upsample, so the levels
    differ at most by the two decoders' rounding."""
    body = encode(Image.open(io.BytesIO(photo_like(1, size))).convert("L"), "JPEG", quality=90)
    expected = imaging.decode_image(body, max_pixels=LIMIT).rgb
    pixels = decode_on_device(imaging.device_decodable_jpeg(body, max_pixels=LIMIT), DEVICE).cpu().numpy()
    assert pixels.shape == expected.shape
    difference = np.abs(pixels.astype(int) - expected)
    assert difference.mean() < 0.5 and difference.max() <= 4, (difference.mean(), difference.max())


def test_masks_of_device_decoded_files_match_their_pixels_also_behind_a_running_pass(
        model: BackgroundRemovalModel) -> None:
    bodies = [encode(red_square(color=(60, 20, 20), box=box), "JPEG", quality=90)
              for box in ((40, 30, 140, 110), (180, 60, 300, 180))]
    pixels = [imaging.decode_image(body, max_pixels=LIMIT).model_input for body in bodies]
    expected = model.predict(pixels)
    assert all(mask.max() - mask.min() > 200 for mask in expected)  # objects in them: no flat masks to compare
    # On CUDA still on the device when the next passes are queued: the decodes and uploads wait behind it.
    running = model.submit([np.full((1200, 1600, 3), 255, np.uint8)] * 4)
    files = [model.decode_jpeg(imaging.device_decodable_jpeg(body, max_pixels=LIMIT)) for body in bodies]
    mixed = model.submit([files[0], pixels[1]]).result()  # a file and pixels in one pass
    alone = model.submit([files[1]]).result()
    running.result()
    for mask, reference in zip([*mixed, *alone], [*expected, expected[1]], strict=True):
        assert mask.shape == reference.shape
        assert np.abs(mask.astype(int) - reference).mean() < 1


@contextlib.contextmanager
def another_model_setting_up() -> Iterator[None]:
    """Another model's load or capture holds the device set-up lock, on a loader thread, for the block."""
    holding, release = threading.Event(), threading.Event()

    def set_up() -> None:
        with DEVICE_SETUP_LOCK:
            holding.set()
            release.wait(30)

    loader = threading.Thread(target=set_up)
    loader.start()
    try:
        assert holding.wait(30)
        yield
    finally:
        release.set()
        loader.join()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the device set-up lock guards CUDA only")
def test_a_file_is_refused_while_another_model_sets_up_on_the_device(model: BackgroundRemovalModel) -> None:
    body = encode(red_square(), "JPEG", quality=90)
    file = imaging.device_decodable_jpeg(body, max_pixels=LIMIT)
    with another_model_setting_up(), pytest.raises(DeviceDecodeFailed, match="setting up"):
        model.decode_jpeg(file)
    assert tuple(model.decode_jpeg(file).shape) == (200, 320, 3)

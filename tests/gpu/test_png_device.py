"""A cut-out's PNG written on the GPU (serve_app/model/png_device.py) from nvJPEG's decode: Pillow reads it back to
exactly the pixels it was made of, for every EXIF turn and photo sizes; the model core writes it beside passes
queued on the device, and not while another model sets up on it. Skipped without CUDA (tests/unit runs the kernels
through Triton's interpreter).

    .venv/bin/python -m pytest -n 0 -m gpu tests/gpu/test_png_device.py
"""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app import imaging, png
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.jpeg_on_device import decode_on_device
from serve_app.model.png_device import encode_cutout_stream
from serve_app.settings import ModelSettings
from tests.gpu.test_jpeg_on_device import another_model_setting_up, photo_like

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
LIMIT = 10**8


def soft_alpha(height: int, width: int) -> np.ndarray:
    """Transparent around, opaque inside, a soft edge between: every kind of pixel a cut-out has."""
    rows, columns = np.mgrid[0:height, 0:width]
    distance = np.hypot(rows - height / 2, columns - width / 2)
    return np.clip((min(height, width) * 0.4 - distance) * 8, 0, 255).astype(np.uint8)


def decoded_png(stream: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png.wrap_zlib_stream(stream.data, width, height))))


def cutout(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    rgba = np.dstack([rgb, alpha])
    rgba[alpha == 0] = 0
    return rgba


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("size", [(640, 400), (1001, 667), (4000, 3000)], ids=["small", "odd", "12 MP"])
def test_the_png_of_nvjpegs_decode_reads_back_to_its_pixels(orientation: int, size: tuple[int, int]) -> None:
    body = photo_like(orientation, size)
    pixels = decode_on_device(imaging.device_decodable_jpeg(body, max_pixels=LIMIT), torch.device("cuda"))
    height, width = pixels.shape[:2]
    alpha = soft_alpha(height, width)
    stream = encode_cutout_stream(pixels, torch.from_numpy(alpha))
    assert np.array_equal(decoded_png(stream, width, height), cutout(pixels.cpu().numpy(), alpha))


def test_a_fully_transparent_and_a_fully_opaque_cutout_read_back() -> None:
    rgb = torch.randint(0, 256, (300, 517, 3), dtype=torch.uint8, device="cuda")
    for value in (0, 255):
        alpha = np.full((300, 517), value, np.uint8)
        stream = encode_cutout_stream(rgb, torch.from_numpy(alpha))
        assert np.array_equal(decoded_png(stream, 517, 300), cutout(rgb.cpu().numpy(), alpha))


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> BackgroundRemovalModel:
    return BackgroundRemovalModel.from_settings(ModelSettings(model_id=str(tiny_model_dir), input_size=(256, 256),
                                                              device="cuda"))


def test_the_model_writes_the_png_beside_passes_on_the_device(model: BackgroundRemovalModel) -> None:
    body = photo_like(1, (1600, 1200))
    file = model.decode_jpeg(imaging.device_decodable_jpeg(body, max_pixels=LIMIT))
    mask = model.predict([file])[0]
    running = model.submit([np.full((1200, 1600, 3), 255, np.uint8)] * 4)
    stream = model.cutout_stream(file, mask)
    running.result()
    assert stream is not None
    assert np.array_equal(decoded_png(stream, 1600, 1200), cutout(file.cpu().numpy(), mask))


def test_no_png_is_written_while_another_model_sets_up_on_the_device(model: BackgroundRemovalModel) -> None:
    file = model.decode_jpeg(imaging.device_decodable_jpeg(photo_like(1), max_pixels=LIMIT))
    mask = model.predict([file])[0]
    with another_model_setting_up():
        assert model.cutout_stream(file, mask) is None
    assert model.cutout_stream(file, mask) is not None


def test_two_png_threads_at_first_use_check_the_kernels_once_and_both_write(tiny_model_dir: Path) -> None:
    """The model replica writes PNGs on two threads; the first large photos can reach both at once, before the
    kernels were ever used: one checks them, the other waits for its verdict, and both PNGs come out right."""
    fresh = BackgroundRemovalModel.from_settings(ModelSettings(model_id=str(tiny_model_dir), input_size=(256, 256),
                                                               device="cuda"))
    checks = []
    check = fresh.warm_up_cutout_stream

    def counted() -> bool:
        checks.append(threading.get_ident())
        time.sleep(0.5)  # the other thread arrives meanwhile
        return check()

    fresh.warm_up_cutout_stream = counted  # type: ignore[method-assign]
    file = fresh.decode_jpeg(imaging.device_decodable_jpeg(photo_like(1, (1600, 1200)), max_pixels=LIMIT))
    mask = fresh.predict([file])[0]
    with ThreadPoolExecutor(2) as pool:
        streams = list(pool.map(lambda _: fresh.cutout_stream(file, mask), range(2)))
    assert len(checks) == 1
    for stream in streams:
        assert stream is not None
        assert np.array_equal(decoded_png(stream, 1600, 1200), cutout(file.cpu().numpy(), mask))
    fresh.close()

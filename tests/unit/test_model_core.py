"""The model core on the tiny model, loaded through the production path (remote code, local directory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.model import core
from serve_app.model.core import BackgroundRemovalModel, resolve_precision
from serve_app.model.loading import load_segmentation_module
from serve_app.protocol import OutOfDeviceMemory
from serve_app.settings import ModelSettings
from tests.images import SIZE, assert_mask_matches, expected_alpha, red_square

INPUT_SIZE = (160, 96)


def edge_margin(size: tuple[int, int]) -> int:
    """Resizing to the input size and back blurs edges by about 3 input pixels, scaled back to the image."""
    return int(np.ceil(3 * max(size[0] / INPUT_SIZE[0], size[1] / INPUT_SIZE[1]))) + 1


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> BackgroundRemovalModel:
    return BackgroundRemovalModel.from_settings(ModelSettings(model_id=str(tiny_model_dir), input_size=INPUT_SIZE))


def test_clean_edges_that_run_out_of_device_memory_say_so_and_give_the_memory_back(
        model: BackgroundRemovalModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 50 MP image's clean edges take about 12 GB: the step of one image alone, with no smaller batch to split into.
    released: list[torch.device] = []

    def too_large(pixels: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 11.50 GiB")

    monkeypatch.setattr(core, "refine_foreground_uint8", too_large)
    monkeypatch.setattr(core, "release_cached_memory", released.append)
    with pytest.raises(OutOfDeviceMemory, match="clean edges of a 30x20 image$"):
        model.estimate_foreground(np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30), np.uint8))
    assert released == [model.device]


def test_loads_through_auto_model_with_remote_code(tiny_model_dir: Path) -> None:
    module = load_segmentation_module(str(tiny_model_dir))
    assert type(module).__name__ == "TinySegmenter"
    assert not module.training
    # The weights came from model.safetensors, not from a random initialisation.
    assert module.score.weight.flatten()[0].item() == pytest.approx(-20 * 0.229)


def test_auto_precision_is_fp32_on_cpu(model: BackgroundRemovalModel) -> None:
    assert model.precision == "fp32" and model.device.type == "cpu"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"


def test_mask_has_the_image_size_and_marks_the_object(model: BackgroundRemovalModel) -> None:
    (mask,) = model.predict([np.asarray(red_square())])
    assert mask.dtype == np.uint8 and mask.shape == (SIZE[1], SIZE[0])
    assert_mask_matches(mask, expected_alpha(), edge_margin(SIZE))


def test_rgbx_images_give_the_masks_of_their_rgb(model: BackgroundRemovalModel) -> None:
    rgb = np.asarray(red_square())
    rgbx = np.dstack((rgb, np.random.default_rng(0).integers(0, 256, rgb.shape[:2], dtype=np.uint8)))
    masks = model.predict([rgbx, rgb])
    np.testing.assert_array_equal(masks[0], masks[1])


def test_batch_of_mixed_sizes_returns_each_mask_in_order(model: BackgroundRemovalModel) -> None:
    cases = [((320, 200), (40, 30, 140, 110)), ((97, 301), (10, 200, 60, 280)), ((640, 480), (500, 10, 630, 90))]
    images = [np.asarray(red_square(size, box)) for size, box in cases]
    masks = model.predict(images)
    assert len(masks) == len(cases)
    for mask, (size, box) in zip(masks, cases, strict=True):
        assert_mask_matches(mask, expected_alpha(size, box), edge_margin(size))


def test_white_image_gives_an_empty_mask(model: BackgroundRemovalModel) -> None:
    (mask,) = model.predict([np.full((50, 70, 3), 255, np.uint8)])
    assert mask.max() <= 5


def test_empty_batch_and_wrong_input_types(model: BackgroundRemovalModel) -> None:
    assert model.predict([]) == []
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.predict([np.zeros((10, 10), np.uint8)])


def test_import_path_models_must_be_modules() -> None:
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        load_segmentation_module("import:collections:OrderedDict")
    with pytest.raises(ValueError, match="package.module:factory"):
        load_segmentation_module("import:no_factory_given")


def test_describe_reports_what_runs(model: BackgroundRemovalModel, tiny_model_dir: Path) -> None:
    info = model.describe()
    assert info["model_id"] == str(tiny_model_dir) and info["input_size"] == [160, 96]


def test_clean_edges_take_the_background_colour_out_of_soft_pixels(model: BackgroundRemovalModel) -> None:
    """A red subject over green with a soft edge: the cut-out's colours there are mixed with green, the estimate
    takes the green out, and opaque pixels keep their colour exactly."""
    height, width = 40, 60
    alpha = np.zeros((height, width), np.float32)
    alpha[:, :20] = 1.0
    alpha[:, 20:40] = np.linspace(1.0, 0.0, 20)  # a 20-pixel soft edge
    red, green = np.array([200, 30, 30], np.float32), np.array([20, 220, 20], np.float32)
    photo = np.rint(alpha[..., None] * red + (1 - alpha[..., None]) * green).astype(np.uint8)
    mask = np.rint(alpha * 255).astype(np.uint8)
    colours = model.estimate_foreground(photo, mask)
    assert colours.shape == photo.shape and colours.dtype == np.uint8
    assert (colours[mask == 255] == photo[mask == 255]).all()
    soft = (mask > 25) & (mask < 230)
    naive_green = np.abs(photo[soft][:, 1].astype(float) - red[1]).mean()
    estimated_green = np.abs(colours[soft][:, 1].astype(float) - red[1]).mean()
    assert estimated_green < naive_green / 3, (estimated_green, naive_green)


def test_a_reduced_copy_gives_the_mask_at_the_whole_photos_size(model: BackgroundRemovalModel) -> None:
    from serve_app.imaging import decode_image, reduced_jpeg
    from serve_app.protocol import ReducedImage
    from tests.images import encode as encode_picture
    from tests.images import red_square as picture

    data = encode_picture(picture((1280, 800), (160, 120, 560, 440)), "JPEG", quality=95)
    copy = reduced_jpeg(data, min_size=INPUT_SIZE, max_pixels=10**8)
    assert isinstance(copy, ReducedImage) and copy.pixels.shape[0] < 800
    reduced_mask, full_mask = model.predict([copy, decode_image(data, max_pixels=10**8).model_input])
    assert reduced_mask.shape == full_mask.shape == (800, 1280)
    assert np.abs(reduced_mask.astype(int) - full_mask.astype(int)).mean() < 2

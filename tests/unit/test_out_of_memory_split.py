"""A batch that runs out of device memory is retried in halves: every image still gets its own mask.

The network below raises `torch.cuda.OutOfMemoryError` above a batch size, as a GPU does when a batch is too
big for its memory; the split logic in the model core is the same code that runs on the GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.loading import load_segmentation_module
from tests.images import distinct_pictures as photos

INPUT_SIZE = (64, 64)


class RunsOutOfMemoryAbove(torch.nn.Module):
    """The tiny segmenter, failing like a full GPU whenever a batch holds more than `fits` images."""

    def __init__(self, network: torch.nn.Module, fits: int):
        super().__init__()
        self.network, self.fits = network, fits
        self.batch_sizes_seen: list[int] = []
        self.cudnn_search: list[bool] = []  # whether cudnn would search for algorithms during each batch

    def forward(self, pixels: torch.Tensor):
        self.batch_sizes_seen.append(pixels.shape[0])
        self.cudnn_search.append(torch.backends.cudnn.benchmark)
        if pixels.shape[0] > self.fits:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {pixels.shape[0]} images")
        return self.network(pixels)


def model_on(network: torch.nn.Module) -> BackgroundRemovalModel:
    return BackgroundRemovalModel(network, input_size=INPUT_SIZE, device=torch.device("cpu"), precision="fp32")


@pytest.fixture
def network(tiny_model_dir: Path) -> torch.nn.Module:
    return load_segmentation_module(str(tiny_model_dir))


def test_a_batch_too_big_for_memory_still_returns_every_mask_in_order(network: torch.nn.Module) -> None:
    images = photos(8)
    expected = model_on(network).predict(images)
    failing = RunsOutOfMemoryAbove(network, fits=2)
    model = model_on(failing)
    failed_sizes: list[int] = []
    model.on_out_of_memory = failed_sizes.append

    masks = model.predict(images)

    assert len(masks) == len(images)
    for mask, reference in zip(masks, expected, strict=True):
        np.testing.assert_array_equal(mask, reference)
    assert failed_sizes == [8, 4, 4]  # 8 -> 4 + 4 -> each 2 + 2
    assert model.out_of_memory_splits == 3
    assert failing.batch_sizes_seen == [8, 4, 2, 2, 4, 2, 2]
    assert model.describe()["out_of_memory_splits"] == 3


def test_an_odd_batch_splits_unevenly_and_keeps_the_order(network: torch.nn.Module) -> None:
    images = photos(5)
    expected = model_on(network).predict(images)
    masks = model_on(RunsOutOfMemoryAbove(network, fits=1)).predict(images)
    assert [m.shape for m in masks] == [image.shape[:2] for image in images]
    for mask, reference in zip(masks, expected, strict=True):
        np.testing.assert_array_equal(mask, reference)


def test_a_single_image_that_does_not_fit_fails_with_the_memory_error(network: torch.nn.Module) -> None:
    model = model_on(RunsOutOfMemoryAbove(network, fits=0))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        model.predict(photos(1))


class RunsOutOfMemoryOnBlack(torch.nn.Module):
    """The tiny segmenter, failing like a full GPU on any batch that holds an all-black image (a stand-in for an
    image too large for the memory left even alone)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor):
        if bool((pixels.flatten(1).amax(dim=1) < -1.5).any()):  # black, normalised with ImageNet's mean and std
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate a lot")
        return self.network(pixels)


def test_an_image_that_does_not_fit_alone_fails_alone_and_its_batch_mates_get_their_masks(
        network: torch.nn.Module) -> None:
    images = photos(5)
    images[2] = np.zeros_like(images[2])
    expected = model_on(network).predict([image for index, image in enumerate(images) if index != 2])
    results = model_on(RunsOutOfMemoryOnBlack(network)).submit(images).result()
    assert isinstance(results[2], torch.cuda.OutOfMemoryError)
    for mask, reference in zip(results[:2] + results[3:], expected, strict=True):
        np.testing.assert_array_equal(mask, reference)


def test_other_errors_are_not_retried() -> None:
    class Broken(torch.nn.Module):
        calls = 0

        def forward(self, pixels: torch.Tensor):
            Broken.calls += 1
            raise RuntimeError("shape mismatch")

    model = model_on(Broken())
    with pytest.raises(RuntimeError, match="shape mismatch"):
        model.predict(photos(4))
    assert Broken.calls == 1 and model.out_of_memory_splits == 0


def test_cudnn_searches_algorithms_only_for_batch_sizes_that_already_ran(network: torch.nn.Module,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The search costs seconds per new shape at large batches: a batch that is about to run out of memory, and
    # its halves, must not pay it. On the GPU this flag is on (the model core sets it); here it is set by hand.
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    failing = RunsOutOfMemoryAbove(network, fits=2)
    model = model_on(failing)

    model.predict(photos(4))  # 4 fails, then 2 and 2
    model.predict(photos(1))
    model.predict(photos(2))

    assert failing.batch_sizes_seen == [4, 2, 2, 1, 2]
    assert failing.cudnn_search == [False, False, True, True, True]
    assert torch.backends.cudnn.benchmark  # the process-wide setting is restored after each batch

"""The compiled execution path (AOTInductor packages per batch bucket) on the tiny model, on CPU.

The same code compiles for CUDA on a GPU host; here it proves the export, the packaging, the cache (a second
start loads instead of compiling) and the bucket padding, against the eager forward pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.model.compiled import weights_fingerprint
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.loading import load_segmentation_module
from tests.images import distinct_pictures as photos

INPUT_SIZE = (64, 64)
BUCKETS = (2,)


def build(tiny_model_dir: Path, execution: str, cache_dir: Path) -> BackgroundRemovalModel:
    return BackgroundRemovalModel(load_segmentation_module(str(tiny_model_dir)), input_size=INPUT_SIZE,
                                  device=torch.device("cpu"), precision="fp32", model_id="tiny",
                                  execution=execution, graph_batch_sizes=BUCKETS, compile_cache_dir=cache_dir)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def compiled(tiny_model_dir: Path, cache_dir: Path) -> BackgroundRemovalModel:
    return build(tiny_model_dir, "compiled", cache_dir)


def test_first_start_compiles_every_bucket_into_the_cache(compiled: BackgroundRemovalModel, cache_dir: Path) -> None:
    assert compiled.execution == "compiled"
    assert set(compiled.compile_s) == set(BUCKETS)
    assert [p.name for p in cache_dir.glob("*/*.pt2")] == ["batch2.pt2"]
    assert not list(cache_dir.glob("*/.*.tmp.pt2")), "a temporary package was left behind"


@pytest.mark.parametrize("count", [1, 2, 3])  # padded up to the bucket; above it, run bucket by bucket
def test_compiled_masks_match_eager(compiled: BackgroundRemovalModel, tiny_model_dir: Path, tmp_path: Path,
                                    count: int) -> None:
    images = photos(count)
    eager = build(tiny_model_dir, "eager", tmp_path).predict(images)
    masks = compiled.predict(images)
    assert [m.shape for m in masks] == [image.shape[:2] for image in images]
    for mask, reference in zip(masks, eager, strict=True):
        assert np.abs(mask.astype(int) - reference.astype(int)).max() <= 1


def test_a_restart_loads_the_packages_instead_of_compiling(compiled: BackgroundRemovalModel, tiny_model_dir: Path,
                                                            cache_dir: Path) -> None:
    restarted = build(tiny_model_dir, "compiled", cache_dir)
    assert restarted.execution == "compiled" and restarted.compile_s == {}
    images = photos(2)
    for mask, reference in zip(restarted.predict(images), compiled.predict(images), strict=True):
        np.testing.assert_array_equal(mask, reference)


def test_other_weights_get_other_packages(tiny_model_dir: Path) -> None:
    module = load_segmentation_module(str(tiny_model_dir))
    before = weights_fingerprint(module)
    with torch.no_grad():
        next(module.parameters()).add_(0.01)
    assert weights_fingerprint(module) != before

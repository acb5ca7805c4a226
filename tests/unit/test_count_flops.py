"""scripts/count_flops.py on the tiny model: the counts a user reads off add up and follow the input size."""

from __future__ import annotations

from pathlib import Path

from count_flops import count

from serve_app.model.loading import load_segmentation_module


def test_counts_add_up_and_grow_with_the_pixels(tiny_model_dir: Path) -> None:
    module = load_segmentation_module(str(tiny_model_dir)).float().eval()
    small, large = count(module, 64), count(module, 128)
    assert small["total_flops"] > 0
    assert sum(large["by_operator_flops"].values()) == large["total_flops"]
    assert sum(large["by_module_flops"].values()) <= large["total_flops"]
    # a fully convolutional network does four times the work on four times the pixels
    assert 3.5 < large["total_flops"] / small["total_flops"] < 4.5

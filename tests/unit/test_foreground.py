"""Foreground colour estimation: the old background's colour leaves soft edges and hair (CPU; CUDA where marked)."""

from __future__ import annotations

import pytest
import torch

from harness.foreground_cost import parse_sizes, time_foreground
from serve_app.model.foreground import estimate_foreground, level_sizes, refine_foreground_uint8

GREEN_SCREEN = (0.0, 1.0, 0.0)


def _composite(height: int = 96, width: int = 128) -> tuple[torch.Tensor, ...]:
    """(image, alpha, true foreground, strands): a colour gradient over saturated green, a disc whose edge fades
    from 1 to 0 over 20 px, and thin strands of hair (alpha 0.3-0.7, marked by `strands`) over the background."""
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1).expand(height, width)
    columns = torch.arange(width, dtype=torch.float32).view(1, -1).expand(height, width)
    foreground = torch.stack([0.9 - 0.4 * columns / width, 0.2 + 0.2 * rows / height, 0.3 + 0.5 * columns / width])
    background = torch.tensor(GREEN_SCREEN).view(3, 1, 1)
    radius = torch.sqrt((rows - height / 2) ** 2 + (columns - width / 2) ** 2)
    alpha = ((height / 2.5 - radius) / 20).clamp(0, 1)
    strands = torch.zeros(height, width, dtype=torch.bool)
    for index, column in enumerate(range(10, width - 10, 12)):
        strand = ((columns - column).abs() < 0.6) & (rows < height * 0.3) & (alpha == 0)
        alpha = torch.where(strand, torch.tensor(0.3 + 0.2 * (index % 3)), alpha)
        strands |= strand
    image = alpha * foreground + (1 - alpha) * background
    return image, alpha, foreground, strands


def _colour_error(estimate: torch.Tensor, truth: torch.Tensor, alpha: torch.Tensor) -> float:
    """Mean absolute colour error (0..1) over the semi-transparent pixels, where the old background shows."""
    soft = (alpha > 0.05) & (alpha < 0.95)
    return float((estimate - truth).abs()[:, soft].mean())


@pytest.mark.parametrize("max_levels", [None, 4])
def test_soft_edges_and_hair_lose_the_old_background_colour(max_levels):
    image, alpha, truth, strands = _composite()
    naive_error = _colour_error(image, truth, alpha)  # the cut-out that keeps the photo's colours
    estimated = estimate_foreground(image, alpha, max_levels=max_levels)
    assert estimated.shape == image.shape and estimated.dtype == torch.float32
    assert naive_error > 0.2
    assert _colour_error(estimated, truth, alpha) <= naive_error / 3
    assert _colour_error(estimated, truth, alpha) < 0.03
    # The strands' green fringe is gone: the photo shows them at green ~0.6, their true green is 0.2-0.26.
    assert float(image[1][strands].mean()) > 0.5
    assert float(estimated[1][strands].mean()) < 0.3


def test_semi_transparent_pixels_recomposite_to_the_photo():
    image, alpha, _, _ = _composite()
    estimated = estimate_foreground(image, alpha)
    recomposited = alpha * estimated + (1 - alpha) * torch.tensor(GREEN_SCREEN).view(3, 1, 1)
    assert float((recomposited - image).abs().mean()) < 0.02


def _uint8_case(height: int = 48, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    alpha = torch.randint(0, 256, (height, width), generator=generator, dtype=torch.uint8)
    alpha[: height // 3] = 255
    alpha[-height // 3 :] = 0
    return image, alpha


def test_opaque_pixels_keep_their_colour_and_transparent_ones_are_black():
    image, alpha = _uint8_case()
    refined = refine_foreground_uint8(image, alpha)
    assert refined.shape == image.shape and refined.dtype == torch.uint8 and refined.is_contiguous()
    opaque, transparent = alpha == 255, alpha == 0
    assert torch.equal(refined[opaque], image[opaque])
    assert not refined[transparent].any()


@pytest.mark.parametrize("height, width", [(37, 61), (61, 37), (1, 1), (2, 3), (3, 2), (1, 40), (33, 1)])
def test_any_size_gives_a_foreground_of_that_size(height, width):
    generator = torch.Generator().manual_seed(height * 100 + width)
    image = torch.rand(3, height, width, generator=generator)
    alpha = torch.rand(1, height, width, generator=generator)
    estimated = estimate_foreground(image, alpha)
    assert estimated.shape == (3, height, width)
    assert torch.isfinite(estimated).all() and estimated.min() >= 0 and estimated.max() <= 1
    refined = refine_foreground_uint8((image * 255).to(torch.uint8).permute(1, 2, 0).contiguous(),
                                      (alpha[0] * 255).to(torch.uint8))
    assert refined.shape == (height, width, 3)


def test_levels_run_from_one_pixel_to_the_full_size():
    assert level_sizes(1, 1) == [(1, 1)]
    sizes = level_sizes(2000, 3000)
    assert sizes[0] == (1, 1) and sizes[-1] == (2000, 3000) and len(sizes) == 13


def test_half_precision_inputs_give_nearly_the_same_foreground():
    image, alpha, _, _ = _composite()
    full = estimate_foreground(image, alpha)
    half = estimate_foreground(image.half(), alpha.half())
    assert half.dtype == torch.float32
    assert float((half - full).abs().mean()) < 1e-3
    assert float((half - full).abs().max()) < 1e-2


@pytest.mark.parametrize("image_shape, alpha_shape", [((96, 128, 3), (96, 128)), ((3, 96, 128), (96, 127)),
                                                      ((3, 96, 128), (2, 96, 128)), ((3, 0, 5), (0, 5))])
def test_mismatched_shapes_are_refused_with_the_shapes_named(image_shape, alpha_shape):
    with pytest.raises(ValueError, match="expected"):
        estimate_foreground(torch.zeros(image_shape), torch.zeros(alpha_shape))


def test_max_levels_below_one_is_refused():
    with pytest.raises(ValueError, match="max_levels"):
        estimate_foreground(torch.zeros(3, 4, 4), torch.zeros(4, 4), max_levels=0)


def test_the_benchmark_times_each_size():
    rows = time_foreground("cpu", parse_sizes("40x30,17x9"), repeats=1, warmup=0)
    assert [row["size"] for row in rows] == ["40x30", "17x9"]
    assert all(row["ms_median"] > 0 for row in rows)
    with pytest.raises(ValueError, match="1000x1000"):
        parse_sizes("1000by1000")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_stays_on_the_device():
    image, alpha = _uint8_case(480, 640)
    on_cuda = refine_foreground_uint8(image.cuda(), alpha.cuda())
    assert on_cuda.device.type == "cuda"
    difference = (on_cuda.cpu().int() - refine_foreground_uint8(image, alpha).int()).abs()
    assert int(difference.max()) <= 2

"""Foreground colour estimation ("clean edges"): the old background's colour taken out of semi-transparent pixels.

A cut-out that keeps the photo's colours where alpha is between 0 and 1 shows a fringe of the old background
around hair and soft edges once it is placed on a new one. Every pixel of the photo is a mix
I = alpha * F + (1 - alpha) * B of a foreground colour F and a background colour B; this module estimates F
(and B along the way) with the multi-level method of Germer, Uelwer, Conrad and Harmeling, "Fast Multi-Level
Foreground Estimation" (2020), the method of pymatting's `estimate_foreground_ml`.

From a 1x1 image up to the full size, each level is the input resized (nearest neighbour), starts from the
previous level's F and B upsampled, and runs a few Jacobi iterations. Each iteration solves, for every pixel at
once, the 2x2 system for (F, B) of the cost

    (alpha F + (1 - alpha) B - I)^2 + sum over the 4 neighbours n of w_n ((F - F_n)^2 + (B - B_n)^2),
    w_n = regularization + gradient_weight * |alpha - alpha_n|,

with the neighbours' values from the previous iteration, in closed form. The matrix depends on alpha alone, so
its inverse is computed once per level (about 25 tensor operations); an iteration is 9 operations whatever the
size: four multiply-adds of shifted views for the right-hand side, four for the solve, a clamp. The levels grow
by about 2x per side, so the coarser levels together add about a third to the arithmetic of the finest one.
On a GPU the small levels cost kernel launches instead: a 6 MP photo has 13 levels, the 6 up to `small_size`
at 10 iterations each, and ~1,000 kernel launches in all; `max_levels=8` skips the 5 coarsest (~520 launches).

All tensor work stays on the inputs' device. Cost of `refine_foreground_uint8` on a 2-core CPU (torch 2.14,
2 threads, default settings, a 1000x1000 image; scripts/bench_foreground.py): 130-180 ms median, 95-150 ms at
best, with other work on the machine; `max_levels=8` changes little there, the arithmetic of the finest levels
dominates on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Alpha above / below these counts as foreground / background for the mean colours the coarsest level starts from.
_OPAQUE_FROM = 0.9
_TRANSPARENT_BELOW = 0.1


def level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(height, width) of every level, coarsest (1x1) first, the input's size last; each side grows geometrically."""
    count = math.ceil(math.log2(max(height, width)))
    if count == 0:
        return [(height, width)]
    return [(round(height ** (level / count)), round(width ** (level / count))) for level in range(count + 1)]


@torch.inference_mode()
def estimate_foreground(image: torch.Tensor, alpha: torch.Tensor, *, iterations_small: int = 10,
                        iterations_big: int = 2, small_size: int = 32, regularization: float = 5e-3,
                        gradient_weight: float = 1.0, max_levels: int | None = None) -> torch.Tensor:
    """The foreground colours F of `image` given its alpha matte, on the inputs' device.

    Args:
        image: (3, H, W) RGB in [0, 1], any float dtype (computed in float32).
        alpha: (H, W) or (1, H, W) in [0, 1], on the image's device.
        iterations_small: iterations on each level no larger than `small_size` on either side.
        iterations_big: iterations on each larger level (the cost of a level is proportional to this).
        regularization: smoothness of F and B everywhere; larger values give smoother colours.
        gradient_weight: extra smoothness where alpha changes between neighbours.
        max_levels: run only this many of the finest levels, the coarsest of them starting from the mean colours
            (fewer operations to launch; colours then travel less far into wide soft regions). None: all levels.

    Returns:
        F, (3, H, W) float32 in [0, 1]. Where alpha is 0, F is an extrapolation of the nearby foreground.
    """
    image, alpha = _checked(image, alpha)
    if max_levels is not None and max_levels < 1:
        raise ValueError(f"max_levels must be at least 1 (or None for all levels), got {max_levels}")
    height, width = alpha.shape[-2:]
    # Image and alpha travel together through each level's resize: one operation instead of two.
    full = torch.cat([image, alpha]).unsqueeze(0)
    estimate = _mean_colours(image, alpha[0])  # (1, 6, 1, 1): F then B
    levels = level_sizes(height, width)
    for level_height, level_width in levels[-max_levels:] if max_levels else levels:
        level = full if (level_height, level_width) == (height, width) else F.interpolate(
            full, size=(level_height, level_width), mode="nearest")
        estimate = F.interpolate(estimate, size=(level_height, level_width), mode="nearest")
        small = level_height <= small_size and level_width <= small_size
        iterations = iterations_small if small else iterations_big
        estimate = _solve_level(level[:, :3], level[:, 3:], estimate, iterations, regularization, gradient_weight)
    return estimate[0, :3].contiguous()


@torch.inference_mode()
def refine_foreground_uint8(image_hwc_uint8: torch.Tensor, alpha_uint8: torch.Tensor, **options) -> torch.Tensor:
    """The cut-out's colours for an (H, W, 3) uint8 image and its (H, W) uint8 alpha, (H, W, 3) uint8, same device.

    Opaque pixels (alpha 255) keep the image's colour exactly; transparent ones (alpha 0) are black (0, 0, 0), so
    they compress well and show nothing of the old background. `options` go to `estimate_foreground`.
    """
    if image_hwc_uint8.dtype != torch.uint8 or alpha_uint8.dtype != torch.uint8:
        raise ValueError(f"expected uint8 image and alpha, got {image_hwc_uint8.dtype} and {alpha_uint8.dtype}")
    if image_hwc_uint8.ndim != 3 or image_hwc_uint8.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {tuple(image_hwc_uint8.shape)}")
    image = image_hwc_uint8.permute(2, 0, 1).float().div_(255.0)
    foreground = estimate_foreground(image, alpha_uint8.float().div_(255.0), **options)
    refined = foreground.mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0)
    opaque = (alpha_uint8 == 255).unsqueeze(-1)
    transparent = (alpha_uint8 == 0).unsqueeze(-1)
    refined = torch.where(opaque, image_hwc_uint8, refined)
    return refined.masked_fill_(transparent, 0).contiguous()


def _checked(image: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """image (3, H, W) and alpha (1, H, W), both float32, or a ValueError that says what is wrong."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got {tuple(image.shape)}")
    if alpha.ndim == 2:
        alpha = alpha.unsqueeze(0)
    if alpha.ndim != 3 or alpha.shape[0] != 1 or alpha.shape[1:] != image.shape[1:]:
        raise ValueError(f"expected an (H, W) or (1, H, W) alpha for an image of {tuple(image.shape)}, "
                         f"got {tuple(alpha.shape)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"expected a non-empty image, got {tuple(image.shape)}")
    if alpha.device != image.device:
        raise ValueError(f"image on {image.device} but alpha on {alpha.device}")
    return image.float(), alpha.float()


def _mean_colours(image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(1, 6, 1, 1): the mean colour of the opaque pixels, then of the transparent ones (black if there are none).

    Computed with masks rather than indexing, so nothing waits for the device.
    """
    opaque = (alpha > _OPAQUE_FROM).float()
    transparent = (alpha < _TRANSPARENT_BELOW).float()
    means = [(image * mask).sum(dim=(1, 2)) / mask.sum().clamp(min=1.0) for mask in (opaque, transparent)]
    return torch.cat(means).view(1, 6, 1, 1)


def _solve_level(image: torch.Tensor, alpha: torch.Tensor, estimate: torch.Tensor, iterations: int,
                 regularization: float, gradient_weight: float) -> torch.Tensor:
    """`iterations` Jacobi sweeps on one level: image (1, 3, h, w), alpha (1, 1, h, w), estimate (1, 6, h, w)."""
    height, width = alpha.shape[-2:]
    if height * width == 1:
        return estimate  # no neighbours: the 2x2 system is singular, and the start (the mean colours) stands
    weights = _neighbour_weights(alpha, regularization, gradient_weight)
    total_weight = weights[0] + weights[1] + weights[2] + weights[3]
    # With a = (alpha, 1 - alpha), the matrix is [[a0^2 + S, a0 a1], [a0 a1, a1^2 + S]] (S the sum of the weights,
    # at least `regularization` as every pixel has a neighbour); its determinant S (a0^2 + a1^2 + S) is positive.
    alphas = torch.cat([alpha, 1.0 - alpha], dim=1)
    diagonal = alphas.square().add_(total_weight)
    off_diagonal = alpha * alphas[:, 1:]
    inverse_det = (diagonal.sum(dim=1, keepdim=True) - total_weight).mul_(total_weight).reciprocal_()
    inverse_ff, inverse_bb = (diagonal.flip(1) * inverse_det).split(1, dim=1)
    inverse_fb = off_diagonal.mul_(inverse_det).neg_()
    data = (alphas.unsqueeze(2) * image.unsqueeze(1)).flatten(1, 2)  # (alpha I, (1 - alpha) I)
    # Two zero-bordered buffers, read and written in turn: an iteration allocates only its right-hand side and
    # runs 9 operations, whatever the size (on a GPU the small levels cost kernel launches, not arithmetic).
    buffers = [estimate.new_zeros(1, 6, height + 2, width + 2) for _ in range(2)]
    _interior(buffers[0]).copy_(estimate)
    for iteration in range(iterations):
        previous, current = buffers[iteration % 2], buffers[(iteration + 1) % 2]
        neighbours = _shifted(previous)
        rhs = torch.addcmul(data, weights[0], neighbours[0])
        for weight, neighbour in zip(weights[1:], neighbours[1:], strict=True):
            rhs.addcmul_(weight, neighbour)
        rhs_f, rhs_b = rhs[:, :3], rhs[:, 3:]
        solved = _interior(current)
        torch.mul(rhs_f, inverse_ff, out=solved[:, :3]).addcmul_(rhs_b, inverse_fb)
        torch.mul(rhs_b, inverse_bb, out=solved[:, 3:]).addcmul_(rhs_f, inverse_fb)
        solved.clamp_(0.0, 1.0)
    return _interior(buffers[iterations % 2])


def _neighbour_weights(alpha: torch.Tensor, regularization: float, gradient_weight: float) -> list[torch.Tensor]:
    """Smoothness weights towards the left, right, upper and lower neighbour, (1, 1, h, w) each.

    A neighbour outside the image weighs 0. Treating the edge pixel as its own neighbour instead (as pymatting
    does) adds w (F - F)^2 = 0 to the cost: the same minimum, for more operations per iteration.
    """
    across = (alpha[..., :, 1:] - alpha[..., :, :-1]).abs_().mul_(gradient_weight).add_(regularization)
    down = (alpha[..., 1:, :] - alpha[..., :-1, :]).abs_().mul_(gradient_weight).add_(regularization)
    return [F.pad(across, (1, 0)), F.pad(across, (0, 1)), F.pad(down, (0, 0, 1, 0)), F.pad(down, (0, 0, 0, 1))]


def _interior(padded: torch.Tensor) -> torch.Tensor:
    return padded[..., 1:-1, 1:-1]


def _shifted(padded: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The left, right, upper and lower neighbour of every pixel, from a tensor padded by one on each side."""
    return (padded[..., 1:-1, :-2], padded[..., 1:-1, 2:], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1])

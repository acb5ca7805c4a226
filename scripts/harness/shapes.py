"""Generated photos of subjects with their true masks, made on the device in batches: for giving a segmentation
network weights with structure in minutes (scripts/train_shapes.py).

A subject is the union of one to three shapes (rotated ellipses and convex polygons) with a shaded, textured fill.
It stands on a studio backdrop (light, near-grey, with a soft gradient: product photos) or on a scene (smooth
coloured noise at two scales, busier than the subject): `scenes` is the share of the second kind.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# (cells across, weight) of each scale of noise: scenes are busy at a fine scale, subjects smoother (as a subject
# in focus on a busy scene: something a network can learn in minutes).
SCENE_SCALES = ((4, 0.6), (24, 0.4))
SUBJECT_SCALES = ((3, 0.8), (8, 0.2))


def shapes_batch(batch: int, size: tuple[int, int], generator: torch.Generator, *, scenes: float = 0.5,
                 photo_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` photos (B, 3, H, W) in [0, 1] and their masks (B, 1, H, W) in {0, 1}, for `size` = (width, height);
    the same `generator` state gives the same batch on any device (the few random numbers drawn come from the
    CPU's generator; the pixels are computed on `device`).

    With `photo_sizes` ((min width, min height), (max width, max height)), each photo is drawn as one of a size
    from that range (as shape_photos draws them) squeezed to `size`, as the model's resize squeezes every photo:
    subjects stretched by the photo's aspect ratio, the masks a network sees in service."""
    width, height = size
    down = torch.linspace(-1, 1, height, device=device).view(height, 1).expand(height, width)
    across = torch.linspace(-1, 1, width, device=device).view(1, width).expand(height, width)
    photos, masks = [], []
    for _ in range(batch):
        photo_width, photo_height = size if photo_sizes is None else _photo_size(photo_sizes, generator)
        # coordinates in units of half the photo's short side: a subject fills a tall photo as it fills a wide one
        short = min(photo_width, photo_height)
        rows, columns = down * (photo_height / short), across * (photo_width / short)
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
            mask |= _shape(rows, columns, generator)
        if not mask.any():  # a subject always shows
            mask |= (rows.abs() < 0.3) & (columns.abs() < 0.3)
        scene = bool(torch.rand(1, generator=generator) < scenes)
        background = _noise(rows, generator) if scene else _studio(rows, columns, generator)
        subject = _noise(rows, generator, scales=SUBJECT_SCALES) * _shading(rows, columns, generator)
        photos.append(torch.where(mask, subject, background).clamp(0, 1))
        masks.append(mask[None].float())
    return torch.stack(photos), torch.stack(masks)


def shape_photos(count: int, size_range: tuple[tuple[int, int], tuple[int, int]], *, seed: int,
                 scenes: float = 0.5) -> list[np.ndarray]:
    """`count` generated photos (H, W, 3) uint8 of sizes drawn from `size_range` ((min width, min height), (max
    width, max height)), the same for the same `seed`: accuracy checks of weights trained on such photos
    (scripts/check_accuracy.py --subjects shapes), whose masks then have subjects of some size to compare."""
    generator = torch.Generator().manual_seed(seed)
    photos = []
    for _ in range(count):
        pixels, _ = shapes_batch(1, _photo_size(size_range, generator), generator, scenes=scenes)
        photos.append((pixels[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    return photos


def _photo_size(size_range: tuple[tuple[int, int], tuple[int, int]], generator: torch.Generator) -> tuple[int, int]:
    """A (width, height) drawn uniformly from ((min width, min height), (max width, max height))."""
    (min_width, min_height), (max_width, max_height) = size_range
    width = int(torch.randint(min_width, max_width + 1, (1,), generator=generator))
    height = int(torch.randint(min_height, max_height + 1, (1,), generator=generator))
    return width, height


def _uniform(generator: torch.Generator, low: float, high: float, count: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _shape(rows: torch.Tensor, columns: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A rotated ellipse or a convex polygon near the centre, 30-80% of the photo's short side across: a subject
    that fills a good part of the frame, as in product and portrait photos."""
    centre_y, centre_x = _uniform(generator, -0.4, 0.4, 2).tolist()
    angle = float(_uniform(generator, 0, math.pi))
    y, x = rows - centre_y, columns - centre_x
    along, across = x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)
    radius_a, radius_b = _uniform(generator, 0.3, 0.8, 2).tolist()
    if bool(torch.rand(1, generator=generator) < 0.5):
        return (along / radius_a) ** 2 + (across / radius_b) ** 2 <= 1
    # A convex polygon: corners on the ellipse, one in each of `corners` equal arcs (corners bunched in one arc make
    # a sliver, not a subject); inside = left of every edge.
    corners = int(torch.randint(3, 8, (1,), generator=generator))
    angles = (torch.arange(corners) + _uniform(generator, 0.1, 0.9, corners)) * (2 * math.pi / corners)
    points = torch.stack([radius_a * torch.cos(angles), radius_b * torch.sin(angles)], dim=1).tolist()
    inside = torch.ones_like(rows, dtype=torch.bool)
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        inside &= (x1 - x0) * (across - y0) - (y1 - y0) * (along - x0) >= 0
    return inside


def _noise(rows: torch.Tensor, generator: torch.Generator, scales: tuple = SCENE_SCALES) -> torch.Tensor:
    """Smooth coloured noise at `scales` around a random colour: (3, H, W) in about [0, 1]."""
    fill = torch.zeros(3, *rows.shape, device=rows.device)
    for cells, weight in scales:
        grid = torch.rand(1, 3, cells, cells, generator=generator).to(rows.device)
        fill += weight * F.interpolate(grid, size=rows.shape, mode="bicubic", align_corners=False)[0]
    base = torch.rand(3, 1, 1, generator=generator).to(rows.device)
    return 0.5 * base + 0.5 * fill


def _studio(rows: torch.Tensor, columns: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A light, nearly neutral backdrop with a soft gradient and a little grain."""
    tone = (_uniform(generator, 0.75, 1.0) + _uniform(generator, -0.03, 0.03, 3)).to(rows.device)
    slope_y, slope_x = _uniform(generator, -0.1, 0.1, 2).tolist()
    grain = _noise(rows, generator, scales=((128, 1.0),)) - 0.5
    return tone.view(3, 1, 1) + (slope_y * rows + slope_x * columns)[None] + 0.04 * grain


def _shading(rows: torch.Tensor, columns: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A light falling from one side, for the subject: (1, H, W) around 1."""
    slope_y, slope_x = _uniform(generator, -0.3, 0.3, 2).tolist()
    return (1 + slope_y * rows + slope_x * columns)[None]

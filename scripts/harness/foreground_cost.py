"""What foreground colour estimation (serve_app/model/foreground.py) costs per image, by size, on one device."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from serve_app.model.foreground import refine_foreground_uint8


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """Sizes from the command line, "1000x1000,3000x2000", as [(width, height), ...]."""
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().partition("x")
        if not (width.isdigit() and height.isdigit()) or int(width) == 0 or int(height) == 0:
            raise ValueError(f"expected sizes like 1000x1000,3000x2000, got {item!r}")
        sizes.append((int(width), int(height)))
    return sizes


def synthetic_cutout(width: int, height: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """An (H, W, 3) uint8 image and an (H, W) uint8 alpha on `device`, made there: a subject with a soft edge.

    The estimation's cost does not depend on the pixel values; the soft edge only keeps the example honest.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    image = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8, device=device)
    rows = torch.arange(height, device=device, dtype=torch.float32).view(-1, 1) - height / 2
    columns = torch.arange(width, device=device, dtype=torch.float32).view(1, -1) - width / 2
    radius = torch.sqrt(rows * rows + columns * columns)
    edge_px = max(2.0, 0.02 * min(width, height))  # the soft band, a few percent of the short side
    alpha = ((0.35 * min(width, height) - radius) / edge_px).clamp(0, 1)
    return image, alpha.mul(255).round().to(torch.uint8)


def time_foreground(device: torch.device | str, sizes: Sequence[tuple[int, int]], repeats: int = 5,
                    warmup: int = 1, max_levels: int | None = None) -> list[dict]:
    """One row per (width, height): milliseconds per `refine_foreground_uint8` call, median and fastest of
    `repeats` after `warmup` unmeasured calls, with the device's work finished before each clock reading."""
    device = torch.device(device)
    rows = []
    for width, height in sizes:
        image, alpha = synthetic_cutout(width, height, device)
        timings_ms = []
        for run in range(warmup + repeats):
            _synchronize(device)
            started = time.perf_counter()
            refine_foreground_uint8(image, alpha, max_levels=max_levels)
            _synchronize(device)
            if run >= warmup:
                timings_ms.append((time.perf_counter() - started) * 1000)
        median_ms = statistics.median(timings_ms)
        rows.append({"size": f"{width}x{height}", "megapixels": round(width * height / 1e6, 2),
                     "device": str(device), "max_levels": max_levels, "repeats": repeats,
                     "ms_median": round(median_ms, 2), "ms_min": round(min(timings_ms), 2)})
    return rows


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

"""Deterministic photo-like JPEGs of mixed sizes for load tests (no downloads, no bundled data)."""

from __future__ import annotations

import io
import multiprocessing
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE_RANGE = ((800, 800), (3000, 2000))  # (min width, min height), (max width, max height)


def synthetic_photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A smooth background with a few blurred coloured shapes and sensor-like noise: JPEG-realistic entropy."""
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 2)), y0 + int(rng.integers(height // 8, height // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    image = image.filter(ImageFilter.GaussianBlur(radius=2))
    noise = rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def mixed_size_jpegs(count: int, seed: int = 0, quality: int = 90) -> list[bytes]:
    """`count` JPEGs with sizes drawn uniformly from SIZE_RANGE."""
    rng = np.random.default_rng(seed)
    (min_w, min_h), (max_w, max_h) = SIZE_RANGE
    photos = []
    for _ in range(count):
        width, height = int(rng.integers(min_w, max_w + 1)), int(rng.integers(min_h, max_h + 1))
        buffer = io.BytesIO()
        synthetic_photo(width, height, rng).save(buffer, format="JPEG", quality=quality)
        photos.append(buffer.getvalue())
    return photos


def write_photo_folder(out_dir: str, count: int, *, workers: int = 1, per_folder: int = 250) -> None:
    """`count` mixed-size JPEGs in nested folders (`batch_000/photo_00000.jpg`), generated in parallel."""
    jobs = [(Path(out_dir) / f"batch_{i // per_folder:03d}" / f"photo_{i:05d}.jpg", i) for i in range(count)]
    with multiprocessing.Pool(workers) as pool:
        pool.starmap(_write_one, jobs, chunksize=8)


def _write_one(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mixed_size_jpegs(1, seed=seed)[0])

"""Deterministic JPEGs of mixed sizes for benchmarks and load tests, with no downloads.

Two kinds: real photographs made from the sample images scikit-image ships (`sample_photo_jpegs`, what the
throughput and accuracy benchmarks send), and synthetic photo-like pictures (`mixed_size_jpegs`, for tests and
load runs that must not depend on scikit-image).
"""

from __future__ import annotations

import importlib.util
import io
import multiprocessing
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE_RANGE = ((640, 480), (3000, 2000))  # (min width, min height), (max width, max height)


def synthetic_photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A smooth background with a few blurred coloured shapes and sensor-like noise: JPEG-realistic entropy."""
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 2)), y0 + int(rng.integers(height // 8, height // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    image = image.filter(ImageFilter.GaussianBlur(radius=2))
    noise = rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


# scikit-image's bundled photographs (skimage/data), colour ones first; the grey ones are used as RGB.
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                 "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png",
                 "coins.png", "moon.png")


def sample_photo_dir() -> Path:
    """scikit-image's data folder, found without importing scikit-image (its import pulls in SciPy)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed: pip install scikit-image, or pass a folder "
                                f"holding {', '.join(SAMPLE_PHOTOS)}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sample_photo_jpegs(count: int, seed: int = 0, quality: int = 90, photo_dir: Path | None = None,
                       size_range: tuple[tuple[int, int], tuple[int, int]] | None = None) -> list[bytes]:
    """`count` JPEGs made from real photographs, cycling through SAMPLE_PHOTOS, sizes drawn from `size_range`
    ((min width, min height), (max width, max height); default SIZE_RANGE).

    Each is a random crop of the original at the target aspect ratio, scaled to the target size. The originals
    are about 0.5 MP, so the scaled photo is smoother than a camera's; a little sensor-like grain gives the
    codecs (JPEG decode, PNG encode) the entropy of a real 3-6 MP photo.
    """
    folder = photo_dir or sample_photo_dir()
    originals = [Image.open(folder / name).convert("RGB") for name in SAMPLE_PHOTOS]
    rng = np.random.default_rng(seed)
    return [_render_sample_photo(originals[index % len(originals)], rng, quality, size_range or SIZE_RANGE)
            for index in range(count)]


def _render_sample_photo(original: Image.Image, rng: np.random.Generator, quality: int,
                         size_range: tuple[tuple[int, int], tuple[int, int]]) -> bytes:
    (min_w, min_h), (max_w, max_h) = size_range
    width, height = int(rng.integers(min_w, max_w + 1)), int(rng.integers(min_h, max_h + 1))
    scale = min(original.width / width, original.height / height) * float(rng.uniform(0.8, 1.0))
    crop_w, crop_h = int(width * scale), int(height * scale)
    left = int(rng.integers(0, original.width - crop_w + 1))
    top = int(rng.integers(0, original.height - crop_h + 1))
    photo = original.resize((width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    grain = rng.normal(0, 3, size=(height, width, 3))
    pixels = np.clip(np.asarray(photo, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


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


PARTIAL_SUFFIX = ".part"  # a photo being written; renamed when complete, so a finished name is a whole file


def sample_photo_folder_paths(count: int, per_folder: int = 250) -> list[str]:
    """The relative paths `write_sample_photo_folder` writes, in photo order."""
    return [f"batch_{i // per_folder:03d}/photo_{i:05d}.jpg" for i in range(count)]


def write_sample_photo_folder(out_dir: str | Path, count: int, *, photo_dir: Path | None = None, workers: int = 1,
                              per_folder: int = 250) -> bool:
    """`count` real-photo JPEGs (`sample_photo_jpegs`' generator) in nested folders (`batch_000/photo_00000.jpg`).

    Photo i cycles through SAMPLE_PHOTOS and draws from its own seed i, so the folder is the same whatever the
    number of worker processes. A folder that already holds exactly these files is reused (returns False);
    leftovers of an interrupted run are replaced (returns True); other files there raise FileExistsError, as
    they would become inputs of whatever reads the folder.
    """
    root = Path(out_dir)
    expected = sample_photo_folder_paths(count, per_folder)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    if present == set(expected):
        return False
    unexpected = {rel for rel in present - set(expected) if not rel.endswith(PARTIAL_SUFFIX)}
    if unexpected:
        raise FileExistsError(f"{root} holds {len(unexpected)} files other than the {count} photos "
                              f"(e.g. {sorted(unexpected)[0]}): use an empty folder, or remove them")
    folder = photo_dir or sample_photo_dir()
    jobs = [(root / rel, index, folder) for index, rel in enumerate(expected)]
    with multiprocessing.Pool(workers) as pool:
        pool.starmap(_write_one_sample, jobs, chunksize=8)
    return True


def _write_one_sample(path: Path, index: int, photo_dir: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    original = Image.open(photo_dir / SAMPLE_PHOTOS[index % len(SAMPLE_PHOTOS)]).convert("RGB")
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    partial.write_bytes(_render_sample_photo(original, np.random.default_rng(index), 90, SIZE_RANGE))
    partial.replace(path)

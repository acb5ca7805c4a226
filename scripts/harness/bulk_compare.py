"""How closely the bulk tool's outputs match the service's answers for the same photos (alpha channel): asked of
a running service, or read from another run's outputs (the bulk client's are the service's answers)."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import httpx
import numpy as np
from PIL import Image

ALPHA_TOLERANCE = 2  # out of 255: differences up to this are rounding between two runs of the same model


def png_alpha(data: bytes) -> np.ndarray:
    """The alpha channel of an RGBA or LA PNG, or the mask itself of a grayscale (only_mask) one, as uint8."""
    image = Image.open(io.BytesIO(data))
    if image.mode in ("RGBA", "LA"):
        return np.asarray(image.getchannel("A"))
    if image.mode == "L":
        return np.asarray(image)
    raise ValueError(f"a {image.mode} image has no alpha channel to compare")


def alpha_difference(candidate: np.ndarray, reference: np.ndarray, tolerance: int = ALPHA_TOLERANCE) -> dict:
    """Max and mean absolute difference (0..255) of two uint8 alpha channels, and the fraction beyond tolerance."""
    if candidate.shape != reference.shape:
        raise ValueError(f"alpha shapes differ: {candidate.shape} vs {reference.shape}")
    difference = np.abs(candidate.astype(np.int16) - reference.astype(np.int16))
    return {"max_abs_diff": int(difference.max()), "mean_abs_diff": round(float(difference.mean()), 4),
            "fraction_over_tolerance": round(float((difference > tolerance).mean()), 6)}


def worst_difference(rows: list[dict]) -> dict:
    """The worst of each measure over the photos that were compared, and how many could not be."""
    compared = [row for row in rows if "error" not in row]
    worst: dict = {"compared": len(compared), "errors": len(rows) - len(compared)}
    for key in ("max_abs_diff", "mean_abs_diff", "fraction_over_tolerance"):
        worst[key] = max((row[key] for row in compared), default=None)
    return worst


def pick_evenly(items: list[str], count: int) -> list[str]:
    """`count` items spread over the whole list (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def compare_with_service(url: str, input_root: Path, output_root: Path, relatives: list[str], *,
                         output_suffix: str = ".png", timeout_s: float = 300.0) -> dict:
    """POST each input to the service (default PNG output) and compare its alpha with the bulk tool's output."""
    endpoint = f"{url.rstrip('/')}/v1/remove-background"
    rows = []
    with httpx.Client(timeout=timeout_s, trust_env=False) as http:
        for relative in relatives:
            row: dict = {"input": relative}
            bulk_output = output_root / PurePosixPath(relative).with_suffix(output_suffix)
            response = http.post(endpoint, content=(input_root / relative).read_bytes(),
                                 headers={"Content-Type": "image/jpeg"})
            if response.status_code != 200:
                row["error"] = f"HTTP {response.status_code}: {response.text[:200]}"
            elif not bulk_output.exists():
                row["error"] = "the bulk tool wrote no output for it"
            else:
                try:
                    row |= alpha_difference(png_alpha(bulk_output.read_bytes()), png_alpha(response.content))
                except ValueError as error:
                    row["error"] = str(error)
            rows.append(row)
    return {"url": url, "tolerance": ALPHA_TOLERANCE, "worst": worst_difference(rows), "photos": rows}


def compare_with_folder(reference_root: Path, output_root: Path, relatives: list[str], *,
                        output_suffix: str = ".png") -> dict:
    """Compare the alpha of each output with the output of the same input under `reference_root`."""
    rows = []
    for relative in relatives:
        row: dict = {"input": relative}
        name = PurePosixPath(relative).with_suffix(output_suffix)
        ours, theirs = output_root / name, reference_root / name
        missing = [str(path) for path in (ours, theirs) if not path.exists()]
        if missing:
            row["error"] = f"no output at {', '.join(missing)}"
        else:
            try:
                row |= alpha_difference(png_alpha(ours.read_bytes()), png_alpha(theirs.read_bytes()))
            except ValueError as error:
                row["error"] = str(error)
        rows.append(row)
    return {"reference": str(reference_root), "tolerance": ALPHA_TOLERANCE, "worst": worst_difference(rows),
            "photos": rows}

"""The model-only benchmark on the tiny model (CPU): what its timed batches hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_model.py"


def run_bench(tiny_model_dir: Path, out: Path, *extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model-id", str(tiny_model_dir), "--input-size", "256", "--precisions",
         "fp32", "--device", "cpu", "--batch-sizes", "1,2", "--iterations", "2", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_photos_as_input_are_timed_like_noise(tiny_model_dir: Path, tmp_path: Path) -> None:
    photos = run_bench(tiny_model_dir, tmp_path / "photos.json", "--input", "photos")
    noise = run_bench(tiny_model_dir, tmp_path / "noise.json")
    assert (photos["input"], noise["input"]) == ("photos", "noise")
    for record in (photos, noise):
        assert [row["batch_size"] for row in record["results"]] == [1, 2]
        assert all(row["images_per_s"] > 0 for row in record["results"])

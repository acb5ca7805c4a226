"""Bulk processing, both modes: killed for real with SIGKILL part-way, rerun, nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from serve_app.bulk.layout import is_temporary
from serve_app.serve_config import derive_config
from tests.helpers import TINY_CONFIG
from tests.images import encode, red_square

TOTAL, CORRUPT = 300, 5
CONFIG = TINY_CONFIG


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 small pictures in nested folders (PNG and JPEG), 5 of them corrupt."""
    root = tmp_path_factory.mktemp("photos")
    for index in range(TOTAL):
        folder = root / f"shoot{index % 4}" / ("day1" if index % 3 else "day2")
        folder.mkdir(parents=True, exist_ok=True)
        left = 5 + (index * 7) % 60
        picture = red_square((96 + index % 7, 64), (left, 10, left + 25, 40))
        if index < CORRUPT:
            (folder / f"photo{index:03d}.jpg").write_bytes(encode(picture, "JPEG")[:200])  # truncated
        elif index % 2:
            (folder / f"photo{index:03d}.jpg").write_bytes(encode(picture, "JPEG", quality=95))
        else:
            (folder / f"photo{index:03d}.png").write_bytes(encode(picture))
    return root


def outputs(folder: Path) -> list[Path]:
    """The finished outputs: not the summaries (`_*`), the run's lock (`.lock`), nor a temporary file a SIGKILL left
    mid-write."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(("_", ".")) and not is_temporary(p.name))


def settled_output_count(out: Path, quiet_s: float = 3.0, limit_s: float = 30.0) -> int:
    """The finished outputs once none has appeared for `quiet_s`: Ray's worker processes of a killed driver can
    sit outside its process group and finish the batch in hand before they notice (CI: 23 counted at the kill, 27
    by the resume)."""
    count, quiet_since, deadline = len(outputs(out)), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.25)
        now = len(outputs(out))
        if now != count:
            count, quiet_since = now, time.monotonic()
    return count


def run_killed_then_complete(command: list[str], out: Path, kill_after_outputs: int) -> tuple[int, dict, str]:
    """Start the bulk command, SIGKILL its whole process group once some outputs exist, then rerun it; what the
    rerun wrote to stderr last."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env)
    deadline = time.monotonic() + 240
    while len(outputs(out)) < kill_after_outputs and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_before = settled_output_count(out)
    assert 0 < done_before < TOTAL - CORRUPT, f"not killed part-way: {done_before} outputs"
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 1, second.stderr[-3000:]  # 1: finished, with failures listed
    return done_before, json.loads((out / "_summary.json").read_text()), second.stderr


def assert_complete_and_clean(photos: Path, out: Path) -> None:
    produced = outputs(out)
    assert len(produced) == TOTAL - CORRUPT
    assert not [p for p in out.rglob("*") if is_temporary(p.name)], "temporary files left behind"
    for path in produced:
        source = next(photos.glob(str(path.relative_to(out).with_suffix(".*"))))
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and image.mode == "RGBA"
            assert image.size == Image.open(source).size
    failures = [json.loads(line) for line in (out / "_failures.jsonl").read_text().splitlines()]
    assert sorted(f["input"] for f in failures) == sorted(
        str(p.relative_to(photos)) for p in photos.rglob("photo00[0-4].jpg"))
    assert all(f["code"] == "invalid_image" and f["reason"] for f in failures)


@pytest.fixture(scope="module")
def client_output(service: str, photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("client_out")
    command = [sys.executable, "-m", "serve_app.bulk", "client", str(photo_folder), str(out), "--url", service,
               "--concurrency", "4"]
    done_before, summary, _ = run_killed_then_complete(command, out, kill_after_outputs=20)
    assert summary["skipped_already_done"] == done_before
    assert summary["processed_this_run"] == TOTAL - CORRUPT - done_before
    return out


@pytest.fixture(scope="module")
def offline_output(tiny_model_dir: Path, photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("offline_out")
    config = tmp_path_factory.mktemp("offline_config") / "tiny.yaml"
    config.write_text(yaml.safe_dump(derive_config(CONFIG, model={"model_id": str(tiny_model_dir)})))
    command = [sys.executable, "-m", "serve_app.bulk", "offline", str(photo_folder), str(out), "--config",
               str(config), "--address", "local", "--batch-size", "4"]
    done_before, summary, stderr = run_killed_then_complete(command, out, kill_after_outputs=20)
    assert summary["skipped_already_done"] == done_before
    assert summary["processed_this_run"] == TOTAL - CORRUPT - done_before
    assert re.search(r"loading the model in \d+ actor\(s\) before decoding starts", stderr)  # the silent seconds
    # Every forward pass is a full batch of 4, but the last and those with a corrupt photo among their rows.
    histogram = {int(size): count for size, count in summary["batch_size_histogram"].items()}
    assert sum(size * count for size, count in histogram.items()) == summary["processed_this_run"]
    assert sum(count for size, count in histogram.items() if size < 4) <= 1 + CORRUPT, histogram
    # One node, one model actor: every image this run segmented is counted there.
    assert list(summary["images_by_model_node"].values()) == [summary["processed_this_run"]]
    return out


def test_client_mode_survives_sigkill_and_resumes(client_output: Path, photo_folder: Path) -> None:
    assert_complete_and_clean(photo_folder, client_output)


def test_offline_mode_survives_sigkill_and_resumes(offline_output: Path, photo_folder: Path) -> None:
    assert_complete_and_clean(photo_folder, offline_output)


def test_both_modes_agree_pixel_for_pixel(client_output: Path, offline_output: Path) -> None:
    for path in outputs(client_output):
        twin = offline_output / path.relative_to(client_output)
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(twin))), path

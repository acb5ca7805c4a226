"""The bulk tool on S3 (an S3-compatible server on loopback): inputs read from and outputs written to s3://, a run
killed with SIGKILL part-way and run again gives every output once, each whole, and nothing else."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from fsspec.core import url_to_fs
from PIL import Image

from serve_app.bulk.layout import is_temporary
from tests.images import encode, red_square

TOTAL, CORRUPT = 150, 3


@pytest.fixture(scope="module")
def prefix(s3_bucket: str) -> str:
    """s3://BUCKET/run-XXXX/ holding `in/`: TOTAL small pictures in two folders, CORRUPT of them truncated."""
    root = f"{s3_bucket}/run-{uuid.uuid4().hex[:8]}"
    fs, base = url_to_fs(root)
    for index in range(TOTAL):
        left = 5 + (index * 7) % 60
        picture = encode(red_square((96 + index % 7, 64), (left, 10, left + 25, 40)))
        fs.pipe_file(f"{base}/in/shoot{index % 2}/photo{index:03d}.png", picture[:200] if index < CORRUPT else picture)
    return root


def names(url: str) -> list[str]:
    """Every object under `url`, by its path below it."""
    fs, root = url_to_fs(url)
    fs.invalidate_cache()
    return [path[len(root) + 1:] for path in fs.find(root)]


def objects(url: str) -> dict[str, bytes]:
    fs, root = url_to_fs(url)
    return {name: fs.cat_file(f"{root}/{name}") for name in names(url)}


def result_count(url: str) -> int:
    return sum(not name.rpartition("/")[2].startswith("_") for name in names(url))


def results(url: str) -> dict[str, bytes]:
    return {name: data for name, data in objects(url).items() if not name.rpartition("/")[2].startswith("_")}


def test_a_killed_client_run_resumed_on_s3_gives_every_output_once(service: str, prefix: str) -> None:
    out = f"{prefix}/out"
    command = [sys.executable, "-m", "serve_app.bulk", "client", f"{prefix}/in", out, "--url", service,
               "--concurrency", "4"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}  # with the AWS variables of the s3_bucket fixture
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env)
    deadline = time.monotonic() + 240
    while first.poll() is None and time.monotonic() < deadline and result_count(out) < 20:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1)
    done_before = result_count(out)
    assert 0 < done_before < TOTAL - CORRUPT, f"not killed part-way: {done_before} outputs"

    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 1, second.stderr[-3000:]  # 1: finished, with the corrupt inputs listed
    summary = json.loads(objects(out)["_summary.json"])
    assert summary["skipped_already_done"] >= done_before
    assert summary["skipped_already_done"] + summary["processed_this_run"] == TOTAL - CORRUPT

    produced = results(out)
    assert not [name for name in names(out) if is_temporary(name.rpartition("/")[2])], "temporary objects left behind"
    expected = {f"shoot{index % 2}/photo{index:03d}.png" for index in range(CORRUPT, TOTAL)}
    assert set(produced) == expected
    for data in produced.values():
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # whole: a cut-off object would not decode
            assert image.format == "PNG" and image.mode == "RGBA" and image.size[1] == 64
    failures = [json.loads(line) for line in objects(out)["_failures.jsonl"].decode().splitlines()]
    assert sorted(failure["input"] for failure in failures) == sorted(
        f"shoot{index % 2}/photo{index:03d}.png" for index in range(CORRUPT))

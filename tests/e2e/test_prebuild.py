"""`python -m serve_app.prebuild` fills the compile cache so that the service's replica compiles nothing: it loads
every bucket saved whole.

On the tiny model on CPU: the prebuild compiles both buckets into a fresh cache directory, then `serve run` with the
same settings must find every bucket there, and so must `scripts/bench_model.py --in-ray-task`. A prebuild in a
process unlike a replica (another thread count) leaves entries the replica misses, which this test would catch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from harness.service_process import ServeProcess, free_port, model_info
from serve_app.serve_config import derive_config
from tests.helpers import TINY_CONFIG

BUCKETS = [1, 2]
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_a_prebuilt_cache_serves_every_bucket_of_the_service(tiny_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "compile-cache"
    model = {"model_id": str(tiny_model_dir), "execution": "compiled", "graph_batch_sizes": BUCKETS,
             "compile_cache_dir": str(cache)}
    prebuild = subprocess.run(
        [sys.executable, "-m", "serve_app.prebuild", "--config", str(TINY_CONFIG), "--address", "local",
         *(arg for key, value in model.items() for arg in ("--set", f"{key}={json.dumps(value)}"))],
        capture_output=True, text=True, timeout=600)
    assert prebuild.returncode == 0, prebuild.stderr[-3000:]
    report = json.loads(next(line for line in prebuild.stdout.splitlines() if line.startswith("{")))
    assert report["execution"] == "compiled"
    assert sorted(int(size) for size in report["buckets"]) == BUCKETS
    assert not any(bucket["from_cache"] for bucket in report["buckets"].values()), "the cache was not fresh"

    config = derive_config(TINY_CONFIG, model=model, port=free_port())
    service = ServeProcess(config, tmp_path, tmp_path / "serve.log")
    try:
        service.wait_ready(timeout_s=300)
        # Ready before the saved buckets load: each bucket is either loaded or still on the eager forward.
        info = model_info(service.base_url)
        assert sorted({*map(int, info["compile_warmup"]), *info["eager_batch_sizes"]}) == BUCKETS
        deadline = time.monotonic() + 120
        while info["eager_batch_sizes"] and time.monotonic() < deadline:
            time.sleep(0.2)
            info = model_info(service.base_url)
        warmup = info["compile_warmup"]
    finally:
        service.stop()
    assert sorted(int(size) for size in warmup) == BUCKETS and info["eager_batch_sizes"] == []
    assert all(bucket["from_cache"] and bucket["precompiled"] for bucket in warmup.values()), warmup

    # The model-only benchmark finds the same entries when it measures in a replica-like Ray task.
    record = tmp_path / "bench_model.json"
    bench = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_model.py"), "--in-ray-task", str(TINY_CONFIG), "--model-id",
         str(tiny_model_dir), "--input-size", "256", "--precisions", "fp32", "--device", "cpu", "--modes", "compiled",
         "--batch-sizes", ",".join(map(str, BUCKETS)), "--compile-cache-dir", str(cache), "--iterations", "2",
         "--out", str(record)], capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr[-3000:]
    rows = json.loads(record.read_text())["results"]
    assert [row["batch_size"] for row in rows] == BUCKETS and rows[0]["execution"] == "compiled"
    assert all(bucket["from_cache"] and bucket["precompiled"] for bucket in rows[0]["compile_warmup"].values()), \
        rows[0]["compile_warmup"]

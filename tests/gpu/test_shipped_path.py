"""The production path on a GPU: `serve run` of configs/prod.yaml, with only `model_id` and the compile cache
changed, running `compiled_graphs` on a Hub-layout model with random weights. Skipped without CUDA.

On a GPU host:

    .venv/bin/python -m pytest -n 0 -m gpu tests/gpu

`SERVE_APP_GPU_MODEL_DIR` names the model directory (the Hub's BiRefNet code with random weights, for the
published figures); without it the tiny test model stands in, which compiles in seconds.
`SERVE_APP_GPU_TIER_ON_CPU=1` runs the same steps on a CPU (no GPU asked for, `compiled` execution), to check the
test itself.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from harness.service_process import ServeProcess, free_port, model_info
from serve_app.serve_config import derive_config
from tests.images import distinct_pictures, encode

PROD = Path(__file__).resolve().parents[2] / "configs" / "prod.yaml"
ON_CPU = os.environ.get("SERVE_APP_GPU_TIER_ON_CPU") == "1"

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() or ON_CPU), reason="needs a CUDA device")]


def shipped_config(model_dir: str, cache: Path) -> dict:
    model = {"model_id": model_dir, "compile_cache_dir": str(cache)}
    remover = {}
    if ON_CPU:
        model["device"] = "cpu"
        remover = {"ray_actor_options": {"num_cpus": 1}, "autoscaling_config": None, "num_replicas": 1}
    return derive_config(PROD, model=model, remover=remover, port=free_port())


def masks_of(base_url: str, photos: list[bytes]) -> list[np.ndarray]:
    with httpx.Client(timeout=120, trust_env=False) as client:
        answers = [client.post(f"{base_url}/v1/remove-background?only_mask=true", content=photo,
                               headers={"Content-Type": "image/jpeg"}) for photo in photos]
    assert [answer.status_code for answer in answers] == [200] * len(photos), [a.text[:200] for a in answers]
    return [np.asarray(Image.open(io.BytesIO(answer.content))) for answer in answers]


def wait_for_compiled_buckets(base_url: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    info = model_info(base_url)
    while info["eager_batch_sizes"]:
        assert time.monotonic() < deadline, f"buckets still on the eager forward: {info['eager_batch_sizes']}"
        time.sleep(0.5)
        info = model_info(base_url)
    return info


def test_the_shipped_config_compiles_then_restarts_from_its_saved_buckets(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    model_dir = os.environ.get("SERVE_APP_GPU_MODEL_DIR") or str(tiny_model_dir)
    config = shipped_config(model_dir, tmp_path / "compile-cache")
    buckets = [str(size) for size in config["applications"][0]["args"]["model"]["graph_batch_sizes"]]
    photos = [encode(Image.fromarray(picture), "JPEG", quality=90) for picture in distinct_pictures(3)]
    starts = {}
    for start in ("cold", "warm"):
        (tmp_path / start).mkdir()
        service = ServeProcess(config, tmp_path / start, tmp_path / f"{start}.log")
        try:
            service.wait_ready(timeout_s=1800)  # a cold BiRefNet compiles for minutes per bucket
            ready = model_info(service.base_url)
            early = masks_of(service.base_url, photos)  # answered at once, whatever the buckets' state
            info = wait_for_compiled_buckets(service.base_url, timeout_s=600)
            starts[start] = {"ready": ready, "info": info, "early": early, "masks": masks_of(service.base_url, photos)}
        finally:
            service.stop()

    cold, warm = starts["cold"], starts["warm"]
    assert cold["info"]["execution"] == ("compiled" if ON_CPU else "compiled_graphs")
    # The first start compiled every bucket before it turned ready; the restart compiled none: it turned ready on
    # the eager forward and loaded each saved bucket behind it.
    assert sorted(cold["ready"]["compile_warmup"]) == sorted(buckets) and cold["ready"]["eager_batch_sizes"] == []
    assert not any(bucket["precompiled"] for bucket in cold["ready"]["compile_warmup"].values())
    assert sorted({*warm["ready"]["compile_warmup"], *map(str, warm["ready"]["eager_batch_sizes"])}) == \
        sorted(buckets)
    assert all(bucket["precompiled"] and bucket["after_start"] for bucket in warm["info"]["compile_warmup"].values())
    # The same compiled buckets give the same masks; the eager forward gives masks within the accuracy bounds.
    for cold_mask, warm_mask, early_mask, photo in zip(cold["masks"], warm["masks"], warm["early"],
                                                       distinct_pictures(3), strict=True):
        assert cold_mask.shape == warm_mask.shape == photo.shape[:2]
        assert np.abs(cold_mask.astype(int) - warm_mask.astype(int)).max() <= 1
        assert np.abs(cold_mask.astype(int) - early_mask.astype(int)).mean() < 1

"""The application in-process on a local Ray: batching under concurrency and live reconfiguration.

Deployed from a config dict exactly as `serve run`/`serve deploy` deploy a config file (`deploy_apps`), because
only that path updates `user_config` in place: `serve.run(app)` treats every call as new code and restarts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

from serve_app.bench.service_process import derive_config
from tests.helpers import alpha_of, distinct_boxes, free_port, post_all
from tests.images import assert_mask_matches, encode, expected_alpha, red_square

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
APP_NAME = "background-removal"
# The tiny config's 256x256 input keeps the edge band small for 320x200 pictures (scale 1.25).
EDGE_MARGIN = 5
PORT = free_port()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield f"http://127.0.0.1:{PORT}"
    serve.shutdown()
    ray.shutdown()


def deploy(tiny_model_dir: Path, batching: dict) -> None:
    config = derive_config(CONFIG, model={"model_id": str(tiny_model_dir)}, batching=batching, port=PORT)
    client = serve_start(http_options=config["http_options"])
    client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP_NAME)
        settled = status is not None and status.status == "RUNNING"
        if settled and all(d.status == "HEALTHY" for d in status.deployments.values()):
            try:
                if info(f"http://127.0.0.1:{PORT}")["batching"] == batching:
                    return
            except (httpx.HTTPError, KeyError):
                pass  # the proxy or the new settings are not there yet
        time.sleep(0.5)
    raise TimeoutError(f"{APP_NAME} did not reach RUNNING with {batching}: {serve.status()}")


def info(base_url: str) -> dict:
    return httpx.get(f"{base_url}/v1/info", timeout=30, trust_env=False).json()["model"]


def histogram_total(histogram: dict[str, int]) -> int:
    return sum(int(size) * count for size, count in histogram.items())


def send_distinct_objects(base_url: str, count: int) -> None:
    """POST `count` pictures at once, each with its object elsewhere, and check every caller's own mask."""
    boxes = distinct_boxes(count)
    responses = post_all(f"{base_url}/v1/remove-background", [encode(red_square(box=box)) for box in boxes])
    for box, response in zip(boxes, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_mask_matches(alpha_of(response), expected_alpha(box=box), EDGE_MARGIN)


def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_mask(base_url: str,
                                                                            tiny_model_dir: Path) -> None:
    deploy(tiny_model_dir, {"max_batch_size": 16, "batch_wait_timeout_s": 0.25})
    before = info(base_url)["batch_size_histogram"]
    send_distinct_objects(base_url, 32)
    after = info(base_url)["batch_size_histogram"]
    assert histogram_total(after) - histogram_total(before) == 32
    assert max(int(size) for size in after) > 1, f"no batch larger than 1: {after}"
    assert max(int(size) for size in after) <= 16


def test_reconfigure_changes_max_batch_size_without_restart(base_url: str, tiny_model_dir: Path) -> None:
    deploy(tiny_model_dir, {"max_batch_size": 16, "batch_wait_timeout_s": 0.25})
    first = info(base_url)
    deploy(tiny_model_dir, {"max_batch_size": 2, "batch_wait_timeout_s": 0.25})
    second = info(base_url)
    assert second["replica_pid"] == first["replica_pid"], "the replica was restarted, not reconfigured"
    assert second["batching"] == {"max_batch_size": 2, "batch_wait_timeout_s": 0.25}

    send_distinct_objects(base_url, 32)
    after = info(base_url)["batch_size_histogram"]
    new_batches = {int(size): count - int(first["batch_size_histogram"].get(size, 0))
                   for size, count in after.items()}
    grown = {size for size, count in new_batches.items() if count > 0}
    assert grown and max(grown) == 2, f"batches after reconfigure: {new_batches}"

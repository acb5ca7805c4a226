"""A request that misses its deadline gets a JSON 504, and the service keeps answering afterwards."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.images import encode, red_square
from tests.integration.deployment import deploy


def test_missed_deadline_is_a_json_504(base_url: str, tiny_model_dir: Path) -> None:
    # A 1 ms deadline cannot be met (the model alone waits 10 ms for batch-mates).
    deploy(tiny_model_dir, {"max_batch_size": 4, "batch_wait_timeout_s": 0.01}, {"request_timeout_s": 0.001})
    url = f"{base_url}/v1/remove-background"
    response = httpx.post(url, content=encode(red_square()), headers={"Content-Type": "image/png"},
                          trust_env=False, timeout=60)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert httpx.get(f"{base_url}/readyz", trust_env=False, timeout=30).status_code == 200

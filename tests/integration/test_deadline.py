"""A request that misses its deadline gets a JSON 504, and the service keeps answering afterwards; remove.bg's
background picture is decoded within the same deadline."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
from PIL import Image

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


def test_a_background_picture_that_takes_longer_to_decode_than_the_deadline_is_a_504(base_url: str,
                                                                                    tiny_model_dir: Path) -> None:
    # A 100 x 490,000 PNG (49 MP) takes over a second to decode, and a second counts as much in the background as in
    # the photo: the request's deadline covers both. The small photo's own steps, the background's small part that
    # the answer shows included, take a fraction of the 0.6 s.
    deploy(tiny_model_dir, {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}, {"request_timeout_s": 0.6})
    y, x = np.mgrid[0:490_000, 0:100]
    background = encode(Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)),
                        compress_level=1)
    files = {"image_file": ("photo.png", encode(red_square())), "bg_image_file": ("background.png", background)}
    response = httpx.post(f"{base_url}/v1.0/removebg", files=files, trust_env=False, timeout=60)
    assert response.status_code == 504
    assert response.json()["errors"][0]["code"] == "deadline_exceeded"
    assert httpx.get(f"{base_url}/readyz", trust_env=False, timeout=30).status_code == 200

"""max_upload_bytes holds on every route that takes an image: the native body, rembg's and remove.bg's file
uploads, and remove.bg's base64 field, whose form may be larger than the image it carries."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.images import encode, red_square
from tests.integration.deployment import deploy

LIMIT = 100_000


def post(url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(url, trust_env=False, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_every_route_refuses_an_image_over_the_limit_and_takes_one_under_it(base_url: str,
                                                                             tiny_model_dir: Path) -> None:
    deploy(tiny_model_dir, {"max_batch_size": 4, "batch_wait_timeout_s": 0.01}, {"max_upload_bytes": LIMIT})
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    large, small = encode(Image.fromarray(noise)), encode(red_square())
    assert len(large) > LIMIT > len(small)

    native = post(f"{base_url}/v1/remove-background", content=large, headers={"Content-Type": "image/png"})
    assert native.status_code == 413 and native.json()["error"]["code"] == "payload_too_large", native.text
    rembg = post(f"{base_url}/api/remove", files={"file": ("in.png", large, "image/png")})
    assert rembg.status_code == 413 and "limit" in rembg.json()["detail"], rembg.text
    for field in ({"files": {"image_file": ("in.png", large, "image/png")}},
                  {"data": {"image_file_b64": base64.b64encode(large).decode()}},
                  {"json": {"image_file_b64": base64.b64encode(large).decode()}}):
        refused = post(f"{base_url}/v1.0/removebg", **field)
        assert refused.status_code == 400, (list(field), refused.text)
        assert refused.json()["errors"][0]["code"] == "payload_too_large", (list(field), refused.text)

    taken = post(f"{base_url}/v1.0/removebg", json={"image_file_b64": base64.b64encode(small).decode()})
    assert taken.status_code == 200 and taken.headers["content-type"] == "image/png", taken.text
    taken = post(f"{base_url}/v1/remove-background", content=small, headers={"Content-Type": "image/png"})
    assert taken.status_code == 200, taken.text

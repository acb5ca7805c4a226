"""device_jpeg_decode: when_idle on the in-process service: a lone JPEG's model copy is decoded by the model
replica beside the ingress's own decode; under concurrency, and when the replica cannot decode, pixels go."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_app import imaging
from serve_app.timing import parse_server_timing
from tests.helpers import alpha_of, distinct_boxes, post_all
from tests.images import assert_mask_matches, encode, expected_alpha, red_square
from tests.integration.deployment import EDGE_MARGIN, deploy

ROUTE = "/v1/remove-background"


# With a batch wait, a lone JPEG's decode and pass go through @serve.batch and the device queue; without one, a
# request that finds the device idle is decoded and run in one trip to the model thread (DeviceQueue.run_alone).
@pytest.fixture(scope="module", params=[0.25, 0.0], ids=["batch_wait", "no_batch_wait"])
def service(request: pytest.FixtureRequest, base_url: str, tiny_model_dir: Path) -> str:
    deploy(tiny_model_dir, {"max_batch_size": 16, "batch_wait_timeout_s": request.param},
           ingress={"device_jpeg_decode": "when_idle"})
    return base_url


def post_jpeg(base_url: str, body: bytes) -> httpx.Response:
    response = httpx.post(f"{base_url}{ROUTE}", content=body, headers={"Content-Type": "image/jpeg"}, timeout=60,
                          trust_env=False)
    assert response.status_code == 200, response.text
    assert_mask_matches(alpha_of(response), expected_alpha(), EDGE_MARGIN)
    return response


def test_a_lone_jpeg_is_decoded_by_the_model_replica_beside_the_ingress(service: str) -> None:
    body = encode(red_square(), "JPEG", quality=90)
    for _ in range(2):  # the second at the latest: the first answer shows the device idle (one ingress replica)
        response = post_jpeg(service, body)
    stages = parse_server_timing(response.headers["Server-Timing"])
    expected = {"model_cpu_decode", "model_device_decode", "model_queue", "model_batch", "model_transport"}
    assert expected <= stages.keys(), stages
    assert "decode" not in stages  # the CPU decode ran beside the model call, not before it
    # The colours returned are the ingress's own decode of the upload, whatever decoder the model used (black
    # where the cut-out is fully transparent).
    cutout = np.asarray(Image.open(io.BytesIO(response.content)))
    colours = imaging.decode_image(body, max_pixels=10**8).rgb
    np.testing.assert_array_equal(cutout[..., :3], np.where(cutout[..., 3:] == 0, 0, colours))


def test_a_jpeg_the_model_replica_cannot_decode_is_sent_again_as_pixels(service: str) -> None:
    body = encode(red_square(), "JPEG", quality=75)[:-1]  # half an end-of-image marker: Pillow reads it,
    imaging.decode_image(body, max_pixels=10**8)          # torchvision refuses it (tests/unit/test_device_jpeg.py)
    for _ in range(2):
        response = post_jpeg(service, body)
    stages = parse_server_timing(response.headers["Server-Timing"])
    assert "model_cpu_decode" in stages and stages["model_device_decode"] == 0, stages


def test_under_concurrency_jpegs_go_as_pixels_and_each_caller_gets_its_own_mask(
        service: str, request: pytest.FixtureRequest) -> None:
    boxes = distinct_boxes(16)
    responses = post_all(f"{service}{ROUTE}", [encode(red_square(box=box), "JPEG", quality=95) for box in boxes],
                         content_type="image/jpeg")
    paths = []
    for box, response in zip(boxes, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_mask_matches(alpha_of(response), expected_alpha(box=box), EDGE_MARGIN)
        stages = parse_server_timing(response.headers["Server-Timing"])
        paths.append("device" if "model_device_decode" in stages else "pixels")
    if request.node.callspec.params["service"] > 0:
        # One ingress replica: while it has an image in hand, the next ones go as decoded pixels; the batch wait
        # keeps the first one's pass busy until all have arrived. Without a wait, the last few can find the device
        # idle again and rightly go as files.
        assert paths.count("pixels") >= len(boxes) - 1, paths

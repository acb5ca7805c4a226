"""`serve run` with HAProxy on the HTTP port, switched on as configs/prod.yaml switches it (the controller's
environment in the config, nothing in the shell's): the same routes, the same JSON errors, the same 503 +
Retry-After when the ingress queue is full, and an ingress replica's own port no more open than the HTTP port."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.service_process import ServeProcess, free_port
from serve_app.serve_config import derive_config, with_ingress_proxy
from tests.helpers import TINY_CONFIG, alpha_of, distinct_boxes, post_all, serve_running
from tests.images import assert_mask_matches, encode, expected_alpha, red_square

ROUTE = "/v1/remove-background"
# One ingress replica admits 8 requests and queues this many more: a burst of BURST must see refusals.
QUEUED = 4
BURST = 40
BURST_SIZE = (1000, 700)
# Behind HAProxy, Serve keeps a stopping ingress replica open for this long (30 s by default) so that a load
# balancer can deregister it first. No test here stops a replica under traffic: a short hold saves the wait at
# the module's teardown.
SHORT_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
# The service requires this key, so that the replicas' own ports show they ask for it too.
KEY = "haproxy-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def haproxy_service(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`serve run` on the tiny model with HAProxy in front, and its own Ray, for this module alone."""
    workdir = tmp_path_factory.mktemp("haproxy")
    keys = workdir / "keys.txt"
    keys.write_text(KEY + "\n")
    config = derive_config(TINY_CONFIG, model={"model_id": str(tiny_model_dir)},
                           ingress={"result_dir": str(workdir / "results"), "api_keys_file": str(keys)},
                           port=free_port())
    ingress = next(d for d in config["applications"][0]["deployments"] if d["name"] == "Ingress")
    ingress["max_queued_requests"] = QUEUED
    with serve_running(with_ingress_proxy(config, "haproxy"), workdir, env=SHORT_DRAIN) as process:
        yield process


def test_haproxy_takes_the_port(haproxy_service: ServeProcess) -> None:
    assert "HAProxyManager" in haproxy_service.log_tail(lines=100_000)


def test_cut_out_through_haproxy(haproxy_service: ServeProcess) -> None:
    response = httpx.post(haproxy_service.base_url + ROUTE, content=encode(red_square(), "JPEG", quality=95),
                          headers={"Content-Type": "image/jpeg", **AUTH}, timeout=60, trust_env=False)
    assert response.status_code == 200, response.text
    assert "decode;dur=" in response.headers["server-timing"]
    assert_mask_matches(alpha_of(response), expected_alpha(), margin=6)


def test_errors_stay_json(haproxy_service: ServeProcess) -> None:
    response = httpx.post(haproxy_service.base_url + ROUTE, content=b"<html>not a picture</html>",
                          headers={"Content-Type": "image/png", **AUTH}, timeout=60, trust_env=False)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_full_queue_answers_503_with_retry_after_and_the_rest_are_cut_out(haproxy_service: ServeProcess) -> None:
    boxes = distinct_boxes(BURST, BURST_SIZE)
    bodies = [encode(red_square(BURST_SIZE, box), "JPEG", quality=95) for box in boxes]
    responses = post_all(haproxy_service.base_url + ROUTE, bodies, "image/jpeg", headers=AUTH)
    assert Counter(r.status_code for r in responses).keys() <= {200, 503}, [r.text[:200] for r in responses]
    refused = [r for r in responses if r.status_code == 503]
    assert refused, "a burst of 40 on one replica that admits 8 and queues 4 was never refused"
    assert all(r.headers.get("retry-after") for r in refused)
    margin = int(np.ceil(3 * max(BURST_SIZE) / 256)) + 2  # the tiny config's 256x256 input, resized back
    for response, box in zip(responses, boxes, strict=True):
        if response.status_code == 200:  # each answer is the cut-out of the image it was sent
            assert_mask_matches(alpha_of(response), expected_alpha(BURST_SIZE, box), margin)


def test_a_replica_port_asks_for_the_key_as_the_http_port_does(haproxy_service: ServeProcess) -> None:
    # HAProxy forwards to each ingress replica's own HTTP server, which Ray binds on http_options.host: whoever
    # reaches that port meets the same application, API keys and queue limits as on the HTTP port.
    ports = re.findall(r"Ingress pid=\d+.*Started HTTP server on port (\d+)", haproxy_service.log_tail(lines=100_000))
    assert ports, "no ingress replica started an HTTP server of its own"
    body = encode(red_square(), "JPEG", quality=95)
    for base_url in (haproxy_service.base_url, f"http://127.0.0.1:{ports[0]}"):
        refused = httpx.post(base_url + ROUTE, content=body, headers={"Content-Type": "image/jpeg"}, timeout=60,
                             trust_env=False)
        assert refused.status_code == 401, (base_url, refused.status_code, refused.text[:200])
        assert refused.json()["error"]["code"] == "unauthorized"
        answered = httpx.post(base_url + ROUTE, content=body, headers={"Content-Type": "image/jpeg", **AUTH},
                              timeout=60, trust_env=False)
        assert answered.status_code == 200, (base_url, answered.text[:200])
        assert_mask_matches(alpha_of(answered), expected_alpha(), margin=6)

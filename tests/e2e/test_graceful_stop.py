"""`python -m serve_app.stop` shuts the whole service down without dropping a request in flight.

The requests are held where a naive stop loses them: in the ingress, fetching their URL from a loopback server that
does not answer until the test lets it, with more of them than the ingress admits (max_ongoing_requests 8), so the
rest wait in Serve's proxy. Only once the stop command has fenced new traffic off (503 + Retry-After) does the
server answer; every held request must then reach the model, which the stop must not have deleted yet.

This module starts its own `serve run` (and so its own Ray) and stops only that one, by its GCS address: the
package's shared service keeps running for the other tests, whatever the order they run in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from harness.answers import OK, image_size, judge
from harness.redeploy import ray_instance
from harness.service_process import ServeProcess, free_port
from serve_app.serve_config import derive_config
from tests.helpers import TINY_CONFIG, send_png
from tests.images import distinct_pngs

ROUTE = "/v1/remove-background"
INGRESS_SLOTS = 8  # the Ingress deployment's max_ongoing_requests (one replica in configs/tiny.yaml)
PHOTOS = distinct_pngs(INGRESS_SLOTS + 2, base=(200, 120))  # two more than it admits wait in the proxy
HOLD_BOUND_S = 120.0  # the image server answers by then even if the test never releases it
FENCE_BOUND_S = 90.0  # the stop printed 14 s from start to finish on a 2-core CPU; 90 s flags a hang
STOP_BOUND_S = 180.0
REQUEST_TIMEOUT_S = 240.0
PROBE_TIMEOUT_S = 5.0
HOLD_AFTER_FENCE_S = 5.0
# The held fetches outlast the default fetch timeouts (10 s silence, 30 s total) on a slow machine.
SLOW_FETCHES = {"fetch_read_timeout_s": HOLD_BOUND_S + 30, "fetch_total_timeout_s": HOLD_BOUND_S + 30}


class HeldImages(BaseHTTPRequestHandler):
    """GET /<index>.png answers PHOTOS[index], but only once `release` is set."""

    def __init__(self, *args, release: threading.Event, arrived: list[str], **kwargs):
        self.release, self.arrived = release, arrived
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.arrived.append(self.path)
        self.release.wait(HOLD_BOUND_S)
        send_png(self, PHOTOS[int(self.path.strip("/").removesuffix(".png"))])

    def log_message(self, *_: object) -> None:
        pass


@dataclass
class HeldServer:
    base_url: str
    release: threading.Event
    arrived: list[str]


@pytest.fixture(scope="module")
def held_server() -> Iterator[HeldServer]:
    release, arrived = threading.Event(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(HeldImages, release=release, arrived=arrived))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield HeldServer(f"http://127.0.0.1:{server.server_address[1]}", release, arrived)
    finally:
        release.set()
        server.shutdown()


@pytest.fixture(scope="module")
def own_service(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`serve run` on the tiny model with its own Ray, for this module alone (it gets shut down)."""
    tmp_path = tmp_path_factory.mktemp("graceful_stop")
    config = derive_config(TINY_CONFIG, model={"model_id": str(tiny_model_dir)},
                           ingress={"result_dir": str(tmp_path / "results"), **SLOW_FETCHES}, port=free_port())
    process = ServeProcess(config, tmp_path, tmp_path / "serve.log")
    try:
        process.wait_ready(timeout_s=300)
        yield process
    finally:
        process.stop()  # also after a failed stop: Ctrl-C ends Serve and this process's own Ray


async def fetch_by_url(http: httpx.AsyncClient, base_url: str, image_url: str) -> httpx.Response | str:
    try:
        return await http.get(base_url + ROUTE, params={"url": image_url})
    except httpx.HTTPError as error:
        return f"no answer: {type(error).__name__}"


async def probe(http: httpx.AsyncClient, method: str, url: str, **kwargs: object) -> httpx.Response | None:
    try:  # before the fence, a request waits in the proxy behind the held ones: hence the short timeout
        return await http.request(method, url, timeout=PROBE_TIMEOUT_S, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


def fenced(answer: httpx.Response | None) -> bool:
    """The fence's answer, in any API's shape: 503 (remove.bg's 429) that says the service is shutting down."""
    return answer is not None and answer.status_code in (503, 429) and "shutting down" in answer.text


async def wait_for_fence(http: httpx.AsyncClient, base_url: str, stop: subprocess.Popen) -> dict[str, httpx.Response]:
    """New requests to each API's routes, answered once the stop fenced them all off; fails if it exits or never
    does."""
    photo = {"content": PHOTOS[0], "headers": {"Content-Type": "image/png"}}
    probes = {"work": ("POST", ROUTE, photo), "readyz": ("GET", "/readyz", {}),
              "rembg": ("POST", "/api/remove", {"files": {"file": ("photo.png", PHOTOS[0], "image/png")}}),
              "removebg": ("POST", "/v1.0/removebg", {"files": {"image_file": ("photo.png", PHOTOS[0], "image/png")}})}
    deadline = time.monotonic() + FENCE_BOUND_S
    while time.monotonic() < deadline and stop.poll() is None:
        answers = await asyncio.gather(*(probe(http, method, base_url + path, **kwargs)
                                         for method, path, kwargs in probes.values()))
        if all(fenced(answer) for answer in answers):
            return dict(zip(probes, answers, strict=True))  # type: ignore[arg-type]
        await asyncio.sleep(0.25)
    output = stop.communicate(timeout=60)[0] if stop.poll() is not None else "(still running)"
    raise AssertionError(f"no fence after {FENCE_BOUND_S:.0f} s; stop exit status {stop.poll()}:\n{output}")


def stop_command(address: str) -> dict:
    """Popen / run arguments for the stop command on the Ray at `address`."""
    # `serve run` started its Ray with token authentication, and Ray sends its token to an explicit address only
    # when RAY_AUTH_MODE says so.
    return {"args": [sys.executable, "-m", "serve_app.stop", "--address", address], "text": True,
            "env": {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"},
            "cwd": Path(__file__).resolve().parents[2], "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}


@dataclass
class StopRecord:
    answers: list[httpx.Response | str]
    new_request_answers: dict[str, httpx.Response]
    stop_running_at_release: bool
    stop_status: int
    stop_output: str
    second_stop_status: int
    second_stop_output: str
    port_closed: bool


async def stop_with_requests_held(service: ServeProcess, server: HeldServer) -> StopRecord:
    address = ray_instance(service.port).gcs_address  # this test's own Ray, never the shared service's
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, trust_env=False,
                                 limits=httpx.Limits(max_connections=len(PHOTOS) + 4)) as http:
        held = [asyncio.create_task(fetch_by_url(http, service.base_url, f"{server.base_url}/{index}.png"))
                for index in range(len(PHOTOS))]
        # The ingress admits 8: the first fetches reach the image server, the rest wait in the proxy.
        deadline = time.monotonic() + 60
        while len(server.arrived) < INGRESS_SLOTS and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(server.arrived) == INGRESS_SLOTS, server.arrived
        assert not any(task.done() for task in held), [task.result() for task in held if task.done()]
        stop = subprocess.Popen(**stop_command(address))
        try:
            new_request_answers = await wait_for_fence(http, service.base_url, stop)
            # Longer than the stop needs to see idle replicas and delete them: a stop that did not wait for the
            # requests in flight would now delete the model deployment under the held requests.
            await asyncio.sleep(HOLD_AFTER_FENCE_S)
            stop_running_at_release = stop.poll() is None  # still draining: it waits for the held requests
            server.release.set()
            answers = await asyncio.gather(*held)
            output, _ = await asyncio.to_thread(stop.communicate, timeout=STOP_BOUND_S)
        finally:
            if stop.poll() is None:
                stop.kill()
    port_closed = False
    try:
        httpx.get(f"{service.base_url}/healthz", timeout=5, trust_env=False)
    except httpx.ConnectError:
        port_closed = True
    second = subprocess.run(**stop_command(address), timeout=120, check=False)
    return StopRecord(answers, new_request_answers, stop_running_at_release, stop.returncode, output,
                      second.returncode, second.stdout, port_closed)


@pytest.fixture(scope="module")
def stop_record(own_service: ServeProcess, held_server: HeldServer) -> StopRecord:
    started = time.monotonic()
    record = asyncio.run(stop_with_requests_held(own_service, held_server))
    print(f"stop test took {time.monotonic() - started:.1f} s; stop output:\n{record.stop_output}")
    return record


def test_graceful_stop_finishes_every_request_in_flight(stop_record: StopRecord) -> None:
    outcomes = [judge(answer, image_size(photo)) if isinstance(answer, httpx.Response) else ("failed", answer)
                for photo, answer in zip(PHOTOS, stop_record.answers, strict=True)]
    assert all(outcome == OK for outcome, _ in outcomes), outcomes
    assert stop_record.stop_running_at_release, "the stop did not wait for the requests in flight"
    assert "draining: requests in flight" in stop_record.stop_output, stop_record.stop_output
    assert stop_record.stop_status == 0, stop_record.stop_output
    assert "Serve is shut down" in stop_record.stop_output, stop_record.stop_output


def test_new_requests_during_the_stop_get_503_with_retry_after(stop_record: StopRecord) -> None:
    answers = stop_record.new_request_answers
    for route, answer in answers.items():
        assert answer.headers.get("retry-after", "").isdigit(), (route, answer.headers)
    for route in ("work", "readyz"):
        assert answers[route].status_code == 503, (route, answers[route].text)
        assert answers[route].json()["error"]["code"] == "shutting_down", (route, answers[route].text)
    # Each compatible API in its own shape: rembg's FastAPI `detail`, remove.bg's 429, which its clients retry.
    assert answers["rembg"].status_code == 503 and "shutting down" in answers["rembg"].json()["detail"]
    assert answers["removebg"].status_code == 429, answers["removebg"].text
    assert answers["removebg"].json()["errors"][0]["code"] == "rate_limit_exceeded", answers["removebg"].text


def test_serve_is_gone_afterwards(stop_record: StopRecord) -> None:
    assert stop_record.port_closed, "the HTTP port still answers after the stop"
    assert stop_record.second_stop_status == 1, stop_record.second_stop_output
    assert "no Serve instance runs" in stop_record.second_stop_output, stop_record.second_stop_output

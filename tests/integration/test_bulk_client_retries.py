"""The bulk client against a loopback server that answers 503, 500 or 422 (retries, then success or a failure),
drops connections, is not ready yet, asks for an API key, or is not there at all (the run stops at once, nothing
recorded as failed)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.service_process import free_port
from serve_app.bulk.client import ClientSettings, ServiceUnusable, run_client
from serve_app.bulk.layout import Layout, RunStopped
from serve_app.options import OutputOptions
from tests.images import encode, red_square

PNG = encode(red_square())


class ScriptedService(BaseHTTPRequestHandler):
    """Answers each request with the next status of `script` (then 200 with a PNG; 0 closes the connection
    unanswered), and GET /readyz with the next of `readiness` (then 200). With `key`, a POST (and without
    `open_readyz`, a GET) without `Authorization: Bearer <key>` gets 401 whatever the scripts say."""

    script: list[int] = []
    seen: list[int] = []
    readiness: list[int] = []
    key: str | None = None
    open_readyz = True  # as the service's: /readyz answers without a key

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/readyz":  # the service's own 404, in its error shape
            status, body = 404, json.dumps({"error": {"code": "not_found", "message": "Not Found"}}).encode()
        elif (self.key is not None and not self.open_readyz
              and self.headers.get("authorization") != f"Bearer {self.key}"):
            status, body = 401, json.dumps({"error": {"code": "unauthorized", "message": "scripted 401"}}).encode()
        else:  # 503 as the ingress answers before its model; anything else as a proxy does, in plain text
            status = self.readiness.pop(0) if self.readiness else 200
            body = (json.dumps({"status": "ready"}) if status == 200 else
                    json.dumps({"error": {"code": "not_ready", "message": "model deployment not ready"}})
                    if status == 503 else f"Path '/readyz' not found (scripted {status})").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.key is not None and self.headers.get("authorization") != f"Bearer {self.key}":
            status = 401
        else:
            status = self.script.pop(0) if self.script else 200
        self.seen.append(status)
        if status == 0:  # the connection closed with no answer, as a replica killed mid-request leaves it
            self.close_connection = True
            return
        code = {503: "overloaded", 401: "unauthorized"}.get(status, "x")
        body = PNG if status == 200 else json.dumps({"error": {"code": code,
                                                               "message": f"scripted {status}"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "image/png" if status == 200 else "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ScriptedService.script, ScriptedService.seen, ScriptedService.readiness, ScriptedService.key = [], [], [], None
    ScriptedService.open_readyz = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.jpg").write_bytes(encode(red_square(), "JPEG"))
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()


def run(url: str, root: Path, retries: int = 3, **settings: object) -> dict:
    client = ClientSettings(url=url, concurrency=1, max_retries=retries, backoff_s=0.01, timeout_s=10,
                            ready_poll_s=0.01, **settings)  # type: ignore[arg-type]
    return asyncio.run(run_client(Layout(str(root / "in"), str(root / "out"), "png"), OutputOptions(), client))


def test_503s_and_500s_are_retried_until_the_image_succeeds(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.script = [503, 503, 500]
    summary = run(url, root)
    assert ScriptedService.seen == [503, 503, 500, 200]
    assert summary["processed_this_run"] == 1 and summary["failed"] == 0
    assert (root / "out" / "one.png").read_bytes() == PNG


def test_retries_are_bounded(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.script = [503] * 10
    summary = run(url, root, retries=2)
    assert ScriptedService.seen == [503, 503, 503]
    assert summary["failed"] == 1 and not (root / "out" / "one.png").exists()
    (failure,) = [json.loads(line) for line in (root / "out" / "_failures.jsonl").read_text().splitlines()]
    assert failure["input"] == "one.jpg" and failure["code"] == "retries_exhausted"


def test_client_errors_are_not_retried(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.script = [422]
    summary = run(url, root)
    assert ScriptedService.seen == [422]
    (failure,) = [json.loads(line) for line in (root / "out" / "_failures.jsonl").read_text().splitlines()]
    assert failure["code"] == "x" and failure["reason"] == "scripted 422"
    assert summary["failed"] == 1


def test_a_dropped_connection_is_retried(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.script = [0, 0]
    summary = run(url, root)
    assert ScriptedService.seen == [0, 0, 200]
    assert summary["failed"] == 0 and (root / "out" / "one.png").read_bytes() == PNG


def test_connections_dropped_every_time_are_recorded_as_a_failure(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.script = [0] * 10
    summary = run(url, root, retries=2)
    assert summary["failed"] == 1 and not (root / "out" / "one.png").exists()
    (failure,) = [json.loads(line) for line in (root / "out" / "_failures.jsonl").read_text().splitlines()]
    assert failure["code"] == "retries_exhausted" and "3 attempts" in failure["reason"]
    assert "Disconnected" in failure["reason"]  # the connection's error, named


def test_nothing_listening_stops_the_run_before_the_first_image(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.jpg").write_bytes(encode(red_square(), "JPEG"))
    started = time.monotonic()
    refused = rf"at http://127.0.0.1:{port} is not ready after 0.3 s \(Client.*Connect"
    with pytest.raises(ServiceUnusable, match=refused):
        run(f"http://127.0.0.1:{port}", tmp_path, retries=5, ready_wait_s=0.3)
    assert time.monotonic() - started < 5  # not after every image's retries
    assert not (tmp_path / "out" / "_failures.jsonl").exists() and not (tmp_path / "out" / "one.png").exists()


def test_a_starting_service_is_waited_for(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.readiness = [503, 503]
    summary = run(url, root)
    assert summary["failed"] == 0 and (root / "out" / "one.png").read_bytes() == PNG
    assert ScriptedService.readiness == []  # both 503s were read before the image was sent


def test_a_service_that_never_turns_ready_stops_the_run(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.readiness = [503] * 1000
    with pytest.raises(ServiceUnusable, match=r"is not ready after 0.2 s \(model deployment not ready\)"):
        run(url, root, ready_wait_s=0.2)
    assert ScriptedService.seen == []  # no image was sent


def test_a_url_that_is_not_the_service_stops_the_run(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    started = time.monotonic()
    with pytest.raises(ServiceUnusable, match="/v1/readyz is not the service's readiness check.*base URL"):
        run(url + "/v1", root)  # at once, not after --wait-ready
    assert time.monotonic() - started < 5 and ScriptedService.seen == []


def test_a_service_still_starting_behind_its_proxy_is_waited_for(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.readiness = [404, 500, 503]  # Serve's proxy before the routes, HAProxy before a replica, the model
    summary = run(url, root)
    assert summary["failed"] == 0 and (root / "out" / "one.png").read_bytes() == PNG
    assert ScriptedService.readiness == []


def test_a_service_lost_mid_run_stops_the_run_and_leaves_the_images_pending(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    (root / "in" / "two.jpg").write_bytes(encode(red_square(), "JPEG"))
    ScriptedService.script = [0] * 100  # every image's connection drops
    ScriptedService.readiness = [200] + [500] * 1000  # ready at the start, then gone
    with pytest.raises(ServiceUnusable, match="is not ready after 0.2 s"):
        run(url, root, retries=1, ready_wait_s=0.2)
    assert ScriptedService.seen == [0, 0]  # the first image's two attempts; the second never sent
    summary = json.loads((root / "out" / "_summary.json").read_text())
    assert summary["failed"] == 0 and summary["processed_this_run"] == 0


def test_a_service_back_after_an_outage_gets_the_image_again(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.script = [0, 0]  # dropped while the service restarts, then answered
    ScriptedService.readiness = [200, 503, 503]  # ready at the start, starting again when asked after the drops
    summary = run(url, root, retries=1)
    assert ScriptedService.seen == [0, 0, 200]
    assert summary["failed"] == 0 and (root / "out" / "one.png").read_bytes() == PNG


def test_a_refused_key_at_the_readiness_check_stops_the_run(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.key, ScriptedService.open_readyz = "s3cret", False  # a proxy in front that guards every path
    with pytest.raises(ServiceUnusable, match="the service refused the API key given: scripted 401"):
        run(url, root, api_key="wrong")
    assert ScriptedService.seen == []


def test_the_api_key_is_sent(scripted: tuple[str, Path]) -> None:
    url, root = scripted
    ScriptedService.key = "s3cret"
    summary = run(url, root, api_key="s3cret")
    assert ScriptedService.seen == [200] and summary["failed"] == 0


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_refused_api_key_stops_the_run_and_leaves_the_images_pending(scripted: tuple[str, Path],
                                                                      key: str | None) -> None:
    url, root = scripted
    for name in ("two", "three"):
        (root / "in" / f"{name}.jpg").write_bytes(encode(red_square(), "JPEG"))
    ScriptedService.key = "s3cret"
    refused = "the service refused (the API key given|to answer without).*scripted 401"
    with pytest.raises(ServiceUnusable, match=refused):
        run(url, root, api_key=key)
    assert ScriptedService.seen == [401]  # one refusal, not one per image
    summary = json.loads((root / "out" / "_summary.json").read_text())
    assert summary["failed"] == 0 and summary["processed_this_run"] == 0
    assert not (root / "out" / "_failures.jsonl").exists() or not (root / "out" / "_failures.jsonl").read_text()
    ScriptedService.key = None  # the next run, with the key right, does all three
    assert run(url, root)["processed_this_run"] == 3


def test_a_full_output_stops_the_run_and_leaves_the_images_pending(scripted: tuple[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from serve_app.bulk import client

    url, root = scripted
    for name in ("two", "three"):
        (root / "in" / f"{name}.jpg").write_bytes(encode(red_square(), "JPEG"))
    write = client.write_atomically

    def full_after_one(target: str, data: bytes, **kwargs: object) -> None:
        if list((root / "out").glob("*.png")):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(target, data, **kwargs)

    monkeypatch.setattr(client, "write_atomically", full_after_one)
    with pytest.raises(RunStopped, match="OUTPUT cannot be written .*No space left on device.*run the same command"):
        run(url, root)
    assert ScriptedService.seen == [200, 200]  # the second image's answer could not be written; the third not sent
    summary = json.loads((root / "out" / "_summary.json").read_text())
    assert summary["failed"] == 0 and summary["processed_this_run"] == 1
    monkeypatch.setattr(client, "write_atomically", write)  # space again: the next run does the other two
    assert run(url, root)["processed_this_run"] == 2

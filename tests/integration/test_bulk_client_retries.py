"""The bulk client against a loopback server that answers 503, 500 or 422: retries, then success or a failure."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serve_app.bulk.client import ClientSettings, run_client
from serve_app.bulk.layout import Layout
from serve_app.options import OutputOptions
from tests.images import encode, red_square

PNG = encode(red_square())


class ScriptedService(BaseHTTPRequestHandler):
    """Answers each request with the next status of `script` (then 200 with a PNG)."""

    script: list[int] = []
    seen: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", 0)))
        status = self.script.pop(0) if self.script else 200
        self.seen.append(status)
        body = PNG if status == 200 else json.dumps({"error": {"code": "overloaded" if status == 503 else "x",
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
    ScriptedService.script, ScriptedService.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.jpg").write_bytes(encode(red_square(), "JPEG"))
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()


def run(url: str, root: Path, retries: int = 3) -> dict:
    settings = ClientSettings(url=url, concurrency=1, max_retries=retries, backoff_s=0.01, timeout_s=10)
    return asyncio.run(run_client(Layout(str(root / "in"), str(root / "out"), "png"), OutputOptions(), settings))


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


def test_a_refused_connection_is_retried_then_recorded(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port that nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.jpg").write_bytes(encode(red_square(), "JPEG"))
    summary = run(f"http://127.0.0.1:{port}", tmp_path, retries=2)
    assert summary["failed"] == 1 and not (tmp_path / "out" / "one.png").exists()
    (failure,) = [json.loads(line) for line in (tmp_path / "out" / "_failures.jsonl").read_text().splitlines()]
    assert failure["code"] == "retries_exhausted" and "3 attempts" in failure["reason"]
    assert "Connect" in failure["reason"]  # the connection's error, named

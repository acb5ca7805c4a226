"""Small helpers for the integration and e2e tiers: free ports, a loopback file server, concurrent HTTP calls."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from harness.service_process import ServeProcess

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def send_png(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Answer the request being handled with 200 and `body` as image/png."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class ImageHandler(SimpleHTTPRequestHandler):
    """Static files, plus /redirect/<name> answering 302 to /<name>."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + self.path.removeprefix("/redirect/"))
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set for the block (and for the processes started in it), then as it was."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT serving the files under `root` (loopback only), until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(ImageHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


async def post_images_concurrently(url: str, bodies: list[bytes], content_type: str = "image/png",
                                   timeout_s: float = 120, headers: dict[str, str] | None = None,
                                   ) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False,
                                 limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(
            *(client.post(url, content=body, headers={"Content-Type": content_type, **(headers or {})})
              for body in bodies))


def post_all(url: str, bodies: list[bytes], content_type: str = "image/png",
             headers: dict[str, str] | None = None) -> list[httpx.Response]:
    return asyncio.run(post_images_concurrently(url, bodies, content_type, headers=headers))


def alpha_of(response: httpx.Response) -> np.ndarray:
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.mode == "RGBA", (image.format, image.mode)
    return np.asarray(image)[..., 3]


def distinct_boxes(count: int, size: tuple[int, int] = (320, 200)) -> list[tuple[int, int, int, int]]:
    """`count` non-overlapping-enough object boxes, so that a mask sent to the wrong caller shows."""
    boxes = []
    for index in range(count):
        left = 10 + (index % 8) * 37
        top = 10 + (index // 8) * 45
        boxes.append((left, top, left + 30, top + 35))
    assert all(b[2] <= size[0] and b[3] <= size[1] for b in boxes)
    return boxes


@contextlib.contextmanager
def serve_running(config: dict, workdir: Path, env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """`serve run` of `config` in `workdir` (its log there), ready, then stopped after the block."""
    process = ServeProcess(config, workdir, workdir / "serve.log", env=env)
    try:
        process.wait_ready(timeout_s=300)
        yield process
    finally:
        process.stop()


def triton_interpreter_results(code: str) -> dict:
    """Run `code` in a child Python under Triton's interpreter (kernels on the CPU) and return the JSON object its
    last line prints. A child, because the interpreter is chosen before triton is imported."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TRITON_INTERPRET": "1",
                                 "PYTHONPATH": os.pathsep.join(str(Path(__file__).resolve().parents[1] / part)
                                                               for part in ("", "scripts"))})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])

"""max_upload_bytes holds on every route that takes an image: the native body, rembg's and remove.bg's file
uploads, and remove.bg's base64 field, whose form may be larger than the image it carries; and a body that does not
stops arriving for upload_read_timeout_s is a 408."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

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


def answer_to_a_stalled_upload(base_url: str, path: str, content_type: str, first_bytes: bytes) -> tuple[bytes, float]:
    """Send the headers and the first bytes of a 100 kB body, then nothing: the answer, and how long it took."""
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=20) as client:
        client.sendall(f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}\r\n"
                       f"Content-Length: 100000\r\n\r\n".encode() + first_bytes)
        started, answer = time.monotonic(), b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith((b"}", b"]")):
            chunk = client.recv(65536)  # within the socket's 20 s
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - started


def test_a_body_that_stalls_is_answered_408_on_the_native_and_the_form_routes(base_url: str,
                                                                              tiny_model_dir: Path) -> None:
    # A client that trickles its upload would otherwise hold one of the replica's request slots for as long as it
    # likes; a few hundred such clients would hold them all.
    deploy(tiny_model_dir, {"max_batch_size": 4, "batch_wait_timeout_s": 0.01}, {"upload_read_timeout_s": 1.0})
    native, took = answer_to_a_stalled_upload(base_url, "/v1/remove-background", "image/png", b"\x89PNG")
    assert native.startswith(b"HTTP/1.1 408"), native[:300]
    assert b"request_timeout" in native and took < 10, (native[-300:], took)
    boundary = "x" * 16
    rembg, took = answer_to_a_stalled_upload(base_url, "/api/remove", f"multipart/form-data; boundary={boundary}",
                                             f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                                             f"filename=\"in.png\"\r\n\r\n".encode())
    assert rembg.startswith(b"HTTP/1.1 408") and took < 10, rembg[:300]
    assert post(f"{base_url}/v1/remove-background", content=encode(red_square()),
                headers={"Content-Type": "image/png"}).status_code == 200

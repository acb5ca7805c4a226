"""Bodies read with a size cap: a form upload with no declared length (chunked) stops at the limit instead of being
spooled whole, and is refused with a 413."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from serve_app.capped_read import capped_request, read_capped
from serve_app.errors import PayloadTooLarge, RequestTimeout

BOUNDARY = "x7bound"
CHUNK = 64 * 1024


def chunked_form(total_chunks: int, sent: list[int]) -> Request:
    """A multipart request with no Content-Length whose file part is `total_chunks` chunks of 64 KiB; `sent`
    counts the chunks the server took."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    chunks = [head] + [b"\x00" * CHUNK] * total_chunks + [f"\r\n--{BOUNDARY}--\r\n".encode()]

    async def receive() -> dict:
        index = len(sent)
        sent.append(index)
        return {"type": "http.request", "body": chunks[index], "more_body": index + 1 < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]}
    return Request(scope, receive)


def read_form(request: Request, max_part_size: int):
    async def read():
        return await request.form(max_part_size=max_part_size)
    return asyncio.run(read())


def test_a_chunked_form_over_the_limit_is_refused_once_the_limit_has_arrived() -> None:
    sent: list[int] = []
    request = capped_request(chunked_form(1000, sent), limit=10 * CHUNK, what="the body")  # a 64 MB upload
    with pytest.raises(PayloadTooLarge, match="the body is larger than the limit of 655360 bytes"):
        read_form(request, 20 * CHUNK)
    assert len(sent) <= 12  # the head and 10 chunks, then the one that crossed the limit


def test_a_chunked_form_within_the_limit_is_read_whole() -> None:
    sent: list[int] = []
    request = capped_request(chunked_form(5, sent), limit=10 * CHUNK, what="the body")
    form = read_form(request, 20 * CHUNK)
    upload = form["file"]
    assert upload.filename == "a.png" and upload.size == 5 * CHUNK


def test_a_body_that_keeps_coming_slowly_is_read_and_one_that_stops_is_a_408_closing_the_connection() -> None:
    async def chunks(pauses: list[float]):
        for pause in pauses:
            await asyncio.sleep(pause)
            yield b"x" * 10

    async def run() -> None:
        # Five chunks 0.1 s apart take longer than one silence allowed (0.3 s) in all, and are all read.
        body = await read_capped(chunks([0.1] * 5), limit=1000, declared_length=None, what="the body",
                                 idle_timeout_s=0.3)
        assert body == b"x" * 50
        with pytest.raises(RequestTimeout) as stopped:
            await read_capped(chunks([0.0, 0.0, 5.0]), limit=1000, declared_length=None, what="the body",
                              idle_timeout_s=0.3)
        assert stopped.value.status == 408 and stopped.value.headers == {"Connection": "close"}
        assert "the body stopped arriving" in stopped.value.message

    asyncio.run(run())

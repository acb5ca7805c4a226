"""A fetched image's body is read within the upload limit however the host encodes it: a few hundred bytes of
stacked gzip inflate to gigabytes, and must not be inflated whole before the limit is checked."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib

import httpx
import pytest

from serve_app.capped_read import read_capped
from serve_app.errors import PayloadTooLarge, UpstreamError
from serve_app.url_fetch import decoded_body

LIMIT = 1 << 20


def body(content: bytes, encoding: str | None = None, limit: int = LIMIT) -> bytes:
    headers = {"content-encoding": encoding} if encoding else {}
    response = httpx.Response(200, headers=headers, stream=httpx.ByteStream(content))  # unread, as when fetched
    return asyncio.run(read_capped(decoded_body(response), limit=limit, declared_length=None, what="the image"))


def test_plain_and_one_gzip_or_deflate_layer_give_the_image() -> None:
    image = bytes(range(256)) * 1000
    assert body(image) == image
    assert body(image, "identity") == image
    assert body(gzip.compress(image), "gzip") == image
    assert body(zlib.compress(image), "deflate") == image
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert body(raw.compress(image) + raw.flush(), "deflate") == image  # without zlib's header, as some hosts send


def test_a_gzip_bomb_stops_at_the_limit_without_inflating_whole() -> None:
    bomb = gzip.compress(bytes(200 << 20))  # 200 MiB of zeros in about 200 KB
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            body(bomb, "gzip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * LIMIT, peak


@pytest.mark.parametrize("encoding", ["gzip, gzip", "deflate, gzip", "br", "zstd", "compress"])
def test_stacked_or_other_encodings_are_refused(encoding: str) -> None:
    with pytest.raises(UpstreamError, match="encoded as"):
        body(gzip.compress(gzip.compress(bytes(1000))), encoding)


def test_a_corrupt_gzip_body_is_the_hosts_error() -> None:
    with pytest.raises(UpstreamError, match="corrupt"):
        body(b"\x1f\x8b\x08\x00not gzip at all", "gzip")


def test_bytes_after_the_stream_are_left_and_a_stream_cut_short_is_the_hosts_error() -> None:
    image = bytes(3 << 20)  # inflated in several steps: the stream ends in a step that still has input left
    packed = gzip.compress(image)
    # A trailing newline once made the decoder loop forever on its last step, with the event loop held.
    assert body(packed + b"\n", "gzip", limit=8 << 20) == image
    assert body(packed + gzip.compress(b"second member"), "gzip", limit=8 << 20) == image
    with pytest.raises(UpstreamError, match="cut short"):
        body(packed[: len(packed) // 2], "gzip", limit=8 << 20)


@pytest.mark.parametrize("label", ["binary", "aws-chunked", "utf-8", "none"])
def test_labels_that_are_no_compression_are_taken_as_none(label: str) -> None:
    assert body(b"\x89PNG image bytes", label) == b"\x89PNG image bytes"

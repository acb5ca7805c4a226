"""Reading a byte stream (a request's body, a fetched image) with a size cap, checked against the declared length
first and then as it arrives, and for a request's body with a limit on the silence between its chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Message

from serve_app.errors import PayloadTooLarge, RequestTimeout

T = TypeVar("T")


async def read_capped(chunks: AsyncIterator[bytes], *, limit: int, declared_length: str | None, what: str,
                      idle_timeout_s: float | None = None) -> bytes:
    """All of `chunks`, or PayloadTooLarge (413) naming `what` as soon as more than `limit` bytes are due, or
    RequestTimeout (408) when no chunk comes for `idle_timeout_s` (None: no limit)."""
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise PayloadTooLarge(f"{what} is {declared_length} bytes; the limit is {limit}")
    parts: list[bytes] = []
    received = 0
    iterator = aiter(chunks)
    while True:
        try:
            chunk = await within_silence(anext(iterator), idle_timeout_s, what)
        except StopAsyncIteration:
            return b"".join(parts)
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"{what} is larger than the limit of {limit} bytes")
        parts.append(chunk)


def capped_request(request: Request, *, limit: int, what: str, idle_timeout_s: float | None = None) -> Request:
    """`request` as a copy whose body, however a parser reads it, ends in PayloadTooLarge (413) naming `what` as
    soon as more than `limit` bytes have arrived, or in RequestTimeout (408) when nothing arrives for
    `idle_timeout_s`: for parsers that read the whole body themselves, such as Starlette's form parser, when the
    client declared no length (a chunked upload)."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await within_silence(request.receive(), idle_timeout_s, what)
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"{what} is larger than the limit of {limit} bytes")
        return message

    return Request(request.scope, receive)


async def within_silence(step: Awaitable[T], idle_timeout_s: float | None, what: str) -> T:
    """`step`, or RequestTimeout (408, the connection closed after it) when it takes longer than `idle_timeout_s`:
    a client that stops sending would otherwise hold its request slot for as long as it likes."""
    timer = asyncio.timeout(idle_timeout_s)
    try:
        async with timer:
            return await step
    except TimeoutError:
        if not timer.expired():
            raise
        raise RequestTimeout(f"{what} stopped arriving: nothing came for {idle_timeout_s:g} s",
                             headers={"Connection": "close"}) from None

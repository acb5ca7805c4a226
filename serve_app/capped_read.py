"""Reading a byte stream with a size cap, checked against the declared length first and then as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.types import Message

from serve_app.errors import PayloadTooLarge


async def read_capped(chunks: AsyncIterator[bytes], *, limit: int, declared_length: str | None, what: str) -> bytes:
    """All of `chunks`, or PayloadTooLarge (413) naming `what` as soon as more than `limit` bytes are due."""
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise PayloadTooLarge(f"{what} is {declared_length} bytes; the limit is {limit}")
    parts, received = [], 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"{what} is larger than the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def capped_request(request: Request, *, limit: int, what: str) -> Request:
    """`request` as a copy whose body, however a parser reads it, ends in PayloadTooLarge (413) naming `what` as
    soon as more than `limit` bytes have arrived: for parsers that read the whole body themselves, such as
    Starlette's form parser, when the client declared no length (a chunked upload)."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"{what} is larger than the limit of {limit} bytes")
        return message

    return Request(request.scope, receive)

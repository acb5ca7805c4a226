"""Reading a byte stream with a size cap, checked against the declared length first and then as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator

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

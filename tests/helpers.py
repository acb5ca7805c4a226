"""Small helpers for the integration and e2e tiers: free ports and concurrent HTTP calls."""

from __future__ import annotations

import asyncio
import io
import socket

import httpx
import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def post_images_concurrently(url: str, bodies: list[bytes], content_type: str = "image/png",
                                   timeout_s: float = 120) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False,
                                 limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(
            *(client.post(url, content=body, headers={"Content-Type": content_type}) for body in bodies))


def post_all(url: str, bodies: list[bytes], content_type: str = "image/png") -> list[httpx.Response]:
    return asyncio.run(post_images_concurrently(url, bodies, content_type))


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

"""The ingress runs a request's independent steps at once (remove.bg's photo and background fetches): both finish
in the time of the slower one, and a failure of one cancels the other instead of leaving its fetch running. The
URLs of /batch requests share one limit per replica, however many batches it holds."""

from __future__ import annotations

import asyncio
import json
from types import MethodType, SimpleNamespace

import pytest

from serve_app import compose
from serve_app.deployments.ingress import Ingress, gather_or_cancel
from serve_app.errors import UpstreamError


def test_steps_run_at_once_and_give_their_results_in_order() -> None:
    async def run() -> list:
        second_started = asyncio.Event()

        async def first() -> str:
            await second_started.wait()  # run one after the other, this would wait forever
            return "photo"

        async def second() -> str:
            second_started.set()
            return "background"

        return await asyncio.wait_for(gather_or_cancel(first(), second()), timeout=5)

    assert asyncio.run(run()) == ["photo", "background"]


def test_a_failing_step_cancels_the_other() -> None:
    async def run() -> bool:
        cancelled = asyncio.Event()

        async def slow_fetch() -> bytes:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b""

        async def refused_fetch() -> bytes:
            await asyncio.sleep(0.01)
            raise UpstreamError("the background's host answered 404")

        with pytest.raises(UpstreamError, match="404"):
            await asyncio.wait_for(gather_or_cancel(slow_fetch(), refused_fetch()), timeout=5)
        await asyncio.wait_for(cancelled.wait(), timeout=5)
        return cancelled.is_set()

    assert asyncio.run(run())


def test_batch_requests_on_one_replica_share_its_limit_of_urls_in_flight() -> None:
    # Each URL holds its photo from the fetch to the encode: two batches of 10 on a replica whose limit is 3 never
    # hold more than 3 photos at once (a limit per batch would let them hold 6), and every URL still comes back.
    in_flight, most = 0, 0

    async def fetch(url: str) -> bytes:
        return url.encode()

    async def cut_out(data: bytes, _options: object) -> compose.Rendered:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return compose.Rendered(data, "image/png", 4, 3, None)

    async def in_pool(function, *args):  # type: ignore[no-untyped-def]
        return function(*args)

    replica = SimpleNamespace(fetcher=SimpleNamespace(fetch=fetch), _cut_out=cut_out, _in_pool=in_pool,
                              results=SimpleNamespace(save=lambda data, _fmt: data.decode().rsplit("/", 1)[1]),
                              _batch_items=asyncio.Semaphore(3))
    replica._batch_item = MethodType(Ingress.func_or_class._batch_item, replica)
    stream = MethodType(Ingress.func_or_class._stream_batch, replica)
    options = SimpleNamespace(format="png", media_type="image/png")

    async def batch(name: str) -> list[dict]:
        urls = [f"http://127.0.0.1/{name}/{index}" for index in range(10)]
        return [json.loads(line) async for line in stream(urls, options, f"/results/{name}/")]

    async def both() -> list[list[dict]]:
        return await asyncio.wait_for(asyncio.gather(batch("a"), batch("b")), timeout=10)

    for name, lines in zip("ab", asyncio.run(both()), strict=True):
        assert sorted(line["result"] for line in lines) == sorted(f"/results/{name}/{index}" for index in range(10))
        assert {line["status"] for line in lines} == {"ok"}
    assert most == 3

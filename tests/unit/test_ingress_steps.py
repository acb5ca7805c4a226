"""The ingress runs a request's independent steps at once (remove.bg's photo and background fetches): both finish
in the time of the slower one, and a failure of one cancels the other instead of leaving its fetch running."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.deployments.ingress import gather_or_cancel
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

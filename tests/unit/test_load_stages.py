"""The load generator's split of each answer's time: the ingress's stages, and the client's wait beyond them."""

from __future__ import annotations

import pytest

from harness.http_load import LoadResult, Sample


def test_the_wait_outside_the_ingress_splits_at_the_response_headers() -> None:
    # model_* are parts of model, encode_on_thread of encode
    stages = {"read": 1.0, "model": 30.0, "model_queue": 2.0, "encode": 10.0, "encode_on_thread": 9.0}
    samples = [Sample(1.0, 0.050, 200, 10, stages, headers_s=0.045),
               Sample(2.0, 0.060, 200, 10, stages, headers_s=0.052)]
    means = LoadResult(clients=1, warmup_s=0.0, measured_s=10.0, samples=samples).summary()["server_stage_mean_ms"]
    assert means["outside_ingress_stages"] == pytest.approx(14.0)  # (50 - 41 + 60 - 41) / 2
    assert means["client_body_read"] == pytest.approx(6.5)  # (5 + 8) / 2
    assert means["outside_until_headers"] == pytest.approx(7.5)  # the rest of the wait outside


def test_throughput_counts_every_answer_that_arrived_in_the_window() -> None:
    # A closed loop measured from 5 s to 15 s: answers to requests sent during the warm-up count towards throughput
    # (they kept the service busy in the window), those still out at its end do not; latencies are those of every
    # request sent in the window, the slow one answered after it included.
    samples = [Sample(4.5, 1.0, 200, 10),  # sent in the warm-up, answered in the window: throughput only
               Sample(6.0, 1.0, 200, 10),  # both
               Sample(14.5, 3.0, 200, 10),  # sent in the window, answered after it: latency only
               Sample(7.0, 1.0, 503, 10)]  # not a good answer: neither
    summary = LoadResult(clients=2, warmup_s=5.0, measured_s=10.0, samples=samples).summary()
    assert summary["images_per_s"] == pytest.approx(0.2)
    assert summary["images_per_s_sent_in_window"] == pytest.approx(0.2)
    assert summary["requests_measured"] == 3
    assert summary["latency_ms"]["p50"] == pytest.approx(2000.0) and summary["latency_ms"]["mean"] == 2000.0


def test_the_window_edges_are_taken_as_the_measured_window_opens_and_closes() -> None:
    # A loopback server answering in 20 ms; the service's counters (here, the clock) read at both edges, so that the
    # passes and the GPU's business are those of the measured window, not of the warm-up or the drain.
    import asyncio
    import time

    from aiohttp import web

    from harness.http_load import closed_loop

    async def answer(_: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.Response(body=b"ok")

    async def run() -> tuple:
        app = web.Application()
        app.router.add_post("/", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        began = time.perf_counter()
        try:
            result = await closed_loop(f"http://127.0.0.1:{port}/", [b"x"], clients=2, duration_s=0.6, warmup_s=0.4,
                                       at_window_edges=time.perf_counter)
        finally:
            await runner.cleanup()
        return began, result

    began, result = asyncio.run(run())
    opened, closed = result.window_clock
    assert opened - began == pytest.approx(0.4, abs=0.05) and closed - opened == pytest.approx(0.6, abs=0.01)
    first, last = result.window_edges
    assert first == pytest.approx(opened, abs=0.05) and last == pytest.approx(closed, abs=0.05)
    assert result.summary()["requests_measured"] > 10

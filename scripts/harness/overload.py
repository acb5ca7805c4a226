"""Open-loop overload: requests arrive at a fixed rate whatever the service does, so that queues must shed.

A closed loop (http_load.py) slows down with the service and can never overload it. Here request i is sent at
`i / rate_per_s` seconds, up to a cap on requests in flight and on requests in total, and every answer is judged
(answers.py): a PNG of the input's size, a 503 with Retry-After, or a failure. The service's memory is sampled
all along (memory.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from harness.answers import OK, SHED, Answer, image_size, judge, judge_error, tally
from harness.http_load import closed_loop
from harness.memory import ServiceMemorySampler
from harness.photos import mixed_size_jpegs
from serve_app.bulk.layout import IMAGE_SUFFIXES

ROUTE = "/v1/remove-background"
CONTENT_TYPE = "application/octet-stream"  # the service recognises images from their bytes


@dataclass
class OpenLoopResult:
    rate_per_s: float
    duration_s: float
    max_in_flight: int
    burst: int = 0  # requests sent at once before the steady arrivals
    answers: list[Answer] = field(default_factory=list)
    not_sent: int = 0  # arrivals dropped by the client because max_in_flight requests were already out
    peak_in_flight: int = 0
    max_send_lag_s: float = 0.0  # how far behind schedule the client fell (a busy client offers less load)
    send_span_s: float = 0.0

    def summary(self) -> dict:
        ok = [a for a in self.answers if a.outcome == OK]
        sent = len(self.answers)
        last_answer_s = max((a.started_s + a.latency_s for a in self.answers), default=0.0)
        return {
            "rate_per_s": round(self.rate_per_s, 2),
            "duration_s": self.duration_s,
            "burst": self.burst,
            "max_in_flight": self.max_in_flight,
            "sent": sent,
            "not_sent_in_flight_cap": self.not_sent,
            "achieved_send_rate_per_s": round(sent / self.send_span_s, 2) if self.send_span_s > 0 else None,
            "max_send_lag_s": round(self.max_send_lag_s, 3),
            "peak_in_flight": self.peak_in_flight,
            **tally(self.answers),
            "last_answer_s": round(last_answer_s, 1),
            "ok_per_s": round(len(ok) / last_answer_s, 2) if last_answer_s else None,  # goodput, drain included
            "latency_ms": {outcome: _percentiles([a.latency_s for a in self.answers if a.outcome == outcome])
                           for outcome in (OK, SHED)},
        }


def _percentiles(latencies_s: list[float]) -> dict[str, float] | None:
    if not latencies_s:
        return None
    ms = np.array(latencies_s) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)} | {"max": round(float(ms.max()), 1)}


async def open_loop(url: str, bodies: list[bytes], *, rate_per_s: float, duration_s: float, max_in_flight: int,
                    max_requests: int, burst: int = 0, timeout_s: float = 60.0) -> OpenLoopResult:
    """POST bodies in turn to `url` at `rate_per_s` for `duration_s`, then wait for every answer.

    `burst` extra requests go out at once first: a crowd that fills the service's queues from the start.

    Bounded: at most `max_requests` requests, at most `max_in_flight` at once, and each one given up after
    `timeout_s` (a failure), so the whole run ends within duration_s + timeout_s.
    """
    if rate_per_s <= 0 or max_in_flight < 1:
        raise ValueError("rate_per_s and max_in_flight must be positive")
    sizes = [image_size(body) for body in bodies]
    result = OpenLoopResult(rate_per_s, duration_s, max_in_flight, burst)
    in_flight: set[asyncio.Task] = set()
    start = time.perf_counter()

    async with ShardedClient(max_in_flight, timeout_s) as http:

        async def send(index: int) -> None:
            body, size = bodies[index % len(bodies)], sizes[index % len(bodies)]
            result.answers.append(await send_and_judge(http, url, body, size, start, timeout_s))

        for index in range(min(max_requests, burst + int(duration_s * rate_per_s))):
            lag = time.perf_counter() - (start + max(0, index - burst) / rate_per_s)
            if lag < 0:
                await asyncio.sleep(-lag)
            if index >= burst:
                result.max_send_lag_s = max(result.max_send_lag_s, lag)
            if len(in_flight) >= max_in_flight:
                result.not_sent += 1
                continue
            task = asyncio.create_task(send(index))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            result.peak_in_flight = max(result.peak_in_flight, len(in_flight))
        result.send_span_s = time.perf_counter() - start
        if in_flight:  # each request bounds itself; this only guards against a bug there
            await asyncio.wait(set(in_flight), timeout=timeout_s + 10)
    return result


class ShardedClient:
    """httpx clients of at most SHARD_CONNECTIONS connections each, the least busy one taking each request.

    httpcore scans its whole pool on every request and response: one pool of 512 connections spent most of a
    core in that scan (profiled), which on a small machine starves the service under test.
    """

    SHARD_CONNECTIONS = 32

    def __init__(self, max_connections: int, timeout_s: float):
        shards = -(-max_connections // self.SHARD_CONNECTIONS)
        limits = httpx.Limits(max_connections=self.SHARD_CONNECTIONS,
                              max_keepalive_connections=self.SHARD_CONNECTIONS)
        tls = ssl.create_default_context()  # one for all shards: each costs ~50 ms to build
        self._clients = [httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False, verify=tls)
                         for _ in range(shards)]
        self._busy = [0] * shards

    async def post(self, url: str, **kwargs) -> httpx.Response:
        shard = self._busy.index(min(self._busy))
        self._busy[shard] += 1
        try:
            return await self._clients[shard].post(url, **kwargs)
        finally:
            self._busy[shard] -= 1

    async def __aenter__(self) -> ShardedClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients))


async def send_and_judge(http: ShardedClient | httpx.AsyncClient, url: str, body: bytes, size: tuple[int, int],
                         start: float, timeout_s: float) -> Answer:
    """POST one image and judge the answer; `start` is the run's perf_counter origin for Answer.started_s."""
    sent = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            response = await http.post(url, content=body, headers={"Content-Type": CONTENT_TYPE})
    except (httpx.HTTPError, TimeoutError) as error:
        outcome, detail = judge_error(error)
        return Answer(sent - start, time.perf_counter() - sent, 0, outcome, detail)
    latency_s = time.perf_counter() - sent
    # Decoding a large PNG takes a while: off the event loop, so that arrivals stay on schedule.
    outcome, detail = await asyncio.to_thread(judge, response, size)
    return Answer(sent - start, latency_s, response.status_code, outcome, detail)


def photo_bodies(photos_dir: Path | None, count: int) -> list[bytes]:
    """The images under `photos_dir` (recursively, sorted), or `count` synthetic mixed-size JPEGs."""
    if photos_dir is None:
        return mixed_size_jpegs(count)
    paths = sorted(p for p in photos_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images under {photos_dir}")
    return [path.read_bytes() for path in paths[:count]]


async def measure_capacity(base_url: str, bodies: list[bytes], *, clients: int, duration_s: float,
                           warmup_s: float) -> dict:
    """Closed-loop throughput with `clients` concurrent clients: what the service sustains when saturated.

    `completed_per_s` counts good answers that arrived inside the measured window, as http_load's `images_per_s`
    now does too (an older version counted only requests also sent in it, which undercounts by
    about latency / window: a lot when queues make latency seconds long and the window is short).
    """
    result = await closed_loop(base_url + ROUTE, bodies, clients=clients, duration_s=duration_s,
                               warmup_s=warmup_s, content_type=CONTENT_TYPE)
    end_s = warmup_s + duration_s
    completed = [s for s in result.samples if s.status == 200 and warmup_s <= s.started_s + s.latency_s <= end_s]
    return result.summary() | {"completed_per_s": round(len(completed) / duration_s, 2)}


@dataclass(frozen=True)
class OverloadPlan:
    duration_s: float = 15.0
    rate_per_s: float | None = None  # None: rate_factor x the capacity measured first
    rate_factor: float = 2.0
    burst: int = 0  # requests sent at once before the steady arrivals
    repeats: int = 1  # overload runs at the same rate: growth in a later run is a leak, not pools warming up
    capacity_clients: int = 16
    capacity_s: float = 8.0
    capacity_warmup_s: float = 2.0
    # Well above what the ingress admits (max_ongoing + max_queued = 288), plus the refusals still on their way
    # back: under overload the proxy took up to 7 s to answer a 503 on 2 CPUs.
    max_in_flight: int = 1024
    max_requests: int = 20_000  # per run
    timeout_s: float = 60.0
    memory_interval_s: float = 0.5


async def run_overload(base_url: str, bodies: list[bytes], plan: OverloadPlan) -> dict:
    """Capacity (unless a rate is given), then the open-loop overload with memory sampled; a JSON record."""
    base_url = base_url.rstrip("/")
    require_loopback(base_url)
    record: dict = {"url": base_url, "photos": len(bodies)}
    rate = plan.rate_per_s
    if rate is None:
        capacity = await measure_capacity(base_url, bodies, clients=plan.capacity_clients,
                                          duration_s=plan.capacity_s, warmup_s=plan.capacity_warmup_s)
        record["capacity"] = capacity
        if not capacity["completed_per_s"]:
            raise RuntimeError(f"no successful request while measuring capacity: {capacity}")
        rate = plan.rate_factor * capacity["completed_per_s"]
    record["rate_per_s"] = round(rate, 2)
    record["runs"] = [await _overload_run(base_url, bodies, rate, plan) for _ in range(plan.repeats)]
    return record


async def _overload_run(base_url: str, bodies: list[bytes], rate: float, plan: OverloadPlan) -> dict:
    port = urlsplit(base_url).port or 80
    client_cpu_s = time.process_time()
    with ServiceMemorySampler(port, plan.memory_interval_s) as memory:
        result = await open_loop(base_url + ROUTE, bodies, rate_per_s=rate, duration_s=plan.duration_s,
                                 max_in_flight=plan.max_in_flight, max_requests=plan.max_requests,
                                 burst=plan.burst, timeout_s=plan.timeout_s)
    client = {"client_cpu_s": round(time.process_time() - client_cpu_s, 1)}  # the load generator's own cost
    return {"overload": result.summary() | client, "memory": memory.summary()}


def require_loopback(base_url: str) -> None:
    """Load is only ever sent to this machine."""
    host = urlsplit(base_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it could resolve anywhere
        loopback = False
    if not loopback:
        raise ValueError(f"refusing to send load to {host!r}: only loopback (127.0.0.0/8, ::1) is allowed")

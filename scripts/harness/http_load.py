"""Closed-loop HTTP load: N clients, each sending its next photo as soon as the previous answer arrives.

The clients use aiohttp: on loopback, 0.4 MB up and 3.6 MB down through HAProxy, httpx's client took 6.6 ms
where aiohttp's took 4.7 (this project's 2-core machine, 2026-12-01), and a benchmark should time the service,
not its client.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from harness.answers import refusal_source
from serve_app.timing import parse_server_timing


@dataclass
class Sample:
    started_s: float  # since the run began
    latency_s: float
    status: int
    response_bytes: int
    server_stages_ms: dict[str, float] = field(default_factory=dict)  # from the Server-Timing header
    refused_by: str = ""  # for an error status: the service's error code, or serve_proxy for Serve's own answer
    headers_s: float = 0.0  # until the response's headers arrived: the rest of latency_s is reading its body


@dataclass
class LoadResult:
    clients: int
    warmup_s: float
    measured_s: float
    samples: list[Sample] = field(default_factory=list)
    # time.perf_counter() as the measured window opened and closed, and what closed_loop's `at_window_edges` gave
    # at those two moments
    window_clock: tuple[float, float] | None = None
    window_edges: list[object] = field(default_factory=list)

    def summary(self) -> dict:
        end_s = self.warmup_s + self.measured_s
        # Latencies: every request sent within the window, however long its answer took (the clients stop sending
        # at its end and wait for what is out; leaving out the answers that came after it would leave out the
        # slowest). Throughput: every good answer that arrived in the window, whenever it was sent. Counting only
        # requests sent in it undercounts by about latency / window, which a closed loop with deep queues makes
        # large: 3.2% with ~1 s latency at 64 clients in 30 s (an H200).
        window = [s for s in self.samples if self.warmup_s <= s.started_s < end_s]
        ok = [s for s in window if s.status == 200]
        answered = [s for s in self.samples if s.status == 200 and self.warmup_s <= s.started_s + s.latency_s <= end_s]
        latencies_ms = np.array([s.latency_s * 1000 for s in ok]) if ok else np.array([np.nan])
        statuses: dict[str, int] = {}
        for sample in self.samples:
            statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
        return {
            "clients": self.clients,
            "warmup_s": self.warmup_s,
            "measured_s": round(self.measured_s, 2),
            "requests_measured": len(window),
            "images_per_s": round(len(answered) / self.measured_s, 3) if self.measured_s > 0 else None,
            # good answers to requests sent in the window, whenever they came (older records counted those also
            # answered in it)
            "images_per_s_sent_in_window": round(len(ok) / self.measured_s, 3) if self.measured_s > 0 else None,
            "latency_ms": {f"p{q}": round(float(np.percentile(latencies_ms, q)), 1) for q in (50, 95, 99)}
            | {"mean": round(float(np.mean(latencies_ms)), 1)},
            "statuses_all_requests": statuses,
            "errors_all_requests": self._errors(),
            "mean_response_bytes": int(np.mean([s.response_bytes for s in ok])) if ok else 0,
            "server_stage_mean_ms": self._stage_means(ok),
        }

    def _errors(self) -> dict[str, dict]:
        """Per status and source of every answer other than 200: how many, and when the first and last were sent."""
        sent_s: dict[str, list[float]] = {}
        for sample in self.samples:  # in the order answers came back, not the order they were sent
            if sample.status != 200:
                sent_s.setdefault(f"{sample.status} {sample.refused_by}".strip(), []).append(sample.started_s)
        return {key: {"count": len(times), "first_sent_s": round(min(times), 2), "last_sent_s": round(max(times), 2)}
                for key, times in sent_s.items()}

    @staticmethod
    def _stage_means(samples: list[Sample]) -> dict[str, float]:
        """Mean ms per ingress stage, and what the client waited beyond them (proxy, queues, transfer)."""
        names = sorted({name for s in samples for name in s.server_stages_ms})
        means = {name: round(float(np.mean([s.server_stages_ms.get(name, 0.0) for s in samples])), 1)
                 for name in names}
        if samples and names:
            # model_queue, model_batch, ... and encode_on_thread are parts of the model and encode stages, not
            # additional time.
            outside = [s.latency_s * 1000 - sum(ms for name, ms in s.server_stages_ms.items()
                                                if not name.startswith(("model_", "encode_"))) for s in samples]
            means["outside_ingress_stages"] = round(float(np.mean(outside)), 1)
            # The same wait split at the response's headers: before them (upload, proxy, the answer's way back to
            # the proxy) and after them (the client reading the body).
            body = [(s.latency_s - s.headers_s) * 1000 for s in samples]
            means["outside_until_headers"] = round(means["outside_ingress_stages"] - float(np.mean(body)), 1)
            means["client_body_read"] = round(float(np.mean(body)), 1)
        return means


async def closed_loop(url: str | list[str], bodies: list[bytes], *, clients: int, duration_s: float,
                      warmup_s: float, content_type: str = "image/jpeg", timeout_s: float = 120.0,
                      at_window_edges: Callable[[], object] | None = None) -> LoadResult:
    """Drive `url` for warmup_s + duration_s; only requests started after warm-up count in the summary. Given
    several URLs, client i sends to URL i modulo their number (a mix of models, say). `at_window_edges`, if given,
    runs on a thread as the measured window opens and as it closes (the service's counters, say), its results in
    the result's window_edges."""
    urls = [url] if isinstance(url, str) else url
    result = LoadResult(clients=clients, warmup_s=warmup_s, measured_s=duration_s)
    next_body = itertools.cycle(range(len(bodies)))
    start = time.perf_counter()
    stop_at = start + warmup_s + duration_s
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as http:

        async def client(url: str) -> None:
            while time.perf_counter() < stop_at:
                body = bodies[next(next_body)]
                sent = time.perf_counter()
                try:
                    async with http.post(url, data=body, headers={"Content-Type": content_type}) as response:
                        headers_s = time.perf_counter() - sent
                        answer = await response.read()
                    status, size = response.status, len(answer)
                    stages = parse_server_timing(response.headers.get("server-timing", ""))
                    refused_by = "" if status == 200 else refusal_source(answer)
                except (aiohttp.ClientError, TimeoutError) as error:
                    status, size, stages, refused_by, headers_s = 0, 0, {}, type(error).__name__, 0.0
                result.samples.append(Sample(sent - start, time.perf_counter() - sent, status, size, stages,
                                             refused_by, headers_s))

        async def edges() -> None:
            opened = start + warmup_s
            await asyncio.sleep(max(0.0, opened - time.perf_counter()))
            if at_window_edges is not None:
                result.window_edges.append(await asyncio.to_thread(at_window_edges))
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            result.window_clock = (opened, stop_at)
            if at_window_edges is not None:
                result.window_edges.append(await asyncio.to_thread(at_window_edges))

        await asyncio.gather(edges(), *(client(urls[index % len(urls)]) for index in range(clients)))
    return result

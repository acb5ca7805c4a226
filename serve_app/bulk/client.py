"""Bulk client mode: send every image under INPUT to a running service, with bounded concurrency and retries."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass

import aiohttp
from tqdm import tqdm

from serve_app.bulk.layout import Layout, Ledger, WorkItem, job_options, read_bytes, write_atomically
from serve_app.options import OutputOptions

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ClientSettings:
    url: str  # the service's base URL, e.g. http://127.0.0.1:8000
    concurrency: int = 64  # requests in flight: enough to keep one GPU's batches of 8 full behind the ingress
    max_retries: int = 5
    backoff_s: float = 0.5  # first retry delay, doubled each time (with jitter), or Retry-After if longer
    timeout_s: float = 300.0


class PermanentFailure(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _query(options: OutputOptions) -> dict[str, str]:
    query = {"format": options.format}
    if options.only_mask:
        query["only_mask"] = "true"
    if options.bg_color is not None:
        query["bg_color"] = "#{:02x}{:02x}{:02x}".format(*options.bg_color)
    if options.model:
        query["model"] = options.model
    return query


@dataclass(frozen=True)
class Answer:
    """What the service answered to one request: its status, Retry-After header and body."""

    status: int
    retry_after: str
    body: bytes

    def text(self) -> str:
        return self.body[:300].decode("utf-8", "replace")


def _retry_delay(attempt: int, settings: ClientSettings, answer: Answer | None) -> float:
    delay = settings.backoff_s * (2**attempt) * (0.5 + random.random())
    if answer is not None and answer.retry_after.isdigit():
        delay = max(delay, float(answer.retry_after))
    return delay


async def remove_one(http: aiohttp.ClientSession, item: WorkItem, options: OutputOptions,
                     settings: ClientSettings) -> bytes:
    """The service's answer for one input, retrying overload, server errors and connection failures."""
    body = await asyncio.to_thread(read_bytes, item.source)
    endpoint = f"{settings.url.rstrip('/')}/v1/remove-background"
    for attempt in range(settings.max_retries + 1):
        answer = None
        try:
            async with http.post(endpoint, params=_query(options), data=body,
                                 headers={"Content-Type": "application/octet-stream"}) as response:
                answer = Answer(response.status, response.headers.get("retry-after", ""), await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:  # refused, reset, cut short or timed out
            last = f"{type(error).__name__}: {error}"
        else:
            if answer.status == 200:
                return answer.body
            last = f"HTTP {answer.status}: {answer.text()}"
            if answer.status not in RETRIED_STATUSES:
                raise PermanentFailure(*_error(answer))
        if attempt < settings.max_retries:
            await asyncio.sleep(_retry_delay(attempt, settings, answer))
    raise PermanentFailure("retries_exhausted", f"gave up after {settings.max_retries + 1} attempts; last: {last}")


def _error(answer: Answer) -> tuple[str, str]:
    """The error's code and message from the service's JSON body, or from the status where it has none."""
    try:
        error = json.loads(answer.body)["error"]
        return error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return f"http_{answer.status}", f"HTTP {answer.status}: {answer.text()}"


async def run_client(layout: Layout, options: OutputOptions, settings: ClientSettings) -> dict:
    pending, skipped = layout.plan()
    layout.claim_output(job_options(options, options.model))
    removed = layout.remove_stale_temporaries()
    ledger = Ledger(layout, "client", skipped=skipped)
    ledger.write(pending=len(pending))  # this run's, from its start: never an earlier run's left in place
    queue: asyncio.Queue[WorkItem] = asyncio.Queue()
    for item in pending:
        queue.put_nowait(item)
    progress = tqdm(total=len(pending), unit="img", desc="removing backgrounds", dynamic_ncols=True)
    if removed:
        tqdm.write(f"removed {removed} temporary files left by an earlier run")
    if layout.ignored:
        tqdm.write(f"passed over {layout.ignored} files under INPUT that are not images by their extension")
    # aiohttp rather than httpx: with 64 connections httpx's pool scans every connection for each request and reads
    # a body in many small steps, so the event loop's one thread, not the service, limits a run near its speed
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as http:

        async def worker() -> None:
            while not queue.empty():
                item = queue.get_nowait()
                try:
                    encoded = await remove_one(http, item, options, settings)
                    await asyncio.to_thread(write_atomically, item.target, encoded)
                    ledger.succeeded(item)
                except PermanentFailure as failure:
                    ledger.failed(item, failure.code, failure.message)
                except OSError as error:  # unreadable input or unwritable output: record it, keep going
                    ledger.failed(item, "io_error", f"{type(error).__name__}: {error}")
                progress.update(1)
                progress.set_postfix(failed=len(ledger.failures), refresh=False)
                if progress.n % Ledger.FLUSH_EVERY == 0:
                    await asyncio.to_thread(ledger.write, pending=len(pending))

        await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
    progress.close()
    return ledger.write(pending=len(pending))

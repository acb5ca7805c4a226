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
API_KEY_ENV = "SERVE_APP_API_KEY"  # the client's key, read when --api-key is not given


@dataclass(frozen=True)
class ClientSettings:
    url: str  # the service's base URL, e.g. http://127.0.0.1:8000
    concurrency: int = 64  # requests in flight: enough to keep one GPU's batches of 8 full behind the ingress
    max_retries: int = 5
    backoff_s: float = 0.5  # first retry delay, doubled each time (with jitter), or Retry-After if longer
    timeout_s: float = 300.0
    api_key: str | None = None  # sent as `Authorization: Bearer <key>`
    ready_wait_s: float = 120.0  # how long a service that answers /readyz with 503 (starting) is waited for
    ready_poll_s: float = 2.0


class PermanentFailure(Exception):
    """One image the service will not cut out however often it is sent: recorded, and the run goes on."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ServiceUnusable(Exception):
    """No image can get through (the service is unreachable, never turns ready, or refuses the API key): the run
    stops, and the images not done stay pending for the next run instead of each failing in turn."""


AUTH_STATUSES = frozenset({401, 403})


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
    headers = {"Content-Type": "application/octet-stream", **_auth(settings)}
    for attempt in range(settings.max_retries + 1):
        answer = None
        try:
            async with http.post(endpoint, params=_query(options), data=body, headers=headers) as response:
                answer = Answer(response.status, response.headers.get("retry-after", ""), await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:  # refused, reset, cut short or timed out
            last = f"{type(error).__name__}: {error}"
        else:
            if answer.status == 200:
                return answer.body
            last = f"HTTP {answer.status}: {answer.text()}"
            if answer.status in AUTH_STATUSES:
                given = "the API key given" if settings.api_key else "no API key (--api-key or $SERVE_APP_API_KEY)"
                raise ServiceUnusable(f"the service refused {given}: {_error(answer)[1]}")
            if answer.status not in RETRIED_STATUSES:
                raise PermanentFailure(*_error(answer))
        if attempt < settings.max_retries:
            await asyncio.sleep(_retry_delay(attempt, settings, answer))
    raise PermanentFailure("retries_exhausted", f"gave up after {settings.max_retries + 1} attempts; last: {last}")


def _auth(settings: ClientSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}


async def wait_until_ready(http: aiohttp.ClientSession, settings: ClientSettings) -> None:
    """Return once the service's /readyz answers 200; wait while it answers 503 (its model still loading), up to
    `ready_wait_s`. ServiceUnusable at once when nothing answers at the URL or something other than the service
    does: a wrong URL or a stopped service would otherwise fail every image after its retries, minutes later."""
    endpoint = f"{settings.url.rstrip('/')}/readyz"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.ready_wait_s
    told = False
    while True:
        try:
            async with http.get(endpoint, timeout=aiohttp.ClientTimeout(total=10)) as response:
                answer = Answer(response.status, response.headers.get("retry-after", ""), await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ServiceUnusable(f"cannot reach the service at {settings.url} ({type(error).__name__}: {error}); "
                                  "is it running, and is --url its base URL?") from None
        if answer.status == 200:
            return
        if answer.status != 503:
            raise ServiceUnusable(f"{endpoint} answered HTTP {answer.status}, not the service's readiness: is --url "
                                  f"the service's base URL? ({answer.text()!r})")
        if loop.time() >= deadline:
            raise ServiceUnusable(f"the service at {settings.url} did not turn ready within {settings.ready_wait_s:g} "
                                  f"s: {_error(answer)[1]}")
        if not told:
            tqdm.write(f"waiting up to {settings.ready_wait_s:g} s for the service to turn ready: {_error(answer)[1]}")
            told = True
        await asyncio.sleep(settings.ready_poll_s)


def _error(answer: Answer) -> tuple[str, str]:
    """The error's code and message from the service's JSON body, or from the status where it has none."""
    try:
        error = json.loads(answer.body)["error"]
        return error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return f"http_{answer.status}", f"HTTP {answer.status}: {answer.text()}"


async def run_client(layout: Layout, options: OutputOptions, settings: ClientSettings) -> dict:
    """Send every pending image under the layout's INPUT; the run's summary. ServiceUnusable, before anything is
    written or after the images in flight are settled, when no image can get through."""
    pending, skipped = layout.plan()
    # aiohttp rather than httpx: with 64 connections httpx's pool scans every connection for each request and reads
    # a body in many small steps, so the event loop's one thread, not the service, limits a run near its speed
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as http:
        await wait_until_ready(http, settings)
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
        unusable: list[ServiceUnusable] = []

        async def worker() -> None:
            while not queue.empty() and not unusable:
                item = queue.get_nowait()
                try:
                    encoded = await remove_one(http, item, options, settings)
                    await asyncio.to_thread(write_atomically, item.target, encoded)
                    ledger.succeeded(item)
                except PermanentFailure as failure:
                    ledger.failed(item, failure.code, failure.message)
                except OSError as error:  # unreadable input or unwritable output: record it, keep going
                    ledger.failed(item, "io_error", f"{type(error).__name__}: {error}")
                except ServiceUnusable as error:  # the item stays pending; the other workers stop taking more
                    unusable.append(error)
                    return
                progress.update(1)
                progress.set_postfix(failed=len(ledger.failures), refresh=False)
                if progress.n % Ledger.FLUSH_EVERY == 0:
                    await asyncio.to_thread(ledger.write, pending=len(pending))

        await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
    progress.close()
    summary = ledger.write(pending=len(pending))
    if unusable:
        raise unusable[0]
    return summary

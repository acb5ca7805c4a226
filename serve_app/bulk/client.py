"""Bulk client mode: send every image under INPUT to a running service, with bounded concurrency and retries."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import sys
import time
from dataclasses import dataclass

import aiohttp
from tqdm import tqdm

from serve_app.bulk.layout import (
    Layout,
    RunStopped,
    WorkItem,
    job_options,
    output_unusable,
    read_bytes,
    stopped_by_output,
    write_atomically,
)
from serve_app.bulk.ledger import Ledger
from serve_app.options import OutputOptions

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0  # the longest wait between two tries of one image, but for a longer Retry-After
MAX_RETRY_AFTER_S = 600.0  # the longest Retry-After honoured: a service asking for more is treated as asking this
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


class ServiceUnusable(RunStopped):
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

    @classmethod
    async def read(cls, response: aiohttp.ClientResponse) -> Answer:
        return cls(response.status, response.headers.get("retry-after", ""), await response.read())

    def text(self) -> str:
        return self.body[:300].decode("utf-8", "replace")


def _retry_delay(attempt: int, settings: ClientSettings, answer: Answer | None) -> float:
    """Exponential backoff with jitter, at most MAX_BACKOFF_S (a high --retries rides out an outage in steps a
    minute apart, not hours), or the answer's Retry-After where that is longer (seconds or an HTTP date; at most
    MAX_RETRY_AFTER_S)."""
    delay = min(settings.backoff_s * (2**attempt), MAX_BACKOFF_S) * (0.5 + random.random())
    asked = _retry_after_s(answer.retry_after) if answer is not None else None
    return max(delay, min(asked, MAX_RETRY_AFTER_S)) if asked is not None else delay


def _retry_after_s(value: str) -> float | None:
    """Retry-After's seconds: a count of seconds or an HTTP date (RFC 9110); None where it is neither."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


async def remove_one(http: aiohttp.ClientSession, item: WorkItem, options: OutputOptions, settings: ClientSettings,
                     readiness: Readiness | None = None) -> bytes:
    """The service's answer for one input, retrying overload, server errors and connection failures. With
    `readiness`, an image out of retries waits for the service first: one that comes back gets one more round;
    ServiceUnusable if it does not (the image stays pending); a failure of its own if the service was ready all along.
    """
    body = await asyncio.to_thread(read_bytes, item.source)
    endpoint = f"{settings.url.rstrip('/')}/v1/remove-background"
    headers = {"Content-Type": "application/octet-stream", **_auth(settings)}
    for _round in range(2):
        for attempt in range(settings.max_retries + 1):
            answer = None
            try:
                async with http.post(endpoint, params=_query(options), data=body, headers=headers) as response:
                    answer = await Answer.read(response)
            except (aiohttp.ClientError, TimeoutError) as error:  # refused, reset, cut short or timed out
                last = f"{type(error).__name__}: {error}"
            else:
                if answer.status == 200:
                    return answer.body
                last = f"HTTP {answer.status}: {answer.text()}"
                if answer.status in AUTH_STATUSES:
                    raise _refused(answer, settings)
                if answer.status not in RETRIED_STATUSES:
                    raise PermanentFailure(*_error(answer))
            if attempt < settings.max_retries:
                await asyncio.sleep(_retry_delay(attempt, settings, answer))
        if readiness is None or not await readiness.wait():
            break
    raise PermanentFailure("retries_exhausted", f"gave up after {settings.max_retries + 1} attempts; last: {last}")


def _auth(settings: ClientSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}


def _refused(answer: Answer, settings: ClientSettings) -> ServiceUnusable:
    given = "the API key given" if settings.api_key else f"to answer without an API key (--api-key or ${API_KEY_ENV})"
    return ServiceUnusable(f"the service refused {given}: {_error(answer)[1]}")


class Readiness:
    """The service's /readyz, asked before the first image and again whenever an image runs out of retries.

    Anything but a yes is waited out, up to `ready_wait_s`: a service just started refuses connections, then
    answers 404 (Serve's proxy, before the application's routes) or 500 (HAProxy, before a replica), then 503 (the
    ingress, before the model). Only a refused API key, or the service's own 404 (a `--url` that is not its base
    URL), ends the run at once. Without this, a stopped service or a wrong URL would fail every image after its
    retries, minutes later for a large folder."""

    def __init__(self, http: aiohttp.ClientSession, settings: ClientSettings):
        self.http = http
        self.settings = settings
        self.endpoint = f"{settings.url.rstrip('/')}/readyz"
        self.announced = False  # a wait is announced once, whichever worker waits first, until the service is back

    async def wait(self) -> bool:
        """Return once /readyz answers 200, True if it had to wait; ServiceUnusable when it will not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ready_wait_s
        waited = False
        while True:
            reason = await self._ask()
            if reason is None:
                if waited:
                    self.announced = False
                return waited
            if loop.time() >= deadline:
                raise ServiceUnusable(f"the service at {self.settings.url} is not ready after "
                                      f"{self.settings.ready_wait_s:g} s ({reason}); is it running, and is --url its "
                                      "base URL?")
            if not self.announced:
                self.announced = True
                tqdm.write(f"waiting up to {self.settings.ready_wait_s:g} s for the service at {self.settings.url} "
                           f"to turn ready: {reason}", file=sys.stderr)
            waited = True
            await asyncio.sleep(self.settings.ready_poll_s)

    async def _ask(self) -> str | None:
        """None if the service is ready, else why not."""
        try:
            async with self.http.get(self.endpoint, headers=_auth(self.settings),
                                     timeout=aiohttp.ClientTimeout(total=10)) as response:
                answer = await Answer.read(response)
        except (aiohttp.ClientError, TimeoutError) as error:
            return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if answer.status == 200:
            return None
        if answer.status in AUTH_STATUSES:
            raise _refused(answer, self.settings)
        code, message = _error(answer)
        if answer.status == 404 and not code.startswith("http_"):  # the service itself: no /readyz under this URL
            raise ServiceUnusable(f"{self.endpoint} is not the service's readiness check ({message}): is --url the "
                                  "service's base URL?")
        return message


def _error(answer: Answer) -> tuple[str, str]:
    """The error's code and message from the service's JSON body, or from the status where it has none."""
    try:
        error = json.loads(answer.body)["error"]
        return error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return f"http_{answer.status}", f"HTTP {answer.status}: {answer.text()}"


async def run_client(layout: Layout, options: OutputOptions, settings: ClientSettings,
                     planned: tuple[list[WorkItem], int] | None = None) -> dict:
    """Send every pending image under the layout's INPUT (`planned`: its plan, made already); the run's summary.
    ServiceUnusable, before the first image or once the images in flight are settled, when no image can get
    through: those not done stay pending. With nothing pending, the service is not asked. Stopped by Ctrl-C (the task
    cancelled), the ledger is written first, marked interrupted."""
    pending, skipped = planned or layout.plan()
    with layout.exclusive():
        layout.claim_output(job_options(options, options.model))
        layout.record_shared_names()
        # aiohttp rather than httpx: with 64 connections httpx's pool scans every connection for each request and
        # reads a body in many small steps, so the event loop's one thread, not the service, limits a run near its
        # speed
        connector = aiohttp.TCPConnector(limit=settings.concurrency)
        timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as http:
            readiness = Readiness(http, settings)
            if pending:
                await readiness.wait()
            removed = layout.remove_stale_temporaries()
            ledger = Ledger(layout, "client", skipped=skipped)
            ledger.write(pending=len(pending))  # this run's, from its start: never an earlier run's left in place
            for note in layout.start_notes(removed):
                tqdm.write(note, file=sys.stderr)
            try:
                await _send_all(http, readiness, pending, ledger, options, settings)
            except asyncio.CancelledError:
                ledger.interrupted = True
                raise
            finally:
                summary = ledger.write(pending=len(pending), last=True)
    return summary


async def _send_all(http: aiohttp.ClientSession, readiness: Readiness, pending: list[WorkItem], ledger: Ledger,
                    options: OutputOptions, settings: ClientSettings) -> None:
    """Send the pending images, `concurrency` at a time, recording each outcome in the ledger; RunStopped
    (ServiceUnusable, or OUTPUT full or read-only) once the images in flight are settled, when no image can be
    finished."""
    queue: asyncio.Queue[WorkItem] = asyncio.Queue()
    for item in pending:
        queue.put_nowait(item)
    progress = tqdm(total=len(pending), unit="img", desc="removing backgrounds", dynamic_ncols=True)
    unusable: list[RunStopped] = []

    async def worker() -> None:
        while not queue.empty() and not unusable:
            item = queue.get_nowait()
            try:
                encoded = await remove_one(http, item, options, settings, readiness)
                await asyncio.to_thread(write_atomically, item.target, encoded, durable=True)
                ledger.succeeded(item)
            except PermanentFailure as failure:
                ledger.failed(item, failure.code, failure.message)
            except OSError as error:  # unreadable input or unwritable output: record it, keep going
                if output_unusable(error):  # full or read-only: so would every output after it
                    unusable.append(stopped_by_output(f"{type(error).__name__}: {error}"))
                    return
                ledger.failed(item, "io_error", f"{type(error).__name__}: {error}")
            except ServiceUnusable as error:  # the item stays pending; the other workers stop taking more
                unusable.append(error)
                return
            progress.update(1)
            progress.set_postfix(failed=len(ledger.failures), refresh=False)
            if progress.n % Ledger.FLUSH_EVERY == 0:
                await asyncio.to_thread(ledger.write, pending=len(pending))

    try:
        await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
    finally:
        progress.close()
    if unusable:
        raise unusable[0]

"""The CPU ingress: HTTP routes, upload and URL intake, decode/compose/encode, and one JSON error shape.

The ingress never touches torch. It hands uint8 RGB arrays to the `BackgroundRemover` deployment and does the
CPU-heavy codec work in a thread pool so that the event loop keeps accepting requests.
"""

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import numpy as np
import ray
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app import imaging
from serve_app.allocator import release_free_memory
from serve_app.auth import OPEN_PATHS, key_matches
from serve_app.deployments.device_guard import DeviceFailed
from serve_app.deployments.mask_result import MaskResult
from serve_app.errors import (
    ApiError,
    BadRequest,
    DeadlineExceeded,
    InvalidOption,
    ModelUnavailable,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from serve_app.imaging import DeviceDecodeFailed
from serve_app.options import OPTION_NAMES, OutputOptions, parse_options, reject_unknown
from serve_app.results import ResultStore
from serve_app.settings import IngressSettings, load_api_keys
from serve_app.streams import read_capped
from serve_app.timing import StageTimer
from serve_app.url_fetch import ImageFetcher
from serve_app.versions import component_versions

logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="Background removal",
    description="Cut the subject out of photos. Errors are JSON: {\"error\": {\"code\": ..., \"message\": ...}}.",
    version="0.1.0",
)

_RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class RequireApiKey:
    """401 for a request without a configured API key (when keys are configured), as plain ASGI middleware:
    Starlette's `@app.middleware("http")` runs each request in a task group and relays the response body through
    a stream, 0.6 ms per 3.6 MB image response on this project's 2-core machine (0.05 ms this way)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            keys: tuple[str, ...] = getattr(request.app.state, "api_keys", ())
            if keys and request.url.path not in OPEN_PATHS and not key_matches(request.headers.get("authorization"),
                                                                               keys):
                refusal = _error_response(401, "unauthorized",
                                          "missing or invalid API key: send 'Authorization: Bearer <key>'",
                                          {"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


api.add_middleware(RequireApiKey)


@api.exception_handler(ApiError)
async def _api_error(_: Request, error: ApiError) -> JSONResponse:
    return _error_response(error.status, error.code, error.message, error.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return _error_response(422, "invalid_option", problems)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    code = _STATUS_CODES.get(error.status_code, "http_error")
    return _error_response(error.status_code, code, str(error.detail), getattr(error, "headers", None))


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error_response(500, "internal_error", "the server failed to process this request; it was logged")


FormatQuery = Annotated[Literal["png", "webp"], Query(description="Output format.")]
OnlyMaskQuery = Annotated[bool, Query(description="Return the grayscale alpha mask only.")]
BgColorQuery = Annotated[str | None, Query(description="Composite onto this #rrggbb colour instead of "
                                                       "transparency.", pattern=r"^#?[0-9a-fA-F]{6}$")]


def _options(request: Request, extra_names: tuple[str, ...], format: str, only_mask: bool,
             bg_color: str | None) -> OutputOptions:
    reject_unknown(request.query_params.keys(), OPTION_NAMES + extra_names)
    return parse_options(format=format, only_mask=only_mask, bg_color=bg_color)


def _in_stage(timer: StageTimer, stage: str, function, *args: Any, **kwargs: Any) -> Any:
    """`function`'s result, its time on this thread recorded as `stage` (run on a pool thread: the time excludes
    the hand-over to the thread and back)."""
    with timer.stage(stage):
        return function(*args, **kwargs)


# After this long with no image in hand, an ingress replica gives its freed image buffers back to the system
# (serve_app/allocator.py): its RSS falls after a burst, and no request pays for fresh pages.
IDLE_TRIM_S = 2.0


@serve.deployment(
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8},
    # Admit a few seconds of GPU work, no more: each request in flight holds its decoded image (up to ~80 MB for a
    # 6 MP photo on its way through), so deeper queues only add memory and waiting (docs/reliability.md).
    max_ongoing_requests=8,
    # Ray's router counts requests arriving at once as queued until each is assigned a replica, so a burst of
    # clients larger than this is partly refused even with free replicas (96 at once: 10-18 refused with 64).
    max_queued_requests=128,
    backpressure_config={"retry_after_s": 1},  # the Serve proxy's own 503 for a full queue gets Retry-After
    ray_actor_options={"num_cpus": 1},
)
@serve.ingress(api)
class Ingress:
    """HTTP front door: validates, decodes, calls the model deployment, composites and encodes."""

    def __init__(self, remover: DeploymentHandle, ingress_settings: dict):
        self.settings = IngressSettings.model_validate(ingress_settings)
        api.state.api_keys = load_api_keys(self.settings)
        self.remover = remover
        self.fetcher = ImageFetcher(self.settings)
        self.results = ResultStore(self.settings.resolved_result_dir(), self.settings.result_ttl_s)
        self._codec_pool = ThreadPoolExecutor(self.settings.codec_threads, thread_name_prefix="codec")
        # Separate from the codec pool, whose threads wait on these: one pool for both could deadlock.
        self._png_pool = ThreadPoolExecutor(self.settings.png_threads, thread_name_prefix="png")
        self._last_cleanup = 0.0
        # For device_jpeg_decode=when_idle: the images this replica is cutting out now, and whether the model's
        # last answer to it came from a pass of one image with nothing else queued behind it on the device.
        self._cutting_out = 0
        self._device_idle = True
        self._idle_since = time.monotonic()
        self._node_id = ray.get_runtime_context().get_node_id()

    # --- routes -------------------------------------------------------------------------------------

    @api.post("/v1/remove-background", response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/webp": {}}}})
    async def remove_from_upload(self, request: Request, format: FormatQuery = "png",
                                 only_mask: OnlyMaskQuery = False, bg_color: BgColorQuery = None) -> Response:
        """The image as the raw body (Content-Type image/*) or as multipart field `file`."""
        options = _options(request, (), format, only_mask, bg_color)
        timer = StageTimer()
        with timer.stage("read"):
            data = await self._read_upload(request)
        return self._image_response(await self._cut_out(data, options, timer), options, timer)

    @api.get("/v1/remove-background", response_class=Response,
             responses={200: {"content": {"image/png": {}, "image/webp": {}}}})
    async def remove_from_url(self, request: Request, url: Annotated[str, Query(description="http(s) URL.")],
                              format: FormatQuery = "png", only_mask: OnlyMaskQuery = False,
                              bg_color: BgColorQuery = None) -> Response:
        """Fetch the image at `url`, then the same as the POST route."""
        options = _options(request, ("url",), format, only_mask, bg_color)
        timer = StageTimer()
        with timer.stage("fetch"):
            data = await self.fetcher.fetch(url)
        return self._image_response(await self._cut_out(data, options, timer), options, timer)

    @api.post("/v1/remove-background/batch", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}}}})
    async def remove_batch(self, request: Request, format: FormatQuery = "png", only_mask: OnlyMaskQuery = False,
                           bg_color: BgColorQuery = None) -> StreamingResponse:
        """A JSON list of URLs (or {"urls": [...]}); streams one NDJSON line per URL as each finishes."""
        options = _options(request, (), format, only_mask, bg_color)
        urls = self._parse_url_list(await self._read_capped_body(request))
        self._maybe_clean_results()
        return StreamingResponse(self._stream_batch(urls, options), media_type="application/x-ndjson")

    @api.get("/v1/results/{name}", response_class=FileResponse)
    async def get_result(self, name: str) -> FileResponse:
        path = self.results.path(name)
        return FileResponse(path, media_type=imaging.MEDIA_TYPES[path.suffix[1:]])

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            await asyncio.wait_for(self.remover.describe.remote(), timeout=5.0)
        except Exception as error:  # any failure means "not ready", with the reason for the operator
            return _error_response(503, "not_ready", f"model deployment not ready: {type(error).__name__}",
                                   {"Retry-After": str(self.settings.retry_after_s)})
        return JSONResponse({"status": "ready"})

    @api.get("/v1/info")
    async def info(self) -> dict:
        model = await self._call_remover("describe")
        return {"model": model, "ingress": self.settings.model_dump(mode="json"),
                "ingress_versions": component_versions()}

    # --- steps --------------------------------------------------------------------------------------

    async def _cut_out(self, data: bytes, options: OutputOptions, timer: StageTimer | None = None) -> bytes:
        """Decode, segment, composite and encode within the request deadline (504 when missed)."""
        deadline_s = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(deadline_s):  # cancels the model call too: no GPU time for a lost cause
                return await self._cut_out_steps(data, options, timer or StageTimer())
        except TimeoutError:
            raise DeadlineExceeded(f"the image was not processed within {deadline_s:g} s; retry later") from None

    async def _cut_out_steps(self, data: bytes, options: OutputOptions, timer: StageTimer) -> bytes:
        self._cutting_out += 1
        try:
            return await self._decode_segment_encode(data, options, timer)
        finally:
            self._cutting_out -= 1
            if not self._cutting_out:
                self._idle_since = time.monotonic()
                asyncio.get_running_loop().call_later(IDLE_TRIM_S, self._trim_if_still_idle)

    def _trim_if_still_idle(self) -> None:
        if not self._cutting_out and time.monotonic() - self._idle_since >= IDLE_TRIM_S:
            with contextlib.suppress(RuntimeError):  # the pool is shut down: the replica is stopping
                self._codec_pool.submit(release_free_memory)

    async def _decode_segment_encode(self, data: bytes, options: OutputOptions, timer: StageTimer) -> bytes:
        encoded = self._to_decode_on_device(data)
        if encoded is None:
            with timer.stage("decode"):
                decoded = await self._in_pool(imaging.decode_image, data, max_pixels=self.settings.max_image_pixels)
            with timer.stage("model"):
                result = await self._segment(decoded.model_input, timer)
        else:
            with timer.stage("model"):
                decoded, result = await self._segment_beside_decode(encoded, timer)
        timer.record("model_queue", result.queued_ms)
        timer.record("model_batch", result.batch_ms)
        with timer.stage("encode"):  # of which encode_on_thread is the work itself
            return await self._in_pool(
                _in_stage, timer, "encode_on_thread", imaging.render, decoded, result.mask, options.format,
                only_mask=options.only_mask, bg_color=options.bg_color, webp_quality=self.settings.webp_quality,
                png_pool=self._png_pool, png_threads=self.settings.png_threads)

    def _to_decode_on_device(self, data: bytes) -> imaging.EncodedJpeg | None:
        """The upload as a file for the model replica to decode, when that is allowed, this is the only image this
        replica is working on, and the device was idle at the last answer."""
        if self.settings.device_jpeg_decode == "never" or self._cutting_out > 1 or not self._device_idle:
            return None
        return imaging.device_decodable_jpeg(data, max_pixels=self.settings.max_image_pixels)

    async def _segment_beside_decode(self, encoded: imaging.EncodedJpeg,
                                     timer: StageTimer) -> tuple[imaging.DecodedImage, MaskResult]:
        """The model decodes its copy of the JPEG on the GPU while this replica decodes its own for the cut-out."""
        model_call = asyncio.ensure_future(self._segment(encoded, timer))
        try:
            with timer.stage("model_cpu_decode"):  # a part of the model stage: it runs beside the model call
                decoded = await self._in_pool(imaging.decode_image, encoded.data,
                                              max_pixels=self.settings.max_image_pixels)
        except BaseException:
            model_call.cancel()  # the upload is broken after all: no GPU time for it
            raise
        try:
            result = await model_call
        except DeviceDecodeFailed as error:
            logger.warning("the model replica could not decode a JPEG (%s); sending its pixels", error)
            result = await self._segment(decoded.model_input, timer)
        timer.record("model_device_decode", result.device_decode_ms)
        return decoded, result

    async def _segment(self, image: np.ndarray | imaging.EncodedJpeg, timer: StageTimer) -> MaskResult:
        """The model's answer for one image, noting whether the device was idle for the next decision, and the
        time the call spent outside the model replica (Server-Timing model_transport; with a replica on this node,
        also split into model_to_replica and model_from_replica by the shared wall clock)."""
        called, called_at = time.perf_counter(), time.time()
        result = await self._call_remover("remove_background", image)
        timer.record("model_transport", (time.perf_counter() - called - (result.left_at - result.arrived_at)) * 1000)
        if result.replica_node == self._node_id:
            timer.record("model_to_replica", (result.arrived_at - called_at) * 1000)
            timer.record("model_from_replica", (time.time() - result.left_at) * 1000)
        self._device_idle = result.batch_size == 1 and result.device_backlog == 0
        return result

    @staticmethod
    def _image_response(body: bytes, options: OutputOptions, timer: StageTimer) -> Response:
        return Response(body, media_type=options.media_type, headers={"Server-Timing": timer.header()})

    async def _call_remover(self, method: str, *args: Any) -> Any:
        """Call the model deployment, retrying once if its replica died (every call is idempotent)."""
        for attempt in (1, 2):
            try:
                return await getattr(self.remover, method).remote(*args)
            except BackPressureError:
                raise Overloaded("the model queue is full; retry shortly",
                                 headers={"Retry-After": str(self.settings.retry_after_s)}) from None
            except DeviceFailed as error:
                # Not retried: the image may be what broke the device. Calls merely queued on that replica
                # fail with an actor error when it exits, and those are retried below.
                logger.error("model replica's device failed: %s", type(error).__name__)
                raise ModelUnavailable("the model replica's GPU failed and it is being replaced; retry shortly",
                                       headers={"Retry-After": str(self.settings.retry_after_s)}) from None
            except (RayActorError, ActorUnavailableError) as error:
                if attempt == 2:
                    raise ModelUnavailable(f"the model replica is unavailable ({type(error).__name__}); retry",
                                           headers={"Retry-After": str(self.settings.retry_after_s)}) from None
                logger.warning("model replica failed (%s); retrying once", type(error).__name__)
        raise AssertionError("unreachable")

    async def _in_pool(self, function, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._codec_pool, functools.partial(function, *args, **kwargs))

    async def _read_upload(self, request: Request) -> bytes:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            return await self._read_multipart(request)
        if content_type.startswith(_RAW_IMAGE_TYPES):
            return await self._read_capped_body(request)
        raise UnsupportedMediaType(
            f"send the image as the raw body with Content-Type image/* or as multipart field 'file', "
            f"not {content_type or 'no Content-Type'}"
        )

    async def _read_capped_body(self, request: Request) -> bytes:
        return await read_capped(request.stream(), limit=self.settings.max_upload_bytes,
                                 declared_length=request.headers.get("content-length"), what="the body")

    async def _read_multipart(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_upload_bytes + 64 * 1024:
            raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {self.settings.max_upload_bytes}")
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as error:  # starlette raises several types for malformed multipart bodies
            raise BadRequest(f"malformed multipart body: {error}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest("the multipart body has no file field named 'file'")
        if upload.size is not None and upload.size > self.settings.max_upload_bytes:
            raise PayloadTooLarge(f"the file is {upload.size} bytes; the limit is {self.settings.max_upload_bytes}")
        return await upload.read()

    def _parse_url_list(self, body: bytes) -> list[str]:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest('the body must be JSON: a list of URLs, or {"urls": [...]}') from None
        urls = payload.get("urls") if isinstance(payload, dict) else payload
        if not isinstance(urls, list) or not urls or not all(isinstance(url, str) for url in urls):
            raise InvalidOption('the body must be a non-empty JSON list of URL strings, or {"urls": [...]}')
        if len(urls) > self.settings.max_batch_urls:
            raise PayloadTooLarge(f"{len(urls)} URLs; a batch takes at most {self.settings.max_batch_urls}")
        return urls

    async def _stream_batch(self, urls: list[str], options: OutputOptions) -> AsyncIterator[bytes]:
        limiter = asyncio.Semaphore(self.settings.batch_url_concurrency)
        tasks = [asyncio.create_task(self._batch_item(index, url, options, limiter)) for index, url in enumerate(urls)]
        try:
            for finished in asyncio.as_completed(tasks):
                yield (json.dumps(await finished) + "\n").encode()
        finally:
            for task in tasks:  # the client went away: stop the work nobody will read
                task.cancel()

    async def _batch_item(self, index: int, url: str, options: OutputOptions, limiter: asyncio.Semaphore) -> dict:
        async with limiter:
            try:
                encoded = await self._cut_out(await self.fetcher.fetch(url), options)
                name = await self._in_pool(self.results.save, encoded, options.format)
                return {"index": index, "url": url, "status": "ok", "result": f"/v1/results/{name}",
                        "media_type": options.media_type}
            except ApiError as error:
                return {"index": index, "url": url, "status": "error", "http_status": error.status,
                        **error.to_body()}
            except Exception:
                logger.exception("batch item %d failed", index)
                return {"index": index, "url": url, "status": "error", "http_status": 500,
                        "error": {"code": "internal_error", "message": "processing failed; it was logged"}}

    def _maybe_clean_results(self) -> None:
        now = time.monotonic()
        if now - self._last_cleanup > 60:
            self._last_cleanup = now
            self._codec_pool.submit(self.results.delete_expired)

"""The CPU ingress: HTTP routes, upload and URL intake, decode/compose/encode, and one JSON error shape.

The ingress never touches torch. It hands uint8 RGB arrays to the `BackgroundRemover` deployment (or, for a lone
JPEG on an idle device, the file itself) and does the CPU-heavy codec work in a thread pool so that the event loop
keeps accepting requests.
"""

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal, cast

import numpy as np
import ray
from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app import __version__, compose, imaging, png
from serve_app.auth import PAGE_PREFIX, is_open, key_matches
from serve_app.capped_read import capped_request, read_capped
from serve_app.compat import rembg, removebg
from serve_app.compat.routes import REMBG_PREFIX, REMOVEBG_PREFIX, in_route_shape
from serve_app.deployments.device_guard import DeviceFailed
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
from serve_app.heap_trim import release_free_memory
from serve_app.options import OPTION_NAMES, OutputOptions, parse_options, reject_unknown
from serve_app.page import page_asset, page_html
from serve_app.protocol import DeviceDecodeFailed, EncodedJpeg, MaskResult, ModelNotReady, ReducedImage
from serve_app.result_store import ResultStore
from serve_app.settings import IngressSettings, default_result_dir, load_api_keys
from serve_app.threads import named_pool
from serve_app.timing import StageTimer
from serve_app.url_fetch import ImageFetcher
from serve_app.versions import component_versions

logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="Background removal",
    description="Cut the subject out of photos. Errors are JSON: {\"error\": {\"code\": ..., \"message\": ...}}.",
    version=__version__,
)

_RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
MAX_URL_BYTES = 8192  # the longest URL a /batch list may average; common servers take no longer
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def route_path(scope: Scope) -> str:
    """The request's path within this application. Serve's proxy keeps an application's route prefix in the path
    and names it in `root_path`, as ASGI has it: under the prefix `/lite`, `/lite/readyz` is this app's `/readyz`
    (open without a key) and `/lite/api/remove` rembg's route (answered in rembg's shape)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


async def gather_or_cancel(*steps: Awaitable[Any]) -> list[Any]:
    """The steps' results, run at once; the first failure is raised and the steps still running are cancelled
    (asyncio.gather would leave them running, a fetch holding its connection until its own timeout)."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


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
            path = route_path(scope)
            presented = [request.headers.get("authorization")]
            if path.startswith(REMOVEBG_PREFIX) and request.headers.get("x-api-key"):
                presented.append(f"Bearer {request.headers['x-api-key']}")  # remove.bg's clients send X-Api-Key
            if keys and not is_open(path) and not any([key_matches(header, keys) for header in presented]):
                how = "X-Api-Key: <key>" if path.startswith(REMOVEBG_PREFIX) else "Authorization: Bearer <key>"
                error = in_route_shape(path, ApiError(f"missing or invalid API key: send '{how}'", status=401,
                                                      code="unauthorized", headers={"WWW-Authenticate": "Bearer"}))
                refusal = JSONResponse(error.to_body(), status_code=error.status, headers=error.headers)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


api.add_middleware(RequireApiKey)


# What a page from another origin may read of an answer, besides the body: the geometry, timings and Retry-After.
EXPOSED_HEADERS = ["X-Width", "X-Height", "X-Type", "X-Foreground-Top", "X-Foreground-Left", "X-Foreground-Width",
                   "X-Foreground-Height", "Server-Timing", "Retry-After"]


class AllowedOrigins:
    """CORS for the origins of `cors_allow_origins` (none by default), Starlette's middleware once the ingress
    replica has read them (the app is built before). Outside the API-key check: a browser's preflight carries no
    key. The answers' own headers (X-Width, X-Foreground-*, Server-Timing...) are readable by the page."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._cors: tuple[tuple[str, ...], ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origins: tuple[str, ...] = getattr(scope["app"].state, "cors_origins", ()) if scope["type"] == "http" else ()
        if not origins:
            await self.app(scope, receive, send)
            return
        if self._cors is None or self._cors[0] != origins:
            self._cors = (origins, CORSMiddleware(self.app, allow_origins=list(origins), allow_methods=["*"],
                                                  allow_headers=["*"], expose_headers=EXPOSED_HEADERS))
        await self._cors[1](scope, receive, send)


api.add_middleware(AllowedOrigins)


@api.exception_handler(ApiError)
async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    error = in_route_shape(route_path(request.scope), error)
    return JSONResponse(error.to_body(), status_code=error.status, headers=error.headers or None)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    if route_path(request.scope).startswith(REMBG_PREFIX):  # FastAPI's own shape, which rembg's server answers with
        return JSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return await _api_error(request, InvalidOption(problems))


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = _STATUS_CODES.get(error.status_code, "http_error")
    return await _api_error(request, ApiError(str(error.detail), status=error.status_code, code=code,
                                              headers=getattr(error, "headers", None)))


@api.exception_handler(ClientDisconnect)
async def _client_disconnect(request: Request, error: ClientDisconnect) -> JSONResponse:
    # The client closed the connection before its request had arrived whole: nobody reads the answer, and it is no
    # server error (499, as nginx logs it, in Serve's metrics and access log).
    logger.info("the client closed the connection during %s %s", request.method, request.url.path)
    return await _api_error(request, ApiError("the client closed the connection before its request was sent",
                                              status=499, code="client_closed_request"))


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return await _api_error(request, ApiError("the server failed to process this request; it was logged",
                                              status=500, code="internal_error"))


FormatQuery = Annotated[Literal["png", "webp", "jpg"], Query(description="Output format; jpg is flattened onto "
                                                                      "bg_color, white by default.")]
OnlyMaskQuery = Annotated[bool, Query(description="Return the grayscale alpha mask only.")]
BgColorQuery = Annotated[str | None, Query(description="Composite onto this #rrggbb colour instead of "
                                                       "transparency.", pattern=r"^#?[0-9a-fA-F]{6}$")]
CropQuery = Annotated[bool, Query(description="Crop to the subject (plus crop_margin).")]
CropMarginQuery = Annotated[str | None, Query(description="Margin around the cropped subject: pixels (30px) or a "
                                                          "share of its longer side (10%); at most 500px or 50%.")]
SizeQuery = Annotated[Literal["preview", "medium", "hd", "full"], Query(
    description="Largest answer: preview 0.25 MP, medium 1.5 MP, hd 4 MP, full as uploaded.")]
MaxSizeQuery = Annotated[int | None, Query(ge=1, description="Longest side of the answer, at most (pixels).")]
RefineQuery = Annotated[bool, Query(description="Clean edges: estimate the subject's own colours in "
                                                "semi-transparent pixels (hair, soft edges) on the GPU.")]
ModelQuery = Annotated[str | None, Query(description="The served model to use, by name (/v1/info lists them); "
                                                     "left out: the default model.")]


def native_options(*extra_names: str):
    """The native routes' options as a FastAPI dependency; query parameters other than these and `extra_names`
    are refused, so that a typo is not silently ignored."""
    def dependency(request: Request, format: FormatQuery = "png", only_mask: OnlyMaskQuery = False,
                   bg_color: BgColorQuery = None, crop: CropQuery = False, crop_margin: CropMarginQuery = None,
                   size: SizeQuery = "full", max_size: MaxSizeQuery = None,
                   refine: RefineQuery = False, model: ModelQuery = None) -> OutputOptions:
        reject_unknown(request.query_params.keys(), OPTION_NAMES + extra_names)
        return parse_options(format=format, only_mask=only_mask, bg_color=bg_color, crop=crop,
                             crop_margin=crop_margin, size=size, max_size=max_size, refine=refine, model=model)
    return dependency


NativeOptions = Annotated[OutputOptions, Depends(native_options())]
NativeUrlOptions = Annotated[OutputOptions, Depends(native_options("url"))]
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {media: {} for media in ("image/png", "image/webp", "image/jpeg")},
          "description": "The cut-out; X-Width, X-Height and X-Foreground-Top/Left/Width/Height "
                         "give its size and the subject's box in it."}}


def _in_stage(timer: StageTimer, stage: str, function, *args: Any, **kwargs: Any) -> Any:
    """`function`'s result, its time on this thread recorded as `stage` (run on a pool thread: the time excludes
    the hand-over to the thread and back)."""
    with timer.stage(stage):
        return function(*args, **kwargs)


def _device_png_answer(scan: imaging.JpegScan, result: MaskResult) -> compose.Rendered:
    """The plain PNG cut-out whose rows the model's device wrote (MaskResult.png_stream) from a JPEG (no
    transparency of its own: the mask is the cut-out's alpha): only its chunks are left to make; the subject's box,
    as every answer measures it, from that alpha."""
    height, width = result.mask.shape
    assert result.png_stream is not None
    data = png.wrap_zlib_stream(result.png_stream.data, width, height, icc_profile=scan.icc_profile)
    return compose.Rendered(data, compose.MEDIA_TYPES["png"], width, height, compose.foreground_box(result.mask))


def _log_clean_up_failure(future: concurrent.futures.Future) -> None:
    """The outcome of a removal of expired batch results (on a codec thread, awaited by nobody): a failure (an
    object store's permissions, say) would otherwise go unseen while results pile up."""
    if not future.cancelled() and future.exception() is not None:
        logger.error("removing expired batch results failed", exc_info=future.exception())


def _retrieve_outcome(task: asyncio.Future) -> None:
    """Read a task's outcome that nobody awaits any more, so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _drop(model_call: asyncio.Future) -> None:
    """Cancel a model call whose answer is no longer wanted (no device time for it); its outcome is read when it
    ends."""
    model_call.cancel()
    model_call.add_done_callback(_retrieve_outcome)


# What follows the model for one image, on a codec thread: composite and encode.
Finish = Callable[[imaging.DecodedImage, MaskResult], compose.Rendered]

# After this long with no image in hand, an ingress replica gives its freed image buffers back to the system
# (serve_app/heap_trim.py): its RSS falls after a burst, and no request pays for fresh pages.
IDLE_TRIM_S = 2.0
# The outcomes of the large photos' PNGs this replica asked of the model replica lately (written or left to it).
# Checking such a photo's scan first pays while most come back written: one the replica leaves costs the scan and
# then the decode (docs/performance.md). While fewer than half do, the photo is decoded beside the call instead.
PNG_OUTCOMES_KEPT = 16
PNG_OUTCOMES_BEFORE_JUDGING = 4
INFO_TIMEOUT_S = 10.0  # /v1/info's wait for a model replica's description


# Resources, admission and scaling come from the Serve config (configs/prod.yaml), and only from there.
@serve.deployment
@serve.ingress(api)
class Ingress:
    """HTTP front door: validates, decodes, calls the model deployment, composites and encodes."""

    def __init__(self, remover: DeploymentHandle, ingress_settings: dict, served: dict):
        """`served`: the models' names ("default"; "aliases", rembg's names for them) and "input_sizes", the
        (width, height) each model resizes every image to: large JPEGs go to it as a reduced copy (ReducedImage)."""
        self.settings = IngressSettings.model_validate(ingress_settings)
        self._input_sizes = {name: (int(size[0]), int(size[1])) for name, size in served["input_sizes"].items()}
        self._default_model: str = served["default"]
        self._model_aliases: dict[str, str] = dict(served.get("aliases") or {})
        api.state.api_keys = load_api_keys(self.settings)
        api.state.cors_origins = self.settings.cors_allow_origins
        self.remover = remover
        self.fetcher = ImageFetcher(self.settings)
        location = self.settings.resolved_result_dir()
        self.results = ResultStore(location, self.settings.result_ttl_s, private=location == default_result_dir())
        self._codec_pool = named_pool(self.settings.codec_threads, "codec")
        # Separate from the codec pool, whose threads wait on these: one pool for both could deadlock.
        self._png_pool = named_pool(self.settings.png_threads, "png")
        self._last_cleanup = 0.0
        # URLs of /batch requests in flight on this replica, over all of them: each holds its photo from the fetch
        # to the encode (up to max_upload_bytes fetched and max_image_pixels decoded), so this, not the number of
        # batch requests the replica holds (up to max_ongoing_requests), bounds the memory they take.
        self._batch_items = asyncio.Semaphore(self.settings.batch_url_concurrency)
        # Images this replica is working on now: memory is trimmed once none are left, and a JPEG too small for a
        # reduced copy goes to the model as the file only while it is the one (device_jpeg_decode).
        self._cutting_out = 0
        # Whether the model's last answer to this replica came from a pass of one image with no other call held
        # by the model replica: the device decodes a file at once only when idle (BackgroundRemovalModel.decode_jpeg).
        self._device_idle = True
        self._png_outcomes: deque[bool] = deque(maxlen=PNG_OUTCOMES_KEPT)  # PNG_OUTCOMES_KEPT, above
        self._idle_since = time.monotonic()
        self._node_id = ray.get_runtime_context().get_node_id()

    # --- routes -------------------------------------------------------------------------------------

    @api.post("/v1/remove-background", response_class=Response, responses=IMAGE_RESPONSES)
    async def remove_from_upload(self, request: Request, options: NativeOptions) -> Response:
        """The image as the raw body (Content-Type image/*) or as multipart field `file`."""
        timer = StageTimer()
        with timer.stage("read"):
            data = await self._read_upload(request)
        return self._image_response(await self._cut_out(data, options, timer), timer)

    @api.get("/v1/remove-background", response_class=Response, responses=IMAGE_RESPONSES)
    async def remove_from_url(self, url: Annotated[str, Query(description="http(s) URL.")],
                              options: NativeUrlOptions) -> Response:
        """Fetch the image at `url`, then the same as the POST route."""
        timer = StageTimer()
        with timer.stage("fetch"):
            data = await self.fetcher.fetch(url)
        return self._image_response(await self._cut_out(data, options, timer), timer)

    @api.post("/v1/remove-background/batch", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}}}})
    async def remove_batch(self, request: Request, options: NativeOptions) -> StreamingResponse:
        """A JSON list of URLs (or {"urls": [...]}); streams one NDJSON line per URL as each finishes."""
        self._served_model(options.model)  # an unknown model fails the request, not each URL
        # A list of URLs is small: its body is capped at what max_batch_urls long URLs take, and parsed on a codec
        # thread (JSON of tens of MB would hold this replica's event loop for seconds).
        body = await self._read_capped_body(request, self.settings.max_batch_urls * MAX_URL_BYTES + 1024)
        urls = await self._in_pool(self._parse_url_list, body)
        self._maybe_clean_results()
        # Links to the results within this application: under a route prefix, /lite/v1/results/...
        results = request.scope.get("root_path", "").rstrip("/") + "/v1/results/"
        return StreamingResponse(self._stream_batch(urls, options, results), media_type="application/x-ndjson")

    @api.get("/v1/results/{name}", response_class=Response)
    async def get_result(self, name: str) -> Response:
        data = await self._in_pool(self.results.load, name)
        return Response(data, media_type=compose.MEDIA_TYPES[name.rpartition(".")[2]])

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self, request: Request) -> HTMLResponse:
        """The page to try the service in a browser (serve_app/page/)."""
        return HTMLResponse(page_html(request.scope.get("root_path", "")))

    @api.get(PAGE_PREFIX + "{name}", include_in_schema=False)
    async def page_file(self, name: str) -> Response:
        asset = page_asset(name)
        return Response(asset.data, media_type=asset.media_type, headers={"Cache-Control": "no-cache"})

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
        """The default model in full (`model`), every served model by name (`models`), the ingress's settings; a 503
        when a model replica does not answer within INFO_TIMEOUT_S (its calls queue behind a full replica's)."""
        try:
            async with asyncio.timeout(INFO_TIMEOUT_S):
                model = await self._call_remover("describe")
        except TimeoutError:
            raise ModelUnavailable(f"the model replica did not describe itself within {INFO_TIMEOUT_S:g} s; retry",
                                   headers={"Retry-After": str(self.settings.retry_after_s)}) from None
        return {"model": model, "models": model.get("models", {}), "default_model": self._default_model,
                "ingress": self.settings.model_dump(mode="json"), "ingress_versions": component_versions()}

    # --- rembg's server API ----------------------------------------------------------------------

    @api.get("/api/remove", tags=["rembg"], summary="rembg: remove from URL", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def rembg_from_url(
            self, request: Request, url: Annotated[str, Query(description="URL of the image.")],
            model: Annotated[str | None, Query(pattern=rembg.PATTERN, description=rembg.MODEL_HELP)] = None,
            a: Annotated[bool, Query(description=rembg.REFINE_HELP)] = False,
            af: Annotated[int, Query(ge=0, le=255, description=rembg.AF_HELP)] = 240,
            ab: Annotated[int, Query(ge=0, le=255, description=rembg.AB_HELP)] = 10,
            ae: Annotated[int, Query(ge=0, description=rembg.AE_HELP)] = 10,
            om: Annotated[bool, Query(description="Only the mask (grayscale PNG).")] = False,
            ppm: Annotated[bool, Query(description=rembg.PPM_HELP)] = False,
            bgc: Annotated[str | None, Query(description=rembg.BGC_HELP)] = None,
            extras: Annotated[str | None, Query(description=rembg.EXTRAS_HELP)] = None) -> Response:
        """rembg's `GET /api/remove?url=...`: the image at `url` through the URL policy, always a PNG."""
        params = rembg.parse(dict(request.query_params), dict(request.query_params), where="query",
                             served=tuple(self._model_aliases))
        data = await self.fetcher.fetch(url)
        return await self._rembg_answer(data, params)

    @api.post("/api/remove", tags=["rembg"], summary="rembg: remove from an upload", response_class=Response,
              responses={200: {"content": {"image/png": {}}}}, openapi_extra=rembg.POST_OPENAPI)
    async def rembg_from_upload(self, request: Request) -> Response:
        """rembg's `POST /api/remove`: multipart field `file` with the form fields model, a, af, ab, ae, om and
        ppm; `bgc` and `extras` in the query."""
        fields, files = await self._read_form(request, max_files=1, body_limit=self.settings.max_upload_bytes,
                                              error=rembg.form_error)
        if "file" not in files:
            raise rembg.missing_field("body", "file")
        params = rembg.parse(fields, dict(request.query_params), where="body", served=tuple(self._model_aliases))
        return await self._rembg_answer(files["file"], params)

    async def _rembg_answer(self, data: bytes, params: rembg.RembgRequest) -> Response:
        timer = StageTimer()
        model = self._model_aliases[params.model] if params.model else None
        rendered = await self._process(data, self._layout_finish(params.layout, params.shape_mask), timer,
                                       refine=params.refine, model=model,
                                       device_png=params.layout.plain_cutout and not params.shapes_mask)
        return self._image_response(rendered, timer)

    # --- remove.bg's API ---------------------------------------------------------------------------

    @api.post("/v1.0/removebg", tags=["remove.bg"], summary="remove.bg: remove the background",
              response_class=Response, openapi_extra=removebg.OPENAPI,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {},
                                           "application/zip": {}, "application/json": {}}}})
    async def removebg_route(self, request: Request) -> Response:
        """remove.bg's `POST /v1.0/removebg`, as multipart, URL-encoded form or JSON; X-Api-Key when keys are
        configured. Options it does not implement are refused with a 400 that names them."""
        fields, files = await self._read_removebg_body(request)
        # On a codec thread: a base64 photo of tens of MB takes a few hundred ms to decode, which on the event loop
        # would hold up every other request of this replica.
        params = await self._in_pool(removebg.parse, fields, files, accept=request.headers.get("accept", ""),
                                     webp_quality=self.settings.webp_quality, jpeg_quality=self.settings.jpeg_quality)
        if params.image_file is not None and len(params.image_file) > self.settings.max_upload_bytes:
            # image_file_b64: the form's own limit allows for base64 and a background
            raise PayloadTooLarge(f"the image is {len(params.image_file)} bytes; the limit is "
                                  f"{self.settings.max_upload_bytes}")

        async def photo() -> bytes:  # removebg.parse accepts a request only with a file or a URL
            return params.image_file if params.image_file is not None else await self.fetcher.fetch(
                cast(str, params.image_url))

        async def background() -> bytes | None:
            if params.bg_image_file is None and not params.bg_image_url:
                return None
            return (params.bg_image_file if params.bg_image_file is not None
                    else await self.fetcher.fetch(cast(str, params.bg_image_url)))

        # Both at once: with two URLs the request waits for the slower fetch, not for both in turn, and so stays
        # within the fetch_total_timeout_s + request_timeout_s that an ingress replica's shutdown waits for.
        data, picture = await gather_or_cancel(photo(), background())
        # The background's decode is one of the request's decodes: within its deadline, with the photo's steps.
        deadline_at = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        layout = params.layout
        if picture is not None:
            async with self._deadline(deadline_at):
                layout = dataclasses.replace(layout, bg_image=await self._background_pixels(picture))
        if layout.roi is not None:  # a region outside the photo is refused before the model spends time on it
            size = await self._in_pool(imaging.header_size, data)
            if size is not None:
                compose.check_roi_either_way(layout.roi, size)
        timer = StageTimer()
        rendered = await self._process(data, self._layout_finish(layout), timer, device_png=layout.plain_cutout,
                                       deadline_at=deadline_at)
        headers = {"Server-Timing": timer.header(), **rendered.headers(), "X-Type": params.result_type}
        if params.json_answer:  # base64 and JSON of a large answer: on a codec thread, not the event loop
            body = await self._in_pool(removebg.json_body, rendered)
            return Response(body, media_type="application/json", headers=headers)
        return Response(rendered.data, media_type=rendered.media_type, headers=headers)

    async def _background_pixels(self, picture: bytes) -> np.ndarray:
        """remove.bg's background picture as RGB; its errors say that it was the background."""
        try:
            decoded = await self._in_pool(imaging.decode_image, picture, max_pixels=self.settings.max_image_pixels)
        except ApiError as error:  # say which of the two pictures it was
            raise type(error)(f"the background picture: {error.message}", status=error.status, code=error.code,
                              headers=error.headers) from None
        # Colours under a transparent background's alpha are arbitrary: its transparent parts show white.
        return decoded.rgb if decoded.flattened is None else decoded.flattened

    async def _read_removebg_body(self, request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return await self._read_form(request, max_files=2, body_limit=self._form_limit(), error=removebg.invalid)
        if content_type == "application/json":
            try:
                fields = await self._in_pool(json.loads, await self._read_capped_body(request, self._form_limit()))
            except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than Python
                raise removebg.invalid("the body is not valid JSON") from None
            if not isinstance(fields, dict):
                raise removebg.invalid("the JSON body must be an object of parameters")
            return fields, {}
        raise removebg.invalid("send the parameters as multipart/form-data, application/x-www-form-urlencoded or "
                               f"application/json, not {content_type or 'no Content-Type'}")

    def _form_limit(self) -> int:
        """A form may carry two images (the photo and a background), base64 adding a third."""
        return 3 * self.settings.max_upload_bytes

    async def _read_form(self, request: Request, *, max_files: int, body_limit: int, error: Callable[[str], ApiError],
                         max_fields: int = 32) -> tuple[dict[str, str], dict[str, bytes]]:
        """A multipart or URL-encoded form's text fields and files, within the upload limits: the body checked
        against `body_limit` from its declared length before it is parsed, each file against max_upload_bytes."""
        limit = body_limit + 64 * 1024  # the parts' headers and boundaries
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {body_limit}")
        try:
            # Capped as it arrives too (a chunked body declares no length); any one part may be the whole body,
            # such as remove.bg's base64 in a text field (Starlette's own cap on a part is 1 MiB).
            form = await capped_request(request, limit=limit, what="the body",
                                        idle_timeout_s=self.settings.upload_read_timeout_s).form(
                max_files=max_files, max_fields=max_fields, max_part_size=limit)
        except ApiError:
            raise
        except Exception as failure:  # starlette raises several types for malformed bodies
            raise error(f"malformed form body: {failure}") from None
        fields: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields[name] = value
                continue
            if value.size is not None and value.size > self.settings.max_upload_bytes:
                raise PayloadTooLarge(f"{name} is {value.size} bytes; the limit is {self.settings.max_upload_bytes}")
            files[name] = await value.read()
        return fields, files

    # --- steps --------------------------------------------------------------------------------------

    async def _cut_out(self, data: bytes, options: OutputOptions,
                       timer: StageTimer | None = None) -> compose.Rendered:
        """The native API's answer for an upload (its options decide the plain or the composing path)."""
        plain_png = (not options.composed and options.format == "png" and not options.only_mask
                     and options.bg_color is None)
        return await self._process(data, self._native_finish(options), timer or StageTimer(), refine=options.refine,
                                   model=self._served_model(options.model), device_png=plain_png)

    def _served_model(self, name: str | None) -> str:
        """The served model a request names (None: the default), or 422 listing the served ones."""
        if name is None:
            return self._default_model
        if name not in self._input_sizes:
            raise InvalidOption(f"model {name!r} is not served here; served: {', '.join(self._input_sizes)} "
                                f"(default {self._default_model})")
        return name

    def _native_finish(self, options: OutputOptions) -> Finish:
        if options.composed:
            return self._layout_finish(options.layout(webp_quality=self.settings.webp_quality,
                                                      jpeg_quality=self.settings.jpeg_quality))

        def finish(decoded: imaging.DecodedImage, result: MaskResult) -> compose.Rendered:
            height, width = result.mask.shape
            # Before render, which may reuse the pixels; of the cut-out's alpha, as the composing path measures it,
            # so that an upload's own transparent area is outside the box on both paths.
            foreground = compose.foreground_box(imaging.cutout_alpha(decoded, result.mask))
            data = imaging.render(decoded, result.mask, options.format, only_mask=options.only_mask,  # type: ignore[arg-type]
                                  bg_color=options.bg_color, webp_quality=self.settings.webp_quality,
                                  **self._png_stripes())
            return compose.Rendered(data, options.media_type, width, height, foreground)
        return finish

    def _layout_finish(self, layout: compose.Layout, mask_step: Callable[[np.ndarray], np.ndarray] | None = None
                       ) -> Finish:
        """Compose as `layout` says, after `mask_step` (rembg's mask options) if given."""
        def finish(decoded: imaging.DecodedImage, result: MaskResult) -> compose.Rendered:
            mask = result.mask if mask_step is None else mask_step(result.mask)
            return compose.render_cutout(decoded, mask, layout, colours=result.foreground, **self._png_stripes())
        return finish

    def _png_stripes(self) -> dict[str, Any]:
        """Where a PNG's stripes are compressed: on the PNG pool's `png_threads` while this replica has only this
        image in hand (its encode is then most of what the client waits for after the model); under load on the
        codec thread alone, which hands nothing between threads and so spends the least CPU per image (see
        docs/performance.md, "The ingress's CPU work"). Called as the encode starts, on the codec thread: the count
        of images in hand is read then, not when the request arrived."""
        if self._cutting_out > 1:
            return {"png_pool": None, "png_threads": 1}
        return {"png_pool": self._png_pool, "png_threads": self.settings.png_threads}

    async def _process(self, data: bytes, finish: Finish, timer: StageTimer, *, refine: bool = False,
                       model: str | None = None, device_png: bool = False,
                       deadline_at: float | None = None) -> compose.Rendered:
        """Decode, segment with `model` (None: the default), then `finish` (composite and encode) within the request
        deadline (504 when missed; `deadline_at`, on the loop's clock, where earlier steps of the request count
        too). With `refine`, the model replica also estimates the subject's colours. With `device_png` (the answer
        is the plain RGBA PNG cut-out, what the model replica's png_stream makes without `finish`), a large JPEG's
        PNG is asked of the model replica (device_png_min_pixels)."""
        if deadline_at is None:
            deadline_at = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        async with self._deadline(deadline_at):  # cancels the model call too: no GPU time for a lost cause
            return await self._process_steps(data, finish, timer, refine, model or self._default_model, device_png)

    @contextlib.asynccontextmanager
    async def _deadline(self, deadline_at: float) -> AsyncIterator[None]:
        """The request's deadline (request_timeout_s) at `deadline_at`, on the loop's clock: a 504 when missed."""
        try:
            async with asyncio.timeout_at(deadline_at):
                yield
        except TimeoutError:
            raise DeadlineExceeded(f"the image was not processed within {self.settings.request_timeout_s:g} s; "
                                   "retry later") from None

    async def _process_steps(self, data: bytes, finish: Finish, timer: StageTimer, refine: bool, model: str,
                             device_png: bool) -> compose.Rendered:
        self._cutting_out += 1
        try:
            return await self._decode_segment_finish(data, finish, timer, refine, model, device_png)
        finally:
            self._cutting_out -= 1
            if not self._cutting_out:
                self._idle_since = time.monotonic()
                asyncio.get_running_loop().call_later(IDLE_TRIM_S, self._trim_if_still_idle)

    def _trim_if_still_idle(self) -> None:
        if not self._cutting_out and time.monotonic() - self._idle_since >= IDLE_TRIM_S:
            with contextlib.suppress(RuntimeError):  # the pool is shut down: the replica is stopping
                self._codec_pool.submit(release_free_memory)

    async def _decode_segment_finish(self, data: bytes, finish: Finish, timer: StageTimer, refine: bool,
                                     model: str, device_png: bool) -> compose.Rendered:
        encoded = None if refine else self._to_decode_on_device(data, model)
        reduced = None
        if not refine and encoded is None:
            with timer.stage("decode"):  # the model's copy, when the upload is a large JPEG
                reduced = await self._in_pool(imaging.reduced_jpeg, data, min_size=self._input_sizes[model],
                                              max_pixels=self.settings.max_image_pixels)
        if encoded is not None:
            min_pixels = self.settings.device_png_min_pixels
            on_device = device_png and min_pixels > 0 and encoded.size[0] * encoded.size[1] >= min_pixels
            with timer.stage("model"):
                if on_device and self._scan_first():
                    decoded, result = await self._segment_with_device_png(encoded, timer, model)
                else:
                    decoded, result = await self._segment_beside_decode(encoded, timer, model, with_png=on_device)
        elif reduced is not None:
            with timer.stage("model"):
                decoded, result = await self._segment_reduced(reduced, data, timer, model)
        else:
            with timer.stage("decode"):
                decoded = await self._in_pool(imaging.decode_image, data, max_pixels=self.settings.max_image_pixels)
            with timer.stage("model"):
                result = await self._segment(decoded.model_input, timer, refine, model)
        timer.record("model_queue", result.queued_ms)
        timer.record("model_batch", result.batch_ms)
        with timer.stage("encode"):  # of which encode_on_thread is the work itself
            if isinstance(decoded, imaging.JpegScan):  # the model replica wrote the PNG's rows
                return await self._in_pool(_in_stage, timer, "encode_on_thread", _device_png_answer, decoded, result)
            return await self._in_pool(_in_stage, timer, "encode_on_thread", finish, decoded, result)

    async def _segment_reduced(self, reduced: ReducedImage, data: bytes, timer: StageTimer,
                               model: str) -> tuple[imaging.DecodedImage, MaskResult]:
        """The model works on the reduced copy while this replica decodes the whole photo for the cut-out."""
        full = asyncio.ensure_future(self._in_pool(_in_stage, timer, "decode_beside_model", imaging.decode_image,
                                                   data, max_pixels=self.settings.max_image_pixels))
        try:
            result = await self._segment(reduced, timer, model=model)
        except BaseException:
            full.cancel()
            raise
        return await full, result

    def _to_decode_on_device(self, data: bytes, model: str) -> EncodedJpeg | None:
        """The upload as a file for the model replica to decode (`auto`), when it is a JPEG the device can decode
        and either this is the only image this replica is working on and the device was idle at the last answer,
        or it is large enough for a reduced copy, at any load; else None (pixels go)."""
        if self.settings.device_jpeg_decode == "never":
            return None
        lone = self._cutting_out <= 1 and self._device_idle
        encoded = imaging.device_decodable_jpeg(data, max_pixels=self.settings.max_image_pixels)
        if encoded is None or lone:
            return encoded
        height, width = encoded.size
        return encoded if imaging.large_enough_to_reduce((width, height), self._input_sizes[model]) else None

    def _scan_first(self) -> bool:
        """Whether a large JPEG whose PNG is asked of the model replica gets its scan checked rather than decoded
        beside the call: until a few outcomes are known, and while at least half of them were PNGs written."""
        outcomes = self._png_outcomes
        return len(outcomes) < PNG_OUTCOMES_BEFORE_JUDGING or 2 * sum(outcomes) >= len(outcomes)

    async def _segment_beside_decode(self, encoded: EncodedJpeg, timer: StageTimer, model: str, with_png: bool = False
                                     ) -> tuple[imaging.DecodedImage | imaging.JpegScan, MaskResult]:
        """The model replica decodes its copy of the JPEG on its device while this replica decodes its own for the
        cut-out; a file the replica cannot decode, or one whose scan libjpeg does not read cleanly (the replica's
        decode of it may hold rows it never wrote: DecodedImage.clean_jpeg_scan), goes again as this replica's
        pixels. With `with_png`, the replica is asked for the cut-out's PNG too, which is the answer (a JpegScan
        comes back) when it wrote one and the scan is clean."""
        model_call = asyncio.ensure_future(self._segment(encoded, timer, model=model, with_png=with_png))
        try:
            with timer.stage("model_cpu_decode"):  # a part of the model stage: it runs beside the model call
                decoded = await self._in_pool(imaging.decode_image, encoded.data,
                                              max_pixels=self.settings.max_image_pixels)
        except BaseException:
            _drop(model_call)  # the upload is broken after all
            raise
        result = await self._mask_for(decoded, await self._file_answer(model_call, with_png), timer, model)
        if with_png and decoded.clean_jpeg_scan and result.png_stream is not None:
            return imaging.JpegScan(True, decoded.icc_profile), result
        return decoded, result

    async def _segment_with_device_png(self, encoded: EncodedJpeg, timer: StageTimer, model: str
                                       ) -> tuple[imaging.DecodedImage | imaging.JpegScan, MaskResult]:
        """The model replica decodes the JPEG on its device and writes the cut-out's PNG rows from that decode
        (MaskResult.png_stream), while this replica only checks the file's scan (imaging.scan_jpeg: about half a
        full decode's CPU time): the answer then needs none of its pixels (a JpegScan comes back). It decodes the
        photo only when the answer needs the pixels: after a scan libjpeg warns about (the replica's decode may
        hold rows it never wrote; the replica's call is dropped, and the mask comes from these pixels), or when the
        replica wrote no PNG (its PNG coder or its device was busy) or could not decode the file."""
        model_call = asyncio.ensure_future(self._segment(encoded, timer, model=model, with_png=True))
        try:
            with timer.stage("model_cpu_scan"):  # a part of the model stage: it runs beside the model call
                scan = await self._in_pool(imaging.scan_jpeg, encoded.data)
        except BaseException:
            _drop(model_call)
            raise
        result: MaskResult | None = None
        if not scan.clean:
            _drop(model_call)  # its mask would not be trusted
            logger.warning("libjpeg warned about a JPEG sent to the model replica; sending its pixels instead")
        else:
            result = await self._file_answer(model_call, with_png=True)
            if result is not None and result.png_stream is not None and result.mask.shape == encoded.size:
                timer.record("model_device_decode", result.device_decode_ms)
                return scan, result
        with timer.stage("model_cpu_decode"):  # a broken file fails here: the client's 422
            decoded = await self._in_pool(imaging.decode_image, encoded.data,
                                          max_pixels=self.settings.max_image_pixels)
        return decoded, await self._mask_for(decoded, result, timer, model)  # confirms the scan check's verdict

    async def _file_answer(self, model_call: asyncio.Future, with_png: bool) -> MaskResult | None:
        """The model replica's answer for a file, or None when it could not decode it (this replica's pixels go
        instead); the outcome of a PNG asked with it is kept (PNG_OUTCOMES_KEPT)."""
        try:
            result: MaskResult = await model_call
        except DeviceDecodeFailed as error:
            cause = getattr(error, "cause", None) or error  # Ray's wrapper carries the replica's exception
            logger.warning("the model replica could not decode a JPEG (%s); sending its pixels", cause)
            return None
        if with_png:
            self._png_outcomes.append(result.png_stream is not None)
        return result

    async def _mask_for(self, decoded: imaging.DecodedImage, result: MaskResult | None, timer: StageTimer,
                        model: str) -> MaskResult:
        """The model replica's `result` for the file of `decoded`, where it stands for these pixels (libjpeg read
        the scan cleanly, the mask has the photo's size), else the model's answer for these pixels."""
        if result is not None and not decoded.clean_jpeg_scan:
            logger.warning("libjpeg warned about a JPEG the model replica decoded; sending its pixels instead")
            result = None
        if result is not None and result.mask.shape != decoded.pixels.shape[:2]:
            result = None
        if result is None:
            result = await self._segment(decoded.model_input, timer, model=model)
        timer.record("model_device_decode", result.device_decode_ms)
        return result

    async def _segment(self, image: np.ndarray | ReducedImage | EncodedJpeg, timer: StageTimer, refine: bool = False,
                       model: str | None = None, with_png: bool = False) -> MaskResult:
        """The model's answer for one image, noting whether the device was idle for the next decision, and the
        time the call spent outside the model replica (Server-Timing model_transport; with a replica on this node,
        also split into model_to_replica and model_from_replica by the shared wall clock)."""
        called, called_at = time.perf_counter(), time.time()
        result = await self._call_remover("remove_background", image, refine, model, with_png)
        self._device_idle = result.batch_size == 1 and result.device_backlog == 0
        if refine:
            timer.record("model_refine", result.refine_ms)
        if result.png_stream is not None:
            timer.record("model_png", result.png_ms)
        timer.record("model_transport", (time.perf_counter() - called - (result.left_at - result.arrived_at)) * 1000)
        if result.replica_node == self._node_id:
            timer.record("model_to_replica", (result.arrived_at - called_at) * 1000)
            timer.record("model_from_replica", (time.time() - result.left_at) * 1000)
        return result

    @staticmethod
    def _image_response(rendered: compose.Rendered, timer: StageTimer) -> Response:
        return Response(rendered.data, media_type=rendered.media_type,
                        headers={"Server-Timing": timer.header(), **rendered.headers()})

    async def _call_remover(self, method: str, *args: Any) -> Any:
        """Call the model deployment, retrying once if its replica died (every call is idempotent)."""
        for attempt in (1, 2):
            try:
                return await getattr(self.remover, method).remote(*args)
            except BackPressureError:
                raise Overloaded("the model queue is full; retry shortly",
                                 headers={"Retry-After": str(self.settings.retry_after_s)}) from None
            except ModelNotReady as error:  # its model is loading (or has no room to): a retry will find it
                cause = getattr(error, "cause", None) or error  # Ray's wrapper carries the replica's exception
                retry_after = getattr(cause, "retry_after_s", self.settings.retry_after_s)
                raise ModelUnavailable(str(cause), headers={"Retry-After": str(retry_after)}) from None
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

    async def _read_capped_body(self, request: Request, limit: int | None = None) -> bytes:
        return await read_capped(request.stream(), limit=limit or self.settings.max_upload_bytes,
                                 declared_length=request.headers.get("content-length"), what="the body",
                                 idle_timeout_s=self.settings.upload_read_timeout_s)

    async def _read_multipart(self, request: Request) -> bytes:
        fields, files = await self._read_form(request, max_files=1, max_fields=8,
                                              body_limit=self.settings.max_upload_bytes, error=BadRequest)
        if "file" in fields:  # a part without a filename is a text field to the parser: `curl -F file=photo.jpg`
            raise BadRequest("the multipart field 'file' came as text, not as a file: send it with a filename "
                             "(curl -F file=@photo.jpg)")
        if "file" not in files:
            raise BadRequest("the multipart body has no file field named 'file' (or it was cut short)")
        others = sorted((set(fields) | set(files)) - {"file"})
        if others:  # `-F only_mask=true` would otherwise give a cut-out without a word
            raise InvalidOption(f"the multipart body's field(s) {', '.join(others)} are not read: the options go in "
                                "the query string (?only_mask=true&format=webp), the image in the field 'file'")
        return files["file"]

    def _parse_url_list(self, body: bytes) -> list[str]:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than Python
            raise BadRequest('the body must be JSON: a list of URLs, or {"urls": [...]}') from None
        if isinstance(payload, dict) and set(payload) - {"urls"}:
            raise InvalidOption(f"the body's key(s) {', '.join(sorted(set(payload) - {'urls'}))} are not read: the "
                                'body is {"urls": [...]}, and the options go in the query string (?format=webp)')
        urls = payload.get("urls") if isinstance(payload, dict) else payload
        if not isinstance(urls, list) or not urls or not all(isinstance(url, str) for url in urls):
            raise InvalidOption('the body must be a non-empty JSON list of URL strings, or {"urls": [...]}')
        if len(urls) > self.settings.max_batch_urls:
            raise PayloadTooLarge(f"{len(urls)} URLs; a batch takes at most {self.settings.max_batch_urls}")
        return urls

    async def _stream_batch(self, urls: list[str], options: OutputOptions, results: str) -> AsyncIterator[bytes]:
        tasks = [asyncio.create_task(self._batch_item(index, url, options, results))
                 for index, url in enumerate(urls)]
        try:
            for finished in asyncio.as_completed(tasks):
                yield (json.dumps(await finished) + "\n").encode()
        finally:
            for task in tasks:  # the client went away: stop the work nobody will read
                task.cancel()

    async def _batch_item(self, index: int, url: str, options: OutputOptions, results: str) -> dict:
        async with self._batch_items:
            try:
                rendered = await self._cut_out(await self.fetcher.fetch(url), options)
                name = await self._in_pool(self.results.save, rendered.data, options.format)
                return {"index": index, "url": url, "status": "ok", "result": results + name,
                        "media_type": options.media_type, **rendered.geometry()}
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
            self._codec_pool.submit(self.results.delete_expired).add_done_callback(_log_clean_up_failure)

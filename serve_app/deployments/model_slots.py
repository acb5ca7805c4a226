"""The models one model replica holds: each with its own batching queue and limits, all sharing one device.

A `ModelSlot` is one loaded model: its core, the thread its device work runs on, its `@serve.batch` queue (so a
pass never mixes models) and its live batch limit. `ModelSlots` is the replica's set of them: the resident models
load before the replica takes traffic; any other loads on its first request, on a loader thread, while the loaded
models keep serving. Its requests wait for it up to `load_wait_s`, then get `ModelLoading` (the ingress answers
503 with Retry-After) while it goes on loading; a load that fails is answered the same way, and tried again by the
first request after a pause. With `max_loaded_models`, loading one more unloads the non-resident model idle
longest, never one in use or awaited; if every loaded model is resident or busy, the request gets
`NoRoomForModel`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ray import serve

from serve_app.deployments.batching import FORMED_PASSES_MAX, DeviceBatch, DeviceClock, DevicePasses
from serve_app.protocol import EncodedJpeg, ModelNotReady, OutOfDeviceMemory, ReducedImage
from serve_app.settings import BatchSettings, ModelSettings
from serve_app.threads import named_pool

logger = logging.getLogger("ray.serve")

# Passes without running out of memory after which a split's lower batch limit doubles back up.
PASSES_BEFORE_RAISING_THE_LIMIT = 200
# Retry-After for an image that ran out of device memory alone: the passes around it finish in about that.
OUT_OF_MEMORY_RETRY_AFTER_S = 2
# Threads that write large photos' PNGs on the device at once. One PNG's kernels take well under a millisecond of
# the device; most of its time is spent waiting for them and for the copies around them, which a second thread
# overlaps with its own.
DEVICE_PNG_THREADS = 2


class ModelUnavailable(Exception):
    """The requested model cannot serve this request yet; a retry in a moment may find it (503 + Retry-After)."""


class ModelLoading(ModelUnavailable):
    """The model is still loading after the request waited `load_wait_s` for it."""

    def __init__(self, name: str, waited_s: float):
        super().__init__(f"model {name!r} is still loading after {waited_s:g} s; retry shortly")
        self.name = name


class NoRoomForModel(ModelUnavailable):
    """Every loaded model is resident or in use: none can be unloaded to make room for another."""


class ModelLoadFailed(ModelUnavailable):
    """The model's last load failed moments ago; the next request after a pause tries again."""


class MaskModel(Protocol):
    """What a slot needs of the model core (serve_app/model/core.py's BackgroundRemovalModel)."""

    on_out_of_memory: Callable[[int], None] | None

    @property
    def forward_executor(self) -> Any: ...

    def submit(self, images: Sequence[Any]) -> Any: ...
    def decode_jpeg(self, encoded: EncodedJpeg) -> Any: ...
    def probe_batch_limit(self, ceiling: int, headroom_fraction: float = 0.1) -> int: ...
    def estimate_foreground(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray: ...
    def cutout_stream(self, pixels: Any, mask: np.ndarray) -> np.ndarray | None: ...
    def check_device(self) -> None: ...
    def describe(self) -> dict: ...
    def close(self) -> None: ...


class SlotMetrics(Protocol):
    """Per-model counters (Ray metrics tagged with the model's name)."""

    def batch(self, model: str, size: int) -> None: ...
    def split(self, model: str) -> None: ...


def _log_close_failure(name: str, closed: concurrent.futures.Future) -> None:
    """An unload's outcome, awaited by nobody: a model that did not close may still hold device memory that the
    load queued behind it then lacks, for no visible cause."""
    if not closed.cancelled() and closed.exception() is not None:
        logger.error("unloading model %r failed", name, exc_info=closed.exception())


@dataclass(frozen=True)
class FailedAlone:
    """An image whose pass of its own failed (after its pass with others did): the error, for its caller alone."""

    error: Exception


@dataclass
class Joined:
    """A call in `@serve.batch`'s queue: its image, and whether a pass has formed with it (until then it counts as
    gathering in the wait that later calls set)."""

    image: Any
    formed: bool = False
    cancelled: bool = False  # its caller gave up after its pass formed: the pass leaves it out


class ModelSlot:
    """One loaded model: `remove_background` joins its own `@serve.batch` queue; its passes share the device."""

    def __init__(self, settings: ModelSettings, model: MaskModel, clock: DeviceClock, defaults: BatchSettings,
                 metrics: SlotMetrics, startup: dict):
        self.name = settings.served_name
        self.settings = settings
        self.model = model
        self.startup = startup
        self._metrics = metrics
        # The model's device work runs on one thread, in order; the compiled forward's own thread where it has one.
        self.thread = model.forward_executor or named_pool(1, "model")
        self.passes = DevicePasses(model.submit, self.thread, on_batch=self._count_batch, clock=clock)
        # Large photos' PNGs, written on the device: their waits (a few per photo) keep off the model thread.
        self._png_threads = named_pool(DEVICE_PNG_THREADS, "device-png")
        self.pngs_in_hand = 0  # on a PNG thread or waiting for one
        # Asked-for PNGs by outcome: written, device_busy, coder_busy, not_written.
        self.device_pngs: Counter[str] = Counter()
        self.batch_sizes: Counter[int] = Counter()
        self.batch_settings = settings.batching or defaults
        self.live_max_batch_size = self.batch_settings.max_batch_size
        self.fitting_batch: int | None = None  # the largest batch known to fit (None: no limit found)
        self._probed_fit: int | None = None  # the memory probe's limit, which a split's never goes above again
        self._passes_since_split = 0
        self._probed_up_to = 0
        self.in_use = 0  # calls holding it (ModelSlots.use) until their masks are back: never unloaded meanwhile
        self.last_used = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batched: Any = serve.batch(max_batch_size=self.live_max_batch_size,
                                         batch_wait_timeout_s=self.batch_settings.batch_wait_timeout_s,
                                         max_concurrent_batches=FORMED_PASSES_MAX)(self._run_batch)
        model.on_out_of_memory = self._lower_batch_limit

    async def decode(self, encoded: EncodedJpeg) -> Any:
        """The model's copy of a JPEG, decoded on the device (a tensor for `masks`), on the model thread, between
        the submissions of its passes (BackgroundRemovalModel.decode_jpeg). Raises DeviceDecodeFailed."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, self.model.decode_jpeg, encoded)

    async def masks(self, image: np.ndarray | ReducedImage | Any) -> tuple[np.ndarray, DeviceBatch]:
        """The mask of one image (pixels, a reduced copy or `decode`'s tensor), from a pass shared with the calls
        for this model that arrive meanwhile. ModelNotReady (a 503 with Retry-After) when the device ran out of
        memory on this image even in a pass of its own."""
        self._loop = self._loop or asyncio.get_running_loop()
        # Set before joining: the pass this call starts (or the one after the pass gathering now) gathers the calls
        # arriving until the device can take it.
        self._batched.set_batch_wait_timeout_s(self.passes.wait_s(self.batch_settings.batch_wait_timeout_s))
        call = Joined(image)
        self.passes.gathering += 1
        try:
            mask, batch = await self._batched(call)
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            if not call.formed:  # cancelled while its pass gathered: Serve drops it from the pass
                self.passes.gathering -= 1
        if isinstance(mask, FailedAlone):
            raise mask.error
        if isinstance(mask, BaseException):
            raise ModelNotReady(f"the GPU ran out of memory on this image even alone ({type(mask).__name__}); "
                                "retry shortly", OUT_OF_MEMORY_RETRY_AFTER_S)
        return mask, batch

    async def _run_batch(self, calls: list[Joined]) -> list[tuple[Any, DeviceBatch]]:
        for call in calls:
            call.formed = True
        self.passes.gathering -= len(calls)
        try:
            masks, batch = await self.passes.run([call.image for call in calls],
                                                 wanted=lambda: [not call.cancelled for call in calls])
        except Exception as error:
            if len(calls) == 1 or not await self._device_works():
                # A broken device: the one exception goes to every call, as the device guard recognises the pass
                # that broke it (and a pass per image would only fail again).
                raise
            # Serve gives a pass's exception to every call in it: an image the model cannot take (a shape, say)
            # would fail its batch-mates with its own error. Each runs again alone; only the one that fails, fails.
            logger.warning("a pass of %d images failed (%s: %s) on a device that works; running each alone",
                           len(calls), type(error).__name__, error)
            return [await self._alone(call) for call in calls]
        return [(mask, batch) for mask in masks]

    async def _device_works(self) -> bool:
        """Whether the device still computes (a tiny kernel, on the model's thread after its queued work)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self.thread, self.model.check_device)
        except Exception:  # noqa: BLE001 - whatever the device raises, it does not work
            return False
        return True

    async def _alone(self, call: Joined) -> tuple[Any, DeviceBatch]:
        """`call`'s image in a pass of its own; its failure as a FailedAlone for its caller alone."""
        try:
            masks, batch = await self.passes.run([call.image], wanted=lambda: [not call.cancelled])
        except Exception as error:
            return FailedAlone(error), DeviceBatch(time.perf_counter(), 0.0, 0)
        return masks[0], batch

    @property
    def full_pass_waiting(self) -> bool:
        """Whether a full pass of this model's calls waits for the device (formed behind the passes on it, or
        gathering): the device, not what feeds it, is then what limits throughput."""
        return self.passes.formed > 0 or self.passes.gathering >= self.live_max_batch_size

    async def cutout_stream(self, pixels: Any, mask: np.ndarray) -> np.ndarray | None:
        """The zlib stream of the cut-out's PNG rows, written on the device from `decode`'s pixels and their mask
        (BackgroundRemovalModel.cutout_stream), on one of this model's PNG threads; None when the device cannot
        now."""
        loop = asyncio.get_running_loop()
        writing = self._png_threads.submit(self.model.cutout_stream, pixels, mask)
        self.pngs_in_hand += 1
        # In hand until a thread is done with it: a caller that gives up (its deadline, its client gone) leaves
        # the PNG on the thread, which the next photos would wait behind.
        writing.add_done_callback(lambda _: self._png_done(loop))
        return await asyncio.wrap_future(writing)

    def _png_done(self, loop: asyncio.AbstractEventLoop) -> None:
        """On a PNG thread: one PNG fewer in hand, counted on the event loop that counts them."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the replica is stopping
            loop.call_soon_threadsafe(self._count_png_done)

    def _count_png_done(self) -> None:
        self.pngs_in_hand -= 1

    async def foreground(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Clean edges, on the model thread after the passes queued there: the device does one thing at a time.
        ModelNotReady (a 503 with Retry-After) when the device runs out of memory on it, as for a mask."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.thread, self.model.estimate_foreground,
                                                                    image, mask)
        except OutOfDeviceMemory as error:
            raise ModelNotReady(f"the GPU ran out of memory on this image's clean edges ({error}); retry shortly, or "
                                "without refine", OUT_OF_MEMORY_RETRY_AFTER_S) from None

    def configure(self, defaults: BatchSettings, probe: bool) -> None:
        """Apply the deployment's batch settings (unless the model has its own); with `probe` (before traffic
        only: a probe during traffic would measure other passes too), find the largest batch that fits in the
        device memory the loaded models leave."""
        self.batch_settings = self.settings.batching or defaults
        ceiling = self.batch_settings.max_batch_size
        if probe and self.settings.probe_batch_limit and ceiling > self._probed_up_to:
            self._probed_up_to = ceiling
            started = time.perf_counter()
            fits = self.model.probe_batch_limit(ceiling, self.settings.memory_headroom_fraction)
            # Everything up to the ceiling fitting says nothing about larger batches: no limit then.
            self.fitting_batch = self._probed_fit = fits if fits < ceiling else None
            self.startup["memory_probe_s"] = round(time.perf_counter() - started, 1)
            logger.info("%s: memory probe up to a batch of %d: %d fits", self.name, ceiling, fits)
        self._apply_batch_limit()

    def _apply_batch_limit(self) -> None:
        limit = min(self.batch_settings.max_batch_size, self.fitting_batch or self.batch_settings.max_batch_size)
        self._batched.set_max_batch_size(limit)
        self.live_max_batch_size = limit

    def _lower_batch_limit(self, failed_size: int) -> None:
        """Called from the model thread when a batch of `failed_size` ran out of memory (and is being split)."""
        self._metrics.split(self.name)
        self.fitting_batch = max(1, min(self.fitting_batch or failed_size, failed_size // 2))
        self._passes_since_split = 0
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_batch_limit)

    def _count_batch(self, size: int) -> None:
        self.batch_sizes[size] += 1
        self._metrics.batch(self.name, size)
        # A split's lower limit is no measure of the memory (another model's pass, a large upload's resize may have
        # held it): after enough passes without one, the limit doubles back towards the probe's, one step at a time.
        self._passes_since_split += 1
        ceiling = self._probed_fit or self.batch_settings.max_batch_size
        if (self.fitting_batch is not None and self.fitting_batch < ceiling
                and self._passes_since_split >= PASSES_BEFORE_RAISING_THE_LIMIT):
            self._passes_since_split = 0
            raised = min(self.fitting_batch * 2, ceiling)
            self.fitting_batch = self._probed_fit if raised >= ceiling else raised  # at the top: as before the split
            logger.info("%s: no batch ran out of memory in %d passes: batch limit back up to %d", self.name,
                        PASSES_BEFORE_RAISING_THE_LIMIT, raised)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._apply_batch_limit)

    def close(self) -> None:
        """Free the model's device memory, after the work already queued on its thread."""
        try:
            if self.model.forward_executor is None:
                self.thread.shutdown(wait=True)
            self._png_threads.shutdown(wait=True)
            self.model.close()  # shuts the compiled forward's own thread down, after its queue
        finally:
            self.passes.close()

    def describe(self) -> dict:
        return {
            **self.model.describe(),
            "name": self.name, "loaded": True, "resident": self.settings.resident,
            "batching": {**self.batch_settings.model_dump(), "live_max_batch_size": self.live_max_batch_size,
                         "fitting_batch_size": self.fitting_batch},
            "batch_size_histogram": {str(size): count for size, count in sorted(self.batch_sizes.items())},
            "device_png": dict(sorted(self.device_pngs.items())),
            "device_pngs_in_hand": self.pngs_in_hand,  # the coder's now: at most DEVICE_PNGS_IN_HAND
            "startup": self.startup,
        }


class ModelSlots:
    """The replica's models by name: the loaded ones, the ones loading, and which to unload for room."""

    def __init__(self, settings: Sequence[ModelSettings], load: Callable[[ModelSettings], ModelSlot], *,
                 max_loaded: int | None, load_wait_s: float):
        self.settings = {entry.served_name: entry for entry in settings}
        self.default_name = settings[0].served_name
        self._load = load
        self._max_loaded = max_loaded or len(self.settings)
        self._load_wait_s = load_wait_s
        self.loaded: dict[str, ModelSlot] = {}
        self._loading: dict[str, asyncio.Future[ModelSlot]] = {}
        self._waiting: Counter[str] = Counter()  # requests waiting for each model: its slot is not unloaded
        self._failed: dict[str, tuple[float, str]] = {}  # name -> (time.monotonic() of the failure, why)
        self._loader = named_pool(1, "model-loader")
        self.unloads = 0

    def load_residents(self) -> None:
        """Load every resident model now, in order (the default first): before the replica takes traffic."""
        for name, entry in self.settings.items():
            if entry.resident:
                self.loaded[name] = self._load(entry)

    @property
    def default(self) -> ModelSlot:
        return self.loaded[self.default_name]

    @contextlib.asynccontextmanager
    async def use(self, name: str | None) -> AsyncIterator[ModelSlot]:
        """The slot of model `name` (None: the default), loaded first if needed, held in use (never unloaded)
        for the block."""
        name = name or self.default_name
        if name not in self.settings:
            raise KeyError(name)  # the ingress checks names first; a replica of another config may not
        self._waiting[name] += 1
        try:
            slot = await self._loaded(name)
            slot.in_use += 1  # no await since it was found loaded: nothing can unload it in between
        finally:
            self._waiting[name] -= 1
        try:
            yield slot
        finally:
            slot.in_use -= 1
            slot.last_used = time.monotonic()

    async def _loaded(self, name: str) -> ModelSlot:
        deadline = time.monotonic() + self._load_wait_s
        while (slot := self.loaded.get(name)) is None:
            failed_at, why = self._failed.get(name, (-math.inf, ""))
            if time.monotonic() - failed_at < self.retry_after_s():
                raise ModelLoadFailed(f"model {name!r} failed to load: {why}; retrying after a pause")
            loading = self._loading.get(name) or self._start_loading(name)
            try:
                await asyncio.wait_for(asyncio.shield(loading), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                if loading.done():  # the load's own TimeoutError (a download that timed out): a failure
                    continue
                raise ModelLoading(name, self._load_wait_s) from None
            except Exception:
                continue  # the failure is in _failed now: the loop answers for it
        return slot

    def _start_loading(self, name: str) -> asyncio.Future[ModelSlot]:
        while len(self.loaded) + len(self._loading) >= self._max_loaded:
            self._unload_one()
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        logger.info("loading model %r on first use", name)
        future = loop.run_in_executor(self._loader, self._load, self.settings[name])
        self._loading[name] = future

        def loaded(done: asyncio.Future[ModelSlot]) -> None:
            del self._loading[name]
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                logger.error("loading model %r failed: %r", name, error)
                self._failed[name] = (time.monotonic(), f"{type(error).__name__}: {error}")
                return
            slot = done.result()
            slot.last_used = time.monotonic()  # the most recently used: not the next to make room
            self._failed.pop(name, None)
            self.loaded[name] = slot
            logger.info("model %r loaded in %.1f s", name, time.monotonic() - started)
        future.add_done_callback(loaded)
        return future

    def _unload_one(self) -> None:
        idle = [slot for slot in self.loaded.values()
                if not slot.settings.resident and slot.in_use == 0 and not self._waiting[slot.name]]
        if not idle:
            raise NoRoomForModel(f"no room for another model: max_loaded_models={self._max_loaded}, and every "
                                 "loaded model is resident or in use")
        slot = min(idle, key=lambda candidate: candidate.last_used)
        del self.loaded[slot.name]
        self.unloads += 1
        logger.info("unloading model %r (idle %.0f s) to make room", slot.name, time.monotonic() - slot.last_used)
        # On the loader thread, which then loads the model this makes room for.
        self._loader.submit(slot.close).add_done_callback(functools.partial(_log_close_failure, slot.name))

    def describe(self) -> dict[str, dict]:
        """Every configured model: the loaded ones in full, the others with what they are and whether loading."""
        described = {}
        for name, entry in self.settings.items():
            slot = self.loaded.get(name)
            described[name] = slot.describe() if slot is not None else {
                "name": name, "model_id": entry.model_id, "loaded": False, "loading": name in self._loading,
                "resident": entry.resident, "input_size": list(entry.input_size)}
            if name in self._failed and slot is None:
                described[name]["load_failed"] = self._failed[name][1]
        return described

    def retry_after_s(self) -> int:
        """Seconds a request refused while its model loads (or after its load failed) is told to wait."""
        return max(1, math.ceil(self._load_wait_s / 2))

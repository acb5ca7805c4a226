"""The GPU deployment: one replica per GPU, holding the configured models and coalescing single-image calls into
batches for each."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.metrics import Counter as MetricCounter
from ray.serve.metrics import Histogram

from serve_app.deployments.batching import DeviceClock
from serve_app.deployments.device_guard import DeviceGuard
from serve_app.deployments.model_slots import DEVICE_PNG_THREADS, ModelSlot, ModelSlots, ModelUnavailable
from serve_app.protocol import EncodedJpeg, MaskResult, ModelNotReady, ReducedImage
from serve_app.settings import BatchSettings, ModelSettings, parse_batch_settings
from serve_app.versions import component_versions

logger = logging.getLogger("ray.serve")
# When this replica's process took up the deployment (Ray gives an actor a worker it may have started long before).
MODULE_IMPORTED_AT = time.time()

BATCH_SIZE_BOUNDARIES: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
# The model thread launches thousands of small kernels with the GIL held. A shorter switch interval than
# Python's 5 ms lets the replica's event loop take in requests (and answer Serve's queue-length probes)
# while a batch runs, so that the next batch fills.
GIL_SWITCH_INTERVAL_S = 0.0005
# PNGs a model's device coder holds at most, those its threads write and one more: the next starts without a gap,
# and any more go to the ingress's CPUs, so that the coder and the CPUs write PNGs at once (a queue at the coder
# left the CPUs idle: docs/performance.md).
DEVICE_PNGS_IN_HAND = DEVICE_PNG_THREADS + 1


class TaggedMetrics:
    """Per-model Ray metrics: images per pass, images and out-of-memory splits, each tagged with the model."""

    def __init__(self) -> None:
        self._batch = Histogram("bg_removal_batch_size", description="Images per forward pass.",
                                boundaries=BATCH_SIZE_BOUNDARIES, tag_keys=("model",))
        self._images = MetricCounter("bg_removal_images", description="Images segmented.", tag_keys=("model",))
        self._splits = MetricCounter("bg_removal_out_of_memory_splits", tag_keys=("model",),
                                     description="Batches retried in halves after running out of memory.")

    def batch(self, model: str, size: int) -> None:
        self._batch.observe(size, tags={"model": model})
        self._images.inc(size, tags={"model": model})

    def split(self, model: str) -> None:
        self._splits.inc(tags={"model": model})


# Resources, admission and batch settings come from the Serve config (configs/prod.yaml), and only from there.
@serve.deployment(health_check_period_s=10)
class BackgroundRemover:
    """Holds the configured models on one device and answers `remove_background(image, refine, model) ->
    MaskResult`, each model's calls batched on their own (serve_app/deployments/model_slots.py)."""

    def __init__(self, served: dict):
        init_started_at = time.time()  # wall clock: a benchmark on this machine sets it beside `serve run`'s start
        # Imported here, not at the top: Serve imports this module in every ingress replica too (the application
        # graph names both deployments), and torch would cost each of them seconds of start-up and ~0.3 GB.
        from serve_app.model.core import BackgroundRemovalModel

        self._model_class = BackgroundRemovalModel
        self._imports_s = time.time() - init_started_at
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self._defaults = BatchSettings()
        self._clock = DeviceClock()
        self._metrics = TaggedMetrics()
        self._node_id = ray.get_runtime_context().get_node_id()
        self._replica = _replica_identity(self._node_id)
        self._serving = False
        models = [ModelSettings.model_validate(entry) for entry in served["models"]]
        self._slots = ModelSlots(models, self._load_slot, max_loaded=served.get("max_loaded_models"),
                                 load_wait_s=served.get("load_wait_s", 30.0))
        self._slots.load_residents()
        self._startup: dict = {"module_imported_at": round(MODULE_IMPORTED_AT, 3),
                               "init_started_at": round(init_started_at, 3)}
        self._guard = DeviceGuard(self._check_device, on_broken=self._exit_soon)
        # Serve calls reconfigure() only for a config with a user_config: until then the defaults apply.
        self.reconfigure(BatchSettings().model_dump())

    def _load_slot(self, settings: ModelSettings) -> ModelSlot:
        """Load one model and warm it up (at start-up for the resident ones, on the loader thread for the others)."""
        started = time.time()
        model = self._model_class.from_settings(settings)
        # The first model's load counts the replica's imports too: they are what loading a model needs.
        loaded_s = time.time() - started + (self._imports_s if not self._slots.loaded else 0.0)
        warm_up_started = time.perf_counter()
        try:
            model.warm_up(settings.warmup_batch_size)
        except BaseException:
            # A model that failed to get ready frees its device memory and stops its compile thread now: a load on
            # first use is tried again, and each failed copy would otherwise hold the device until collected.
            model.close()
            raise
        logger.info("%s: warm-up took %.2f s", settings.served_name, time.perf_counter() - warm_up_started)
        # Where a start-up goes (/v1/info): the model's load includes its compiled buckets (compile_warmup).
        startup = {"imports_s": round(self._imports_s, 1), "model_load_s": round(loaded_s, 1),
                   "warm_up_s": round(time.perf_counter() - warm_up_started, 1)}
        slot = ModelSlot(settings, model, self._clock, self._defaults, self._metrics, startup)
        if self._serving:  # loaded on first use: a probe now would measure the other models' passes too; a batch
            slot.configure(self._defaults, probe=False)  # that runs out of memory lowers its limit instead
        return slot

    def reconfigure(self, user_config: dict) -> None:
        """Apply new batch settings live: Serve calls this on start and on every config change."""
        self._defaults = parse_batch_settings(user_config)
        for slot in list(self._slots.loaded.values()):
            slot.configure(self._defaults, probe=not self._serving)
        # The first call is the last step before Serve routes here; later ones are live changes, not a start.
        self._startup.setdefault("configured_at", round(time.time(), 3))
        logger.info("batch settings now %s (live batch limits %s)", self._defaults.model_dump(),
                    {name: slot.live_max_batch_size for name, slot in self._slots.loaded.items()})

    async def remove_background(self, image: np.ndarray | ReducedImage | EncodedJpeg, refine: bool = False,
                                model: str | None = None, png: bool = False) -> MaskResult:
        """Alpha mask for one (H, W, 3) uint8 RGB (or (H, W, 4) RGBX) image, ReducedImage or EncodedJpeg from model
        `model` (None: the default); concurrent calls for one model share forward passes (serve_app/deployments/
        batching.py). An EncodedJpeg is decoded on the device before it joins a pass, so a file that cannot be
        decoded fails its own call alone, with DeviceDecodeFailed. With `refine` (pixels only), also the subject's
        own colours in semi-transparent pixels, estimated on the device. With `png` (an EncodedJpeg only), also the
        zlib stream of the RGBA cut-out's PNG rows, written on the device from its decode (MaskResult.png_stream;
        None when the device could not write it: the ingress encodes the PNG then)."""
        arrived, arrived_at = time.perf_counter(), time.time()
        self._serving = True
        if refine and isinstance(image, EncodedJpeg):
            # The colours come from the ingress's own decode: the device's copy of the file is for the mask only.
            raise ValueError("refine needs the image's decoded pixels, not an EncodedJpeg")
        if self._guard.broke_before(arrived):  # this image cannot have broken the device: retried elsewhere
            await self._guard.hold_until_exit()
        try:
            async with self._slots.use(model) as slot:
                pixels, decode_ms = image, 0.0
                if isinstance(image, EncodedJpeg):
                    started = time.perf_counter()
                    pixels = await slot.decode(image)
                    decode_ms = (time.perf_counter() - started) * 1000
                mask, batch = await slot.masks(pixels)
                foreground, refine_ms = None, 0.0
                if refine and isinstance(image, np.ndarray):
                    started = time.perf_counter()
                    foreground = await slot.foreground(image, mask)
                    refine_ms = (time.perf_counter() - started) * 1000
                png_stream, png_ms = None, 0.0
                if png and isinstance(image, EncodedJpeg):
                    started = time.perf_counter()
                    png_stream = await self._cutout_stream(slot, pixels, mask)
                    png_ms = (time.perf_counter() - started) * 1000
        except ModelUnavailable as error:
            raise ModelNotReady(str(error), self._slots.retry_after_s()) from None
        except ModelNotReady:  # the image ran out of device memory alone: its own 503, the device is fine
            raise
        except Exception as error:
            # A call that arrived after the break was held above: whoever gets here may be in the failing batch.
            raise await self._guard.classify(error) from error
        # Out of the slot now: the calls held are the others, which the ingress reads as a busy device.
        return MaskResult(mask=mask, queued_ms=(batch.started_s - arrived) * 1000 - decode_ms,
                          batch_ms=batch.duration_ms, batch_size=batch.size, device_decode_ms=decode_ms,
                          device_backlog=self._calls_held(), arrived_at=arrived_at, left_at=time.time(),
                          replica_node=self._node_id, foreground=foreground, refine_ms=refine_ms, model=slot.name,
                          png_stream=png_stream, png_ms=png_ms)

    async def _cutout_stream(self, slot: ModelSlot, pixels: Any, mask: np.ndarray) -> np.ndarray | None:
        """The device's PNG stream of the cut-out, or None: the ingress can encode the PNG, so this image is
        answered either way. None while a full pass of any model waits for the device: the device then limits
        throughput, and the PNG's device time would come out of the passes. None too while the device's PNG coder
        already has one in hand besides those its threads write: a queue behind them would hold photos whose PNGs
        the ingress's CPUs could write meanwhile (the masks' passes then thin out too, as the photos wait there,
        and the device limits nothing). Either way the ingress's CPUs take that one, and the photos split between
        the two as each has room. None too whatever else keeps the device from writing it (a fault of the device
        itself shows at the next pass, which the device guard sees)."""
        if any(other.full_pass_waiting for other in self._slots.loaded.values()):
            slot.device_pngs["device_busy"] += 1
            return None
        if slot.pngs_in_hand >= DEVICE_PNGS_IN_HAND:
            slot.device_pngs["coder_busy"] += 1
            return None
        try:
            stream = await slot.cutout_stream(pixels, mask)
        except Exception as error:
            logger.warning("the device could not write a cut-out's PNG (%s: %s); the ingress encodes it",
                           type(error).__name__, error)
            stream = None
        slot.device_pngs["not_written" if stream is None else "written"] += 1
        return stream

    def _calls_held(self) -> int:
        """Calls this replica holds now, queued or on the device, every model's."""
        return sum(slot.in_use for slot in self._slots.loaded.values())

    async def describe(self) -> dict:
        """What /v1/info reports: the default model in full at the top (its model, live batch settings and
        batch-size histogram), every configured model under `models`, which replica answered and its start-up.
        On the event loop (a sync method would run on Serve's thread pool), where the loads, unloads and passes it
        reads change their dicts: read from another thread, one could change size while it is read."""
        return {
            **self._slots.default.describe(),
            "default_model": self._slots.default_name,
            "models": self._slots.describe(),
            "replica": self._replica,
            "model_unloads": self._slots.unloads,
            "requests_in_replica": self._calls_held(),
            "startup": {**self._slots.default.startup, **self._startup},  # the default model's and the replica's
            "versions": component_versions(),
        }

    def check_health(self) -> None:
        """Fail when the device no longer works, so that Serve replaces this replica."""
        self._guard.check_health()
        self._slots.default.model.check_device()

    async def _check_device(self) -> None:
        # On the default model's thread: after the passes already queued there, never blocking the event loop.
        slot = self._slots.default
        await asyncio.get_running_loop().run_in_executor(slot.thread, slot.model.check_device)

    def _exit_soon(self) -> None:
        """Exit the process in a moment (the failed batch's answers go out first); Serve starts a new replica."""
        asyncio.get_running_loop().call_later(0.5, os._exit, 1)


def _replica_identity(node_id: str) -> dict:
    """Which model replica this is: Serve's id for it, its node and the GPUs Ray gave it. /v1/info reaches one
    replica per call, so with several (one per GPU) these tell their histograms apart."""
    try:
        replica_id: str | None = serve.get_replica_context().replica_id.unique_id
    except Exception:  # not inside a Serve replica (the class used directly)
        replica_id = None
    try:
        gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
    except Exception:  # not inside a Ray worker
        gpu_ids = []
    return {"id": replica_id, "node_id": node_id, "gpu_ids": gpu_ids}

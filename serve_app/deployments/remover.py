"""The GPU deployment: one replica per GPU, coalescing single-image calls into batches for the model core."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.metrics import Counter as MetricCounter
from ray.serve.metrics import Histogram

from serve_app.deployments.batching import PASSES_IN_FLIGHT, DeviceBatch, DevicePasses
from serve_app.deployments.device_guard import DeviceGuard
from serve_app.protocol import MaskResult, ReducedImage
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


# Resources, admission and batch settings come from the Serve config (configs/prod.yaml), and only from there.
@serve.deployment(health_check_period_s=10)
class BackgroundRemover:
    """Holds the model on one device and answers `remove_background(image) -> MaskResult` in batches."""

    def __init__(self, model_settings: dict):
        init_started_at = time.time()  # wall clock: a benchmark on this machine sets it beside `serve run`'s start
        # Imported here, not at the top: Serve imports this module in every ingress replica too (the application
        # graph names both deployments), and torch would cost each of them seconds of start-up and ~0.3 GB.
        from serve_app.model.core import BackgroundRemovalModel

        imports_s = time.time() - init_started_at
        settings = ModelSettings.model_validate(model_settings)
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.model = BackgroundRemovalModel.from_settings(settings)
        self._batch_sizes: Counter[int] = Counter()
        self._batch_metric = Histogram(
            "bg_removal_batch_size", description="Images per forward pass.", boundaries=BATCH_SIZE_BOUNDARIES
        )
        self._image_metric = MetricCounter("bg_removal_images", description="Images segmented.")
        self._split_metric = MetricCounter(
            "bg_removal_out_of_memory_splits", description="Batches retried in halves after running out of memory.")
        self._settings = BatchSettings()
        self._live_max_batch_size = self._settings.max_batch_size
        self._node_id = ray.get_runtime_context().get_node_id()
        self._loop: asyncio.AbstractEventLoop | None = None
        # One worker thread: the device runs one batch at a time, and the event loop stays free to queue requests.
        # The compiled forward's own thread where it has one: no second hop per batch.
        self._model_thread = self.model.forward_executor or ThreadPoolExecutor(max_workers=1,
                                                                                thread_name_prefix="model")
        self._passes = DevicePasses(self.model.submit, self._model_thread, on_batch=self._count_batch)
        self._guard = DeviceGuard(self._check_device, on_broken=self._exit_soon)
        loaded_s = time.time() - init_started_at
        started = time.perf_counter()
        self.model.warm_up(settings.warmup_batch_size)
        logger.info("warm-up took %.2f s", time.perf_counter() - started)
        # Where a start-up goes (/v1/info): the model's load includes its compiled buckets (compile_warmup).
        self._startup = {"module_imported_at": round(MODULE_IMPORTED_AT, 3),
                         "init_started_at": round(init_started_at, 3), "imports_s": round(imports_s, 1),
                         "model_load_s": round(loaded_s, 1), "warm_up_s": round(time.perf_counter() - started, 1)}
        # The largest batch known to fit on the device (None: no limit found). Probed before the replica takes
        # traffic, up to the configured max_batch_size; lowered by every out-of-memory split. The live limit is
        # the smaller of it and the configured max_batch_size.
        self._probe = settings.probe_batch_limit
        self._probed_up_to = 0
        self._serving = False
        self._headroom_fraction = settings.memory_headroom_fraction
        self._fitting_batch: int | None = None
        self.model.on_out_of_memory = self._lower_batch_limit
        # Serve calls reconfigure() only for a config with a user_config: until then the defaults apply.
        self.reconfigure(BatchSettings().model_dump())

    def reconfigure(self, user_config: dict) -> None:
        """Apply new batch settings live: Serve calls this on start and on every config change."""
        self._settings = parse_batch_settings(user_config)
        # Before traffic only: a probe during traffic would measure other batches too.
        if self._probe and not self._serving and self._settings.max_batch_size > self._probed_up_to:
            self._probed_up_to = self._settings.max_batch_size
            self._probe_batch_limit(self._settings.max_batch_size)
        self._apply_batch_limit()
        if not self._serving:
            self._startup["configured_at"] = round(time.time(), 3)  # the last step before Serve routes here
        logger.info("batch settings now %s (live batch limit %d)", self._settings.model_dump(),
                    self._live_max_batch_size)

    def _probe_batch_limit(self, ceiling: int) -> None:
        started = time.perf_counter()
        fits = self.model.probe_batch_limit(ceiling, self._headroom_fraction)
        # Everything up to the ceiling fitting says nothing about larger batches: no limit then.
        self._fitting_batch = fits if fits < ceiling else None
        self._startup["memory_probe_s"] = round(time.perf_counter() - started, 1)
        logger.info("memory probe up to a batch of %d: %d fits (%.1f s)", ceiling, fits, time.perf_counter() - started)

    def _apply_batch_limit(self) -> None:
        limit = min(self._settings.max_batch_size, self._fitting_batch or self._settings.max_batch_size)
        batched: Any = self._run_batch  # @serve.batch's wrapper, which the type checker does not know
        batched.set_max_batch_size(limit)
        self._live_max_batch_size = limit

    def _lower_batch_limit(self, failed_size: int) -> None:
        """Called from the model thread when a batch of `failed_size` ran out of memory (and is being split)."""
        self._split_metric.inc()
        self._fitting_batch = max(1, min(self._fitting_batch or failed_size, failed_size // 2))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_batch_limit)

    async def remove_background(self, image: np.ndarray | ReducedImage, refine: bool = False) -> MaskResult:
        """Alpha mask for one (H, W, 3) uint8 RGB (or (H, W, 4) RGBX) image or ReducedImage; concurrent calls
        share forward passes (serve_app/deployments/batching.py). With `refine` (pixels only), also the subject's
        own colours in semi-transparent pixels, estimated on the device."""
        arrived, arrived_at = time.perf_counter(), time.time()
        self._loop = self._loop or asyncio.get_running_loop()
        self._serving = True
        if self._guard.broke_before(arrived):  # this image cannot have broken the device: retried elsewhere
            await self._guard.hold_until_exit()
        try:
            # Set before joining: the pass this call starts gathers the calls arriving until the device frees.
            batched: Any = self._run_batch  # @serve.batch's wrapper, which the type checker does not know
            batched.set_batch_wait_timeout_s(self._passes.wait_s(self._settings.batch_wait_timeout_s))
            mask, batch = await self._run_batch(image)
            foreground, refine_ms = None, 0.0
            if refine and isinstance(image, np.ndarray):
                # On the model thread, after the batches queued there: the device does one thing at a time.
                started = time.perf_counter()
                foreground = await self._loop.run_in_executor(self._model_thread, self.model.estimate_foreground,
                                                              image, mask)
                refine_ms = (time.perf_counter() - started) * 1000
        except Exception as error:
            # A call that arrived after the break was held above: whoever gets here may be in the failing batch.
            raise await self._guard.classify(error) from error
        return MaskResult(mask=mask, queued_ms=(batch.started_s - arrived) * 1000, batch_ms=batch.duration_ms,
                          batch_size=batch.size, arrived_at=arrived_at, left_at=time.time(),
                          replica_node=self._node_id, foreground=foreground, refine_ms=refine_ms)

    @serve.batch(max_batch_size=BatchSettings().max_batch_size,
                 batch_wait_timeout_s=BatchSettings().batch_wait_timeout_s, max_concurrent_batches=PASSES_IN_FLIGHT)
    async def _run_batch(self, images: list) -> list[tuple[np.ndarray, DeviceBatch]]:
        masks, batch = await self._passes.run(images)
        return [(mask, batch) for mask in masks]

    def _count_batch(self, size: int) -> None:
        self._batch_sizes[size] += 1
        self._batch_metric.observe(size)
        self._image_metric.inc(size)

    def describe(self) -> dict:
        """What /v1/info reports: the model, live batch settings and this replica's batch-size histogram."""
        return {
            **self.model.describe(),
            "batching": {**self._settings.model_dump(), "live_max_batch_size": self._live_max_batch_size,
                         "fitting_batch_size": self._fitting_batch},
            "batch_size_histogram": {str(size): count for size, count in sorted(self._batch_sizes.items())},
            "startup": self._startup,
            "versions": component_versions(),
        }

    def check_health(self) -> None:
        """Fail when the device no longer works, so that Serve replaces this replica."""
        self._guard.check_health()
        self.model.check_device()

    async def _check_device(self) -> None:
        # On the model thread: after the batches already queued there, never blocking the event loop.
        await asyncio.get_running_loop().run_in_executor(self._model_thread, self.model.check_device)

    def _exit_soon(self) -> None:
        """Exit the process in a moment (the failed batch's answers go out first); Serve starts a new replica."""
        asyncio.get_running_loop().call_later(0.5, os._exit, 1)

"""Batches against device memory: the largest batch that fits, probed at start-up, and a batch that runs out of
memory split in halves.

A configured `max_batch_size` is a wish; what fits depends on the GPU, the model, its input size and what else
holds memory. The probe measures it once; the split covers what the probe missed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from serve_app.model.cuda_graphs import DEVICE_SETUP_LOCK
from serve_app.protocol import Pending

logger = logging.getLogger(__name__)


@dataclass
class FailedImage:
    """An image that ran out of device memory in a pass of its own: its result is the error, for its caller alone
    (its batch-mates ran without it)."""

    error: BaseException

    def result(self) -> list[Any]:
        return [self.error]


@dataclass
class SplitPending:
    """A batch that ran as smaller parts after an out-of-memory error: their masks, in order (a FailedImage's
    error in its place)."""

    parts: list[Pending | FailedImage]

    def result(self) -> list[np.ndarray]:
        return [mask for part in self.parts for mask in part.result()]


def submit_split_on_out_of_memory(submit: Callable[[Sequence[Any]], Pending], images: Sequence[Any],
                                  device: torch.device, on_split: Callable[[int], None]) -> Pending:
    """`submit(images)`, or, where the device runs out of memory on it, the batch submitted again in halves
    (recursively), so that no image fails because its batch-mates made the batch too big. `on_split` hears each
    size that failed. An image that runs out of memory alone gets the error as its result (FailedImage), in a
    split batch and in a batch of one alike: it fails alone."""
    started = time.perf_counter()
    alone_failed: torch.cuda.OutOfMemoryError | None = None
    try:
        return submit(images)
    except torch.cuda.OutOfMemoryError as error:
        if len(images) < 2:
            # Kept without its traceback, whose frames hold the failed attempt's tensors on the device: freed here,
            # outside the handler, not after the batch-mates' retries.
            alone_failed = error.with_traceback(None)
    if alone_failed is not None:
        release_cached_memory(device)
        logger.warning("out of device memory on one image in a pass of its own: it alone fails")
        return FailedImage(alone_failed)
    failed = time.perf_counter()
    release_cached_memory(device)  # waits for the part of the pass already queued on the device
    logger.warning("out of device memory on a batch of %d (%.1f s to fail, %.1f s to drain the device and free "
                   "memory); retrying it in halves", len(images), failed - started, time.perf_counter() - failed)
    on_split(len(images))
    half = len(images) // 2
    return SplitPending([submit_split_on_out_of_memory(submit, part, device, on_split)
                         for part in (images[:half], images[half:])])


def release_cached_memory(device: torch.device) -> None:
    """Give blocks cached by PyTorch's allocator back, so that a smaller retry can allocate afresh."""
    # A whole-device synchronisation must not meet another model's capture in this process (cuda_graphs.py). While
    # one sets up, the cache stays as it is rather than this pass waiting for the whole load.
    if device.type == "cuda" and DEVICE_SETUP_LOCK.try_shared():
        try:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
        finally:
            DEVICE_SETUP_LOCK.release_shared()


def probe_batch_limit(run_batch: Callable[[int], None], device: torch.device, *, ceiling: int,
                      headroom_fraction: float) -> int:
    """The largest power-of-two batch up to `ceiling` (or `ceiling` itself) whose pass fits with headroom.

    Each candidate runs for real (`run_batch(size)`) and its peak memory above the resting state is compared
    with the memory that was free before the probe, less `headroom_fraction` of the device for everything else
    (fragmentation, larger images in pre- and post-processing). The next size is tried only if a linear
    estimate from the last one fits, so the probe rarely provokes an OOM itself.
    """
    if device.type != "cuda":
        return ceiling
    release_cached_memory(device)
    free_bytes, total_bytes = torch.cuda.mem_get_info(device)
    budget = free_bytes - headroom_fraction * total_bytes
    resting = torch.cuda.memory_allocated(device)
    fits, size = 0, 1
    while True:
        torch.cuda.reset_peak_memory_stats(device)
        try:
            run_batch(size)
            torch.cuda.synchronize(device)
        except torch.cuda.OutOfMemoryError:
            release_cached_memory(device)
            break
        used = torch.cuda.max_memory_allocated(device) - resting
        release_cached_memory(device)
        if used > budget:
            break
        fits = size
        logger.info("memory probe: batch %d used %.2f GB of a %.2f GB budget", size, used / 1e9, budget / 1e9)
        following = min(size * 2, ceiling)
        if following == size or used * following / size > budget:
            break
        size = following
    if fits == 0:
        raise RuntimeError(f"a batch of one image does not fit in the free device memory ({free_bytes / 1e9:.1f} "
                           f"GB free, {headroom_fraction:.0%} of the device kept as headroom)")
    return fits

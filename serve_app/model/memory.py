"""Device memory: the largest batch that fits, probed at start-up, and recognising out-of-memory errors.

A configured `max_batch_size` is a wish; what fits depends on the GPU, the model, its input size and what else
holds memory. The probe measures it once; the model core's OOM split (core.py) covers what the probe missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)


def release_cached_memory(device: torch.device) -> None:
    """Give blocks cached by PyTorch's allocator back, so that a smaller retry can allocate afresh."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


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

"""Handing freed heap memory back to the system, for processes that hold large image buffers in bursts.

glibc keeps freed memory in its heaps for reuse, so a process's RSS stays at its peak after a burst of 6 MP
images. Mapping every large buffer fresh instead (MALLOC_MMAP_THRESHOLD_) gives
the memory back at once but pays for it on every request: each new 10-20 MB buffer is page-faulted and zeroed
again by the kernel, from all the codec threads at once, which makes decoding and encoding a fifth slower. So
buffers are reused while busy, and `release_free_memory` trims the heaps once the process has gone idle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim this way
        return None


def release_free_memory() -> bool:
    """Return free heap memory of every malloc arena to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

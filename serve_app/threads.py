"""Thread pools whose threads carry their names into the operating system, where `top -H`, py-spy and
scripts/cpu_by_process.py see which of a replica's threads spends its CPU (Python before 3.14 keeps a thread's name
to itself)."""

from __future__ import annotations

import ctypes
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_PR_SET_NAME = 15
_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def name_native_thread() -> None:
    """Give the calling thread's Python name to its OS thread (the first 15 bytes: Linux keeps no more); nothing
    where that cannot be done, as a thread works the same unnamed."""
    if _LIBC is None:
        return
    try:
        _LIBC.prctl(_PR_SET_NAME, threading.current_thread().name.encode()[:15], 0, 0, 0)
    except (AttributeError, OSError):  # no prctl in this libc
        pass


def named_pool(workers: int, prefix: str) -> ThreadPoolExecutor:
    """A pool of `workers` threads named `prefix`_0, `prefix`_1, ... in Python and in the OS."""
    return ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=name_native_thread)

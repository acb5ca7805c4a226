"""The device's own account of its forward passes: how long each took on the GPU, and how long the compute stream sat
idle before it although the pass was already queued behind the previous one (a stall, as opposed to having nothing
to do).

Why: under load the service's passes can take longer than the same device path alone, and neither the host-side
timings nor nvidia-smi's busy fraction can tell a slower forward from gaps between forwards. Two CUDA events around
each forward on the compute stream can.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol


class TimedEvent(Protocol):
    """What torch.cuda.Event(enable_timing=True) offers that is used here."""

    def elapsed_time(self, end_event: Any) -> float: ...


@dataclass(frozen=True)
class PassTiming:
    """One forward pass's CUDA events, and the end event of the pass before it if that was still running when this
    one was queued (all complete when the pass is recorded)."""

    start: TimedEvent
    end: TimedEvent
    queued_behind: TimedEvent | None


class PassTimeline:
    """The last `window` passes, as their masks are read."""

    def __init__(self, window: int = 256):
        self._passes: deque[tuple[float, float | None]] = deque(maxlen=window)  # (forward ms, stall ms or None)
        self._lock = threading.Lock()  # recorded on the model thread, summarised on the replica's event loop

    def record(self, timing: PassTiming) -> None:
        forward_ms = timing.start.elapsed_time(timing.end)
        stall_ms = None
        if timing.queued_behind is not None:
            # Same stream, so never negative in principle; clamped against clock rounding.
            stall_ms = max(0.0, timing.queued_behind.elapsed_time(timing.start))
        with self._lock:
            self._passes.append((forward_ms, stall_ms))

    def clear(self) -> None:
        """Forget the passes so far (a benchmark's warm-up, say)."""
        with self._lock:
            self._passes.clear()

    def summary(self) -> dict:
        """Means over the window: each forward's device time, and the stalls before passes that were queued."""
        with self._lock:
            passes = list(self._passes)
        stalls = [stall for _, stall in passes if stall is not None]
        return {
            "passes": len(passes),
            "forward_ms_mean": round(sum(forward for forward, _ in passes) / len(passes), 2) if passes else None,
            "queued_passes": len(stalls),
            "stall_ms_mean": round(sum(stalls) / len(stalls), 2) if stalls else None,
        }

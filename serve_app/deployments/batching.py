"""How a model replica batches: Ray Serve's `@serve.batch` forms each pass, with a wait that follows the device.

`@serve.batch` gathers the calls that arrive within its wait timeout, up to `max_batch_size`, into one pass. Ray
2.60 forms a pass as soon as that timeout expires, free device or not, and lines the formed passes up behind
`max_concurrent_batches`: with a fixed timeout of 0, a call that arrives while the device is busy makes a pass of
its own, and under load the device runs passes of one or two images. So before each call joins, the replica sets
the timeout to how long the device will stay busy (`DevicePasses.wait_s`): 0 on an idle device (or the configured
`batch_wait_timeout_s`, if longer), else until the passes already submitted are expected to end, less a moment
for the next one's upload. The calls arriving meanwhile join one pass, formed just before the device frees.

`DevicePasses` runs one model's passes: at most `PASSES_IN_FLIGHT` on the device, whatever model they are for
(`DeviceClock`, one per device), one running and the next uploaded and queued behind it, so the device goes from
one pass to the next without an idle gap. It learns each batch size's pass time from the passes it runs. A pass
submitted to an idle device is prepared, run and read back in one trip to the model thread, the shortest path for
a lone request. Each model has its own `@serve.batch` queue and `DevicePasses`: a pass never mixes models.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.protocol import Pending

# One pass on the device and the next queued behind it: more would only form passes earlier, and smaller.
PASSES_IN_FLIGHT = 2
# The next pass forms this long before the device is expected to free up: its upload and launch.
UPLOAD_LEAD_S = 0.005
# A batch size's pass time is the median of its last few passes: a pass whose end was seen late (its masks' thread
# waited for the interpreter) or early makes the one behind it look short or long, and one such pass must not move
# the estimate; a slow first pass is outvoted by the next, and a lasting change (a new clock) wins in three.
PASS_TIME_WINDOW = 5


@dataclass(frozen=True)
class DeviceBatch:
    """What a request learns about the pass that served it."""

    started_s: float  # time.perf_counter() when the pass was handed to the model thread
    duration_ms: float  # from then until its masks were back
    size: int


class DeviceClock:
    """One device's passes in flight, whichever model they are for, and when the device is expected to free up."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.free_at = 0.0  # time.perf_counter() when the passes in flight are expected to have ended
        self.last_end = 0.0
        self._gate: asyncio.Semaphore | None = None  # made on the event loop that runs the passes

    @property
    def gate(self) -> asyncio.Semaphore:
        """At most PASSES_IN_FLIGHT passes on the device; with one model, its queue's own limit already holds."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(PASSES_IN_FLIGHT)
        return self._gate


class DevicePasses:
    """Runs the passes `@serve.batch` forms for one model through `submit`, and knows when the device frees up."""

    def __init__(self, submit: Callable[[Sequence[Any]], Pending], executor: Executor,
                 on_batch: Callable[[int], None] | None = None, clock: DeviceClock | None = None):
        self._submit = submit
        self._executor = executor  # the model thread: uploads and launches, in order
        # Waits for each pass's masks, so that the model thread can submit the next pass meanwhile.
        self._waiter = ThreadPoolExecutor(PASSES_IN_FLIGHT, thread_name_prefix="masks")
        self._on_batch = on_batch or (lambda size: None)
        self._clock = clock or DeviceClock()
        self._samples: dict[int, deque[float]] = {}
        self._pass_s: dict[int, float] = {}

    @property
    def in_flight(self) -> int:
        """Passes on the device, of any model."""
        return self._clock.in_flight

    def wait_s(self, minimum: float) -> float:
        """How long `@serve.batch` should gather calls for the next pass: until the device can take it, and at
        least `minimum` (the configured batch_wait_timeout_s)."""
        clock = self._clock
        if clock.in_flight == 0:
            return minimum
        return max(minimum, clock.free_at - time.perf_counter() - UPLOAD_LEAD_S)

    def pass_s(self, size: int) -> float:
        """The expected device time of a pass of `size` images (0 before any pass ran)."""
        if size in self._pass_s:
            return self._pass_s[size]
        larger = [seconds for known, seconds in self._pass_s.items() if known >= size]
        return min(larger) if larger else max(self._pass_s.values(), default=0.0)

    async def run(self, images: list[Any]) -> tuple[list[np.ndarray], DeviceBatch]:
        """Masks for `images`, in order, from one pass on the device."""
        loop = asyncio.get_running_loop()
        clock = self._clock
        size = len(images)
        async with clock.gate:
            self._on_batch(size)
            started = time.perf_counter()
            alone = clock.in_flight == 0
            clock.free_at = (started if alone else max(started, clock.free_at)) + self.pass_s(size)
            clock.in_flight += 1
            try:
                if alone:
                    masks = await loop.run_in_executor(self._executor, self._submit_and_wait, images)
                else:
                    pending = await loop.run_in_executor(self._executor, self._submit, images)
                    masks = await loop.run_in_executor(self._waiter, pending.result)
            finally:
                clock.in_flight -= 1
        ended = time.perf_counter()
        # Its device time: from the later of its submission and the previous pass's end (it waited behind that).
        self._learn(size, ended - max(started, clock.last_end))
        clock.last_end = max(clock.last_end, ended)
        return masks, DeviceBatch(started, (ended - started) * 1000, size)

    def close(self) -> None:
        self._waiter.shutdown(wait=True)

    def _submit_and_wait(self, images: list[Any]) -> list[np.ndarray]:
        return self._submit(images).result()

    def _learn(self, size: int, seconds: float) -> None:
        samples = self._samples.setdefault(size, deque(maxlen=PASS_TIME_WINDOW))
        samples.append(seconds)
        # The lower median: with two passes the faster counts, so a slow first pass is forgotten at the second.
        self._pass_s[size] = sorted(samples)[(len(samples) - 1) // 2]

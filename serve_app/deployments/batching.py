"""How a model replica batches: Ray Serve's `@serve.batch` forms each pass, with a wait that follows the device.

`@serve.batch` gathers the calls that arrive within its wait timeout, up to `max_batch_size`, into one pass. Ray
2.60 forms a pass as soon as that timeout expires, free device or not, and starts gathering the next one at once
with the timeout last set: with a fixed timeout of 0, a call that arrives while the device is busy makes a pass of
its own, and under load the device runs passes of one or two images. So before each call joins, the replica sets
the timeout to how long the device will stay busy (`DevicePasses.wait_s`): 0 on an idle device (or the configured
`batch_wait_timeout_s`, if longer), else until the passes on the device and those formed and waiting for it are
expected to end, less a moment for the next one's upload. A call that joins a busy device while a pass gathers
sets the timeout of the pass after that one (Ray reads it when that pass starts gathering, right after the current one
forms), so it counts the gathering pass too. Formed passes reach `DevicePasses.run` at once
(`FORMED_PASSES_MAX`), where each is counted until the device takes it: a pass formed ahead of the device is
expected, not overlooked, and the next one gathers until the device can take it. A model has at most two passes at
the device's gate (another model's pass waits behind no more), and the callers that gave up while their pass waited
(a missed deadline) are left out of it when the device takes it.

`DevicePasses` runs one model's passes: at most `PASSES_IN_FLIGHT` on the device, whatever model they are for
(`DeviceClock`, one per device), one running and the next uploaded and queued behind it, so the device goes from
one pass to the next without an idle gap. It learns each batch size's pass time from the passes it runs. A pass
submitted to an idle device is prepared, run and read back in one trip to the model thread, the shortest path for
a lone request. Each model has its own `@serve.batch` queue and `DevicePasses`: a pass never mixes models.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.protocol import Pending
from serve_app.threads import named_pool

# One pass on the device and the next queued behind it: more would only form passes earlier, and smaller.
PASSES_IN_FLIGHT = 2
# The next pass forms this long before the device is expected to free up: its upload and launch.
UPLOAD_LEAD_S = 0.005
# Passes `@serve.batch` hands on before the device takes them (its max_concurrent_batches): each then waits at its
# model's gate and the device's, counted in the wait of the next. 8 of 8 images fill prod.yaml's max_ongoing_requests
# of 64.
FORMED_PASSES_MAX = 8
# Weight of the newest pass in a batch size's pass time: a few passes adapt it to a new load or clock.
PASS_TIME_WEIGHT = 0.2


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
        """At most PASSES_IN_FLIGHT passes on the device, whatever model they are for."""
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
        self._waiter = named_pool(PASSES_IN_FLIGHT, "masks")
        self._on_batch = on_batch or (lambda size: None)
        self._clock = clock or DeviceClock()
        self._pass_s: dict[int, float] = {}
        self.gathering = 0  # calls that joined `@serve.batch` and are in no pass handed on yet (ModelSlot counts them)
        self.formed = 0  # this model's passes formed and not yet on the device
        self.formed_s = 0.0  # their expected device time
        # This model's passes at the device's gate: as many as it takes, so that another model's pass waits behind
        # two of this one's at most, however many this one has formed. (A semaphore binds to the loop that first
        # waits on it.)
        self._own_gate = asyncio.Semaphore(PASSES_IN_FLIGHT)

    @property
    def in_flight(self) -> int:
        """Passes on the device, of any model."""
        return self._clock.in_flight

    def wait_s(self, minimum: float) -> float:
        """How long `@serve.batch` should gather calls for the next pass: until the device can take it, and at
        least `minimum` (the configured batch_wait_timeout_s). Call it before the call joins (`gathering` not yet
        counting it): while a pass gathers, the value serves the pass after it."""
        clock = self._clock
        if clock.in_flight == 0 and self.formed == 0:
            # An idle device: the pass gathering (if any) goes at once, and so may this call's.
            return minimum
        ahead = self.formed_s + (self.pass_s(self.gathering) if self.gathering else 0.0)
        now = time.perf_counter()
        return max(minimum, max(clock.free_at, now) + ahead - now - UPLOAD_LEAD_S)

    def pass_s(self, size: int) -> float:
        """The expected device time of a pass of `size` images (0 before any pass ran)."""
        if size in self._pass_s:
            return self._pass_s[size]
        larger = [seconds for known, seconds in self._pass_s.items() if known >= size]
        return min(larger) if larger else max(self._pass_s.values(), default=0.0)

    async def run(self, images: list[Any],
                  wanted: Callable[[], list[bool]] | None = None) -> tuple[list[np.ndarray | None], DeviceBatch]:
        """Masks for `images`, in order, from one pass on the device. `wanted`, asked once the device can take the
        pass, says which images are still wanted: the others (their callers gave up while it waited) get None and
        no device time, and a pass that nobody wants any more is not run."""
        loop = asyncio.get_running_loop()
        clock = self._clock
        async with self._turn(self.pass_s(len(images))):
            keep = wanted() if wanted is not None else [True] * len(images)
            kept = [image for image, wanted_one in zip(images, keep, strict=True) if wanted_one]
            size = len(kept)
            started = time.perf_counter()
            if not kept:
                return [None] * len(images), DeviceBatch(started, 0.0, 0)
            self._on_batch(size)
            alone = clock.in_flight == 0
            clock.free_at = (started if alone else max(started, clock.free_at)) + self.pass_s(size)
            clock.in_flight += 1
            try:
                if alone:
                    masks = await loop.run_in_executor(self._executor, self._submit_and_wait, kept)
                else:
                    pending = await loop.run_in_executor(self._executor, self._submit, kept)
                    masks = await loop.run_in_executor(self._waiter, pending.result)
            finally:
                clock.in_flight -= 1
        ended = time.perf_counter()
        # Its device time: from the later of its submission and the previous pass's end (it waited behind that).
        self._learn(size, ended - max(started, clock.last_end))
        clock.last_end = max(clock.last_end, ended)
        answers = iter(masks)
        return [next(answers) if wanted_one else None for wanted_one in keep], DeviceBatch(
            started, (ended - started) * 1000, size)

    @contextlib.asynccontextmanager
    async def _turn(self, expected_s: float) -> AsyncIterator[None]:
        """The device's turn for a formed pass: counted as formed (`expected_s` of device time ahead) until this
        model's gate and the device's are both taken, then both held until the pass is done."""
        self.formed += 1
        self.formed_s += expected_s
        async with contextlib.AsyncExitStack() as held:
            try:
                await held.enter_async_context(self._own_gate)
                await held.enter_async_context(self._clock.gate)
            finally:
                self.formed -= 1
                self.formed_s = max(0.0, self.formed_s - expected_s)
            yield

    def close(self) -> None:
        self._waiter.shutdown(wait=True)

    def _submit_and_wait(self, images: list[Any]) -> list[np.ndarray]:
        return self._submit(images).result()

    def _learn(self, size: int, seconds: float) -> None:
        known = self._pass_s.get(size)
        if known is None or seconds < known / 2:
            # The first pass of its size, or one far faster than expected: the estimate came from an outlier (a
            # first pass, one split for memory) and must not keep later passes gathering for an idle device.
            self._pass_s[size] = seconds
        else:
            # Otherwise a fraction at a time: a pass timed behind one whose end was seen late looks a little short,
            # and an estimate that follows such passes down forms passes before the device can take them.
            self._pass_s[size] = known + PASS_TIME_WEIGHT * (min(seconds, 2 * known) - known)

"""The queue in front of one device: merges waiting request groups into the next forward pass.

Ray Serve's `@serve.batch` (2.60) forms a batch as soon as its wait timeout expires, whether or not the device
is free, and queues the formed batches behind `max_concurrent_batches`. Under load that gives many batches of
one or two images waiting in line. Here the formed batches wait instead, and whenever the device becomes free
the next forward pass takes every waiting group that fits in `max_batch_size`: batches fill exactly when
there is a queue, and a lone request still goes straight through.

It also keeps the device fed: the next batch is submitted (uploaded and queued on the GPU) before waiting for
the current one's masks, so the GPU goes from one batch to the next without an idle gap.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Pending(Protocol):
    def result(self) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class DeviceBatch:
    """What a request's group learns about the forward pass that served it."""

    started_s: float  # time.perf_counter() when the pass began
    duration_ms: float
    size: int


@dataclass
class _Group:
    images: list[np.ndarray]
    future: asyncio.Future


@dataclass
class _InFlight:
    groups: list[_Group]
    pending: Pending
    started_s: float
    size: int


class DeviceQueue:
    """Feeds `submit` from one executor thread: one merged batch running, the next one queued behind it."""

    def __init__(self, submit: Callable[[Sequence[np.ndarray]], Pending], executor: Executor,
                 max_batch_size: int, on_batch: Callable[[int], None] | None = None):
        self.max_batch_size = max_batch_size
        self._submit = submit
        self._executor = executor
        self._on_batch = on_batch or (lambda size: None)
        self._waiting: deque[_Group] = deque()
        self._worker: asyncio.Task | None = None

    async def run(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], DeviceBatch]:
        """Masks for `images`, in order, computed in a forward pass shared with whatever else was waiting."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Group(images, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _take_next(self) -> list[_Group]:
        """Waiting groups that fit in one batch, oldest first; always at least one group."""
        taken: list[_Group] = []
        count = 0
        while self._waiting:
            group = self._waiting[0]
            if group.future.done():  # the caller went away (cancelled): skip its work
                self._waiting.popleft()
                continue
            if taken and count + len(group.images) > self.max_batch_size:
                break
            taken.append(self._waiting.popleft())
            count += len(group.images)
        return taken

    async def _drain(self) -> None:
        in_flight: _InFlight | None = None
        while True:
            submitted = await self._submit_next()
            if in_flight is not None:
                await self._finish(in_flight)
            in_flight = submitted
            if in_flight is None and not self._waiting:
                return

    async def _submit_next(self) -> _InFlight | None:
        groups = self._take_next()
        if not groups:
            return None
        images = [image for group in groups for image in group.images]
        started = time.perf_counter()
        self._on_batch(len(images))
        try:
            pending = await asyncio.get_running_loop().run_in_executor(self._executor, self._submit, images)
        except Exception as error:
            self._fail(groups, error)
            return None
        return _InFlight(groups, pending, started, len(images))

    async def _finish(self, batch: _InFlight) -> None:
        try:
            masks = await asyncio.get_running_loop().run_in_executor(self._executor, batch.pending.result)
        except Exception as error:
            self._fail(batch.groups, error)
            return
        info = DeviceBatch(batch.started_s, (time.perf_counter() - batch.started_s) * 1000, batch.size)
        offset = 0
        for group in batch.groups:
            if not group.future.done():
                group.future.set_result((masks[offset : offset + len(group.images)], info))
            offset += len(group.images)

    @staticmethod
    def _fail(groups: list[_Group], error: Exception) -> None:
        """Every caller in the pass gets the error; the queue keeps going."""
        for group in groups:
            if not group.future.done():
                group.future.set_exception(error)

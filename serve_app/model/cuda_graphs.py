"""CUDA-graph replay of a segmentation network, one graph per batch-size bucket.

Eager BiRefNet launches thousands of small kernels per forward pass; launching them from Python costs CPU
time and holds the GIL. A captured graph replays the whole pass with one call. Shapes must be static, so each
batch is padded up to the smallest captured bucket that holds it (larger batches run bucket by bucket).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import torch

from serve_app.model.buckets import run_in_buckets

logger = logging.getLogger(__name__)


class DeviceSetupLock:
    """Held alone (`with`, acquire/release: re-entrant in its thread) for device work that must not overlap a CUDA
    graph capture in another thread of the process: a model's load (weights to the device, captures, compiling) and
    a saved bucket put in service behind serving, whose first run synchronises the whole device (inductor's
    autotuning). One model per process never contends for it; with several (serve_app/deployments/model_slots.py)
    one loads while another captures, and the capture fails ("operation not permitted when stream is capturing")
    or the other model's synchronisation does.

    Shared (try_shared/release_shared) by the side work that synchronises its own streams while serving (a JPEG's
    decode, a cut-out's PNG): any number of those at once, on any threads, none beside a holder alone. They never
    wait: while a holder has it or waits for it, try_shared says no and the caller takes its other way (pixels
    from the ingress, the ingress's PNG), so a setup waits for those in progress only, a few milliseconds."""

    def __init__(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._waiting = 0
        self._shared = 0

    def acquire(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        with self._state:
            if self._owner == me:
                self._depth += 1
                return True
            if not blocking and (self._owner is not None or self._shared):
                return False
            self._waiting += 1
            try:
                self._state.wait_for(lambda: self._owner is None and not self._shared)
            finally:
                self._waiting -= 1
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._state:
            if self._owner != threading.get_ident():
                raise RuntimeError("released by a thread that does not hold it")
            self._depth -= 1
            if not self._depth:
                self._owner = None
                self._state.notify_all()

    def __enter__(self) -> DeviceSetupLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def try_shared(self) -> bool:
        """Take a share unless a holder alone has it or waits for it (its own thread may share it too)."""
        with self._state:
            if self._owner not in (None, threading.get_ident()) or (self._owner is None and self._waiting):
                return False
            self._shared += 1
            return True

    def release_shared(self) -> None:
        with self._state:
            self._shared -= 1
            if not self._shared:
                self._state.notify_all()


DEVICE_SETUP_LOCK = DeviceSetupLock()


class GraphedForward:
    """Callable like the eager forward: (B, 3, H, W) in the model dtype -> (B, 1, h, w) float32 logits."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], *, sample_shape: tuple[int, int, int],
                 dtype: torch.dtype, device: torch.device, batch_sizes: Sequence[int],
                 memory_format: torch.memory_format = torch.contiguous_format):
        self._forward = forward
        self._sample_shape, self._dtype, self._device, self._memory_format = sample_shape, dtype, device, memory_format
        self.batch_sizes: list[int] = []  # replaced whole as buckets are added: callers on other threads read it
        self._inputs: dict[int, torch.Tensor] = {}
        self._outputs: dict[int, torch.Tensor] = {}
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        # One memory pool for all: the graphs never run at the same time (one replays after the other on one stream,
        # and a bucket added later is captured between replays, on the thread that replays).
        self._pool = torch.cuda.graph_pool_handle()
        started = time.perf_counter()
        for size in sorted(set(batch_sizes), reverse=True):  # largest first: the smaller fit in what it freed
            self.add(size)
        logger.info("captured CUDA graphs for batch sizes %s in %.1f s", self.batch_sizes,
                    time.perf_counter() - started)

    def add(self, size: int, capture_error_mode: str = "thread_local") -> None:
        """Capture the bucket of `size` and serve it from now on. The capture checks only this thread's CUDA calls:
        other threads (reading earlier batches' masks, other models' passes) keep running meanwhile."""
        static_input = torch.zeros((size, *self._sample_shape), dtype=self._dtype, device=self._device).contiguous(
            memory_format=self._memory_format)  # as the batches come: a compiled forward is guarded on it
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):  # warm-up outside the graph: cudnn picks its algorithms here
            for _ in range(2):
                self._forward(static_input)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # The outer stream context puts this thread's stream back even if ending the capture raises.
        with torch.cuda.stream(torch.cuda.current_stream(self._device)), \
                torch.cuda.graph(graph, pool=self._pool, capture_error_mode=capture_error_mode):
            output = self._forward(static_input)
        self._inputs[size], self._outputs[size], self._graphs[size] = static_input, output, graph
        self.batch_sizes = sorted({*self.batch_sizes, size})

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return run_in_buckets(batch, self.batch_sizes, self._replay)

    def _replay(self, size: int, images: torch.Tensor) -> torch.Tensor:
        self._inputs[size][: images.shape[0]].copy_(images)
        self._graphs[size].replay()
        # The output buffer is overwritten by the next replay: hand out a copy.
        return self._outputs[size].clone()

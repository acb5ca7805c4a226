"""Compiled forward passes: `torch.compile` with static shapes, one graph per batch bucket, built before traffic.

Compiling BiRefNet takes minutes per shape (161.6 s at batch 8 on an H100), so a restart must not pay it again:
inductor's on-disk caches (FX graphs, Triton kernels, AOTAutograd) are kept under `compile_cache_dir`, and a
warm start traces the model and loads the compiled kernels instead (21.3 s per bucket, same GPU).

With `capture` (`execution: compiled_graphs`) each compiled bucket is then captured whole in one CUDA graph of the
project's own (serve_app/model/cuda_graphs.py), which a pass replays without going through Dynamo again.

Why not AOTInductor packages: on torch 2.11 a package of BiRefNet compiled fine but segfaulted while loading, in
the compiling process and in a fresh one alike (H100, 2026-11-22).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from serve_app.model.buckets import pad_to, run_in_buckets
from serve_app.model.cuda_graphs import GraphedForward

logger = logging.getLogger(__name__)


def use_compile_cache(cache_dir: Path) -> None:
    """Point inductor's caches at `cache_dir` for this process (inductor reads the variable at each lookup)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir.resolve())


class CompiledForward:
    """Callable like the eager forward: (B, 3, H, W) in the model dtype -> (B, 1, h, w) float32 logits.

    Every bucket is compiled (or loaded from the cache) in the constructor; later batches are padded up to a
    bucket, so serving never meets a new shape and never recompiles.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], *, sample_shape: tuple[int, int, int],
                 dtype: torch.dtype, memory_format: torch.memory_format, device: torch.device,
                 batch_sizes: Sequence[int], cache_dir: Path, options: dict | None = None, capture: bool = False):
        """With `capture` (CUDA only, and not with inductor's own `triton.cudagraphs`), each compiled bucket is then
        captured whole in one CUDA graph of this class's making, and a pass replays it: one input copy and one
        launch. Inductor's CUDA graphs replay too, but every call first pays for Dynamo's guards on the model's
        ~800 parameters, the pre-graph bytecode that gathers them and the graph tree's bookkeeping: 2.3 ms of CPU
        before a lone batch-1 pass reached the GPU, which sat idle meanwhile (H200);
        queued passes hide it, a lone request pays it."""
        self.batch_sizes = sorted(set(batch_sizes))
        self.warmup: dict[int, dict] = {}  # per bucket: seconds to be ready, and whether the cache served it
        # Every compile and every call runs on this one thread. With inductor's CUDA graphs
        # (compile_options {"triton.cudagraphs": true}) the recorded graphs and their memory pool are kept per
        # thread, and multithreaded use is a known failure (pytorch/pytorch#123177). Callers on other threads
        # (the bulk actor's, benchmarks) hop to it; a caller that has work of its own for the device can run all
        # of it on `executor` (the remover does), and its calls then run inline.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compiled-forward")
        self._cuda_graphs = bool((options or {}).get("triton.cudagraphs"))
        if capture and (self._cuda_graphs or device.type != "cuda"):
            raise ValueError("capturing compiled buckets needs CUDA and no triton.cudagraphs in the options")
        self._owner: threading.Thread | None = None
        self._graphed: GraphedForward | None = None
        self.executor.submit(self._build, forward, sample_shape, dtype, memory_format, device, cache_dir,
                             options, capture).result()

    def _build(self, forward: Callable[[torch.Tensor], torch.Tensor], sample_shape: tuple[int, int, int],
               dtype: torch.dtype, memory_format: torch.memory_format, device: torch.device, cache_dir: Path,
               options: dict | None, capture: bool) -> None:
        self._owner = threading.current_thread()
        use_compile_cache(cache_dir)
        # One graph per bucket; dynamo gives up (and runs eager) past its recompile limit.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, len(self.batch_sizes) + 1)
        self._compiled = torch.compile(forward, dynamic=False, options=options or None)
        for index, size in enumerate(self.batch_sizes, 1):
            # Said before, not only after: a first start is silent for minutes here (BiRefNet: 2-3 min per bucket).
            logger.info("compiling batch size %d (bucket %d of %d): minutes unless %s has it from an earlier start or "
                        "`python -m serve_app.prebuild`", size, index, len(self.batch_sizes), cache_dir)
            misses = counters["inductor"]["fxgraph_cache_miss"]
            started = time.perf_counter()
            # Made and run as the serving path does (an inference tensor, under inference mode): the graph is
            # guarded on both, and a mismatch costs a second compile at the first real batch.
            with torch.inference_mode():
                example = torch.zeros((size, *sample_shape), dtype=dtype, device=device)
                for _ in range(3 if self._cuda_graphs else 1):  # CUDA graph trees warm up, record, then replay
                    self._run(example.contiguous(memory_format=memory_format))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.warmup[size] = {"seconds": round(time.perf_counter() - started, 1),
                                 "from_cache": counters["inductor"]["fxgraph_cache_miss"] == misses}
        if capture:
            with torch.inference_mode():
                self._graphed = GraphedForward(self._compiled, sample_shape=sample_shape, dtype=dtype, device=device,
                                               batch_sizes=self.batch_sizes, memory_format=memory_format)
        logger.info("compiled forward ready for batch sizes %s: %s (cache %s)%s", self.batch_sizes, self.warmup,
                    cache_dir, ", each captured in a CUDA graph" if capture else "")
        # Where a start's seconds went (tracing, cache lookups, loading kernels), per compiler phase.
        logger.info("%s", torch._dynamo.utils.compile_times(repr="str", aggregate=True))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if threading.current_thread() is self._owner:
            return self._run_in_buckets(batch)
        # The caller's stream and inference mode are per thread: carry them over to the compiled thread.
        stream = torch.cuda.current_stream(batch.device) if batch.is_cuda else None
        inference = torch.is_inference_mode_enabled()
        return self.executor.submit(self._call_on_thread, batch, stream, inference).result()

    def _call_on_thread(self, batch: torch.Tensor, stream: torch.cuda.Stream | None, inference: bool) -> torch.Tensor:
        with torch.inference_mode(inference), torch.cuda.stream(stream) if stream is not None else nullcontext():
            return self._run_in_buckets(batch)

    def _run_in_buckets(self, batch: torch.Tensor) -> torch.Tensor:
        if self._graphed is not None:
            return self._graphed(batch)
        return run_in_buckets(batch, self.batch_sizes, lambda size, images: self._run(pad_to(images, size)))

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        if not self._cuda_graphs:
            return self._compiled(batch)
        # A new step each call: the previous call's outputs are no longer read through the graph's memory. The
        # clone is that guarantee: a replay overwrites its outputs in place, and a batch above the largest bucket
        # runs the same graph again before its pieces are joined.
        torch.compiler.cudagraph_mark_step_begin()
        return self._compiled(batch).clone()

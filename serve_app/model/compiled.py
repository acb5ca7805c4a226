"""Compiled forward passes: `torch.compile` with static shapes, one graph per batch bucket, built before traffic.

Compiling BiRefNet takes minutes per shape (161.6 s at batch 8 on an H100), so a restart must not pay it again:
inductor's on-disk caches (FX graphs, Triton kernels, AOTAutograd) are kept under `compile_cache_dir`, and a
warm start traces the model and loads the compiled kernels instead (21.3 s per bucket, same GPU).

Why not AOTInductor packages: on torch 2.11 a package of BiRefNet compiled fine but segfaulted while loading, in
the compiling process and in a fresh one alike (H100, 2026-11-22, docs/benchmarks/2026-11-22-h100-compiled).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from serve_app.model.buckets import pad_to, run_in_buckets

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
                 batch_sizes: Sequence[int], cache_dir: Path, options: dict | None = None):
        self.batch_sizes = sorted(set(batch_sizes))
        self.warmup: dict[int, dict] = {}  # per bucket: seconds to be ready, and whether the cache served it
        use_compile_cache(cache_dir)
        # One graph per bucket; dynamo gives up (and runs eager) past its recompile limit.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, len(self.batch_sizes) + 1)
        self._compiled = torch.compile(forward, dynamic=False, options=options or None)
        for size in self.batch_sizes:
            misses = counters["inductor"]["fxgraph_cache_miss"]
            started = time.perf_counter()
            # Made and run as the serving path does (an inference tensor, under inference mode): the graph is
            # guarded on both, and a mismatch costs a second compile at the first real batch.
            with torch.inference_mode():
                example = torch.zeros((size, *sample_shape), dtype=dtype, device=device)
                self._compiled(example.contiguous(memory_format=memory_format))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.warmup[size] = {"seconds": round(time.perf_counter() - started, 1),
                                 "from_cache": counters["inductor"]["fxgraph_cache_miss"] == misses}
        logger.info("compiled forward ready for batch sizes %s: %s (cache %s)", self.batch_sizes, self.warmup,
                    cache_dir)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return run_in_buckets(batch, self.batch_sizes, lambda size, images: self._compiled(pad_to(images, size)))

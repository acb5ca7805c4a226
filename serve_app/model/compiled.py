"""Compiled forward passes: `torch.compile` with static shapes, one graph per batch bucket, built before traffic.

Compiling BiRefNet takes minutes per shape, so a restart must not pay it again.
Each bucket is compiled ahead of time (`aot_compile`) and saved whole, Dynamo's trace and guards included, under
`compile_cache_dir/precompiled/`; a later start loads it instead of tracing the model again. Inductor's on-disk
caches (FX graphs, Triton kernels, AOTAutograd) sit beside it, so an artifact that cannot be used (another torch,
GPU or model code) is rebuilt from them, Dynamo tracing the model again (seconds per bucket, not minutes).

With `capture` (`execution: compiled_graphs`) each compiled bucket is then captured whole in one CUDA graph of the
project's own (serve_app/model/cuda_graphs.py), which a pass replays without going through Dynamo again.

When every bucket is saved, none is loaded before the constructor returns (loading and capturing a compiled
bucket takes longer than capturing the eager forward of all of them): every bucket
first runs the eager forward, in CUDA graphs where serving captures, and each is replaced by its compiled form
behind serving, largest first. A bucket that fails to load then is not compiled behind serving: it keeps the eager
forward, its file is removed, and the next start compiles it.

Why not AOTInductor packages: on torch 2.11 a package of BiRefNet compiles but crashes while loading, in the
compiling process and in a fresh one alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch._dynamo.guards import CheckFunctionManager
from torch._dynamo.utils import counters

from serve_app.model.attention import layer_forward_name
from serve_app.model.buckets import pad_to, run_in_buckets
from serve_app.model.cuda_graphs import DEVICE_SETUP_LOCK, GraphedForward
from serve_app.model.graph_rewrites import GraphRewrites
from serve_app.threads import named_pool

logger = logging.getLogger(__name__)

# How long unloading a model waits for the saved bucket it is putting in service (seconds on a GPU).
CLOSE_WAIT_S = 120.0


# (module, batch) -> logits: the module is an argument, not a closure, so that a saved bucket holds the traced code
# and guards but no weights, and loads into any process whose module has the same classes (the same code, loaded
# from the same directory), whatever its weights.
ModuleForward = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def use_compile_cache(cache_dir: Path, device: torch.device) -> None:
    """Point inductor's caches at `cache_dir` for this process (inductor reads the variable at each lookup), and
    Triton's too, unless TRITON_CACHE_DIR names another place: the project's own kernels (the deformable convolution
    and the window attention) keep their compiled binaries and their tile sizes' timings there, so that a restart, or
    a pod on the same volume, reads each shape's tuning instead of timing every configuration again before its first
    capture. The directory is the one inductor picks for its kernels once it compiles (`<cache>/triton/<device>`),
    set here before the eager warm-up runs the project's kernels."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir.resolve())
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache_dir.resolve() / "triton" / str(device.index or 0)))


class CompiledForward:
    """Callable like the eager forward: (B, 3, H, W) in the model dtype -> (B, 1, h, w) float32 logits.

    Every bucket is compiled (or loaded from the cache) in the constructor, or, when all are saved, served by the
    eager forward until each loads right after (`wait_for_buckets`); batches are padded up to a bucket, so serving
    never meets a new shape and never recompiles.
    """

    def __init__(self, forward: ModuleForward, module: torch.nn.Module, *, sample_shape: tuple[int, int, int],
                 dtype: torch.dtype, memory_format: torch.memory_format, device: torch.device,
                 batch_sizes: Sequence[int], cache_dir: Path, options: dict | None = None, capture: bool = False,
                 rewrites: Sequence[str] = ()):
        """With `capture` (CUDA only, and not with inductor's own `triton.cudagraphs`), each compiled bucket is then
        captured whole in one CUDA graph of this class's making, and a pass replays it: one input copy and one
        launch. Inductor's CUDA graphs replay too, but every call first pays for Dynamo's guards on the model's
        ~800 parameters, the pre-graph bytecode that gathers them and the graph tree's bookkeeping: milliseconds of
        CPU before a lone batch-1 pass reaches the GPU, which sits idle meanwhile; queued passes hide it, a lone
        request pays it. `rewrites` names the rewrites of the traced graph made first (graph_rewrites.REWRITES)."""
        self.batch_sizes = sorted(set(batch_sizes))
        # per bucket: seconds to be ready, whether inductor's cache served it, and whether a saved bucket did
        self.warmup: dict[int, dict] = {}
        # Every compile and every call runs on this one thread. With inductor's CUDA graphs
        # (compile_options {"triton.cudagraphs": true}) the recorded graphs and their memory pool are kept per
        # thread, and multithreaded use is a known failure (pytorch/pytorch#123177). Callers on other threads
        # (the bulk actor's, benchmarks) hop to it; a caller that has work of its own for the device can run all
        # of it on `executor` (the remover does), and its calls then run inline.
        self.executor = named_pool(1, "compiled-forward")
        self._cuda_graphs = bool((options or {}).get("triton.cudagraphs"))
        if capture and (self._cuda_graphs or device.type != "cuda"):
            raise ValueError("capturing compiled buckets needs CUDA and no triton.cudagraphs in the options")
        self._module = module
        self._owner: threading.Thread | None = None
        self._graphed: GraphedForward | None = None
        self._buckets: dict[int, Callable[..., torch.Tensor]] = {}
        self._eager = forward  # what a bucket runs until its saved form loads (in `eager_sizes`)
        self.eager_sizes: list[int] = []  # replaced whole as buckets load: /v1/info reads it from another thread
        self._ready_sizes: list[int] = []  # the buckets that run now: replaced whole, never changed in place
        self._all_in = threading.Event()
        self._closing = False
        self.executor.submit(self._build, forward, sample_shape, dtype, memory_format, device, cache_dir,
                             options, capture, tuple(rewrites)).result()

    def _build(self, forward: ModuleForward, sample_shape: tuple[int, int, int], dtype: torch.dtype,
               memory_format: torch.memory_format, device: torch.device, cache_dir: Path, options: dict | None,
               capture: bool, rewrites: tuple[str, ...]) -> None:
        self._owner = threading.current_thread()
        use_compile_cache(cache_dir, device)
        # One graph per bucket; dynamo gives up (and runs eager) past its recompile limit.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, len(self.batch_sizes) + 1)
        self._memory_format = memory_format
        self._example_spec = (sample_shape, dtype, memory_format, device)
        self._compile_spec = (forward, _with_rewrites(options, rewrites))
        self._traced: Callable[..., torch.Tensor] | None = None  # made when first needed (_torch_compiled)
        # Inductor's CUDA graph trees keep per-call state that a saved function does not carry.
        saved = None if self._cuda_graphs else SavedBuckets(cache_dir, forward, self._module, sample_shape, dtype,
                                                            memory_format, device, options, rewrites)
        now, later = self.batch_sizes, []
        if saved is not None and saved.available and all(saved.path(size).is_file() for size in now):
            # Each saved bucket loads behind serving, the largest (the load's) first; the eager forward runs meanwhile.
            now, later = [], self.batch_sizes[::-1]
            self._buckets = dict.fromkeys(later, forward)
            self.eager_sizes = list(self.batch_sizes)
        for index, size in enumerate(now, 1):
            misses = _cache_misses()
            started = time.perf_counter()
            # Made and run as the serving path does (an inference tensor, under inference mode): the graph is
            # guarded on both, and a mismatch costs a second compile at the first real batch.
            with torch.inference_mode():
                example = self._example(size)
                loaded = saved.load(size, example) if saved is not None else None
                if loaded is None:
                    # Said before, not only after: a first start is silent for minutes here (BiRefNet: 2-3 min per
                    # bucket).
                    logger.info("compiling batch size %d (bucket %d of %d): minutes unless %s has it from an earlier "
                                "start or `python -m serve_app.prebuild`", size, index, len(self.batch_sizes),
                                cache_dir)
                    compiled = saved.compile(size, example) if saved is not None else None
                    self._buckets[size] = compiled or self._torch_compiled()
                    for _ in range(3 if self._cuda_graphs else 1):  # CUDA graph trees warm up, record, then replay
                        self._run(example)
                else:
                    self._buckets[size] = loaded
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.warmup[size] = {"seconds": round(time.perf_counter() - started, 1),
                                 "from_cache": _cache_misses() == misses,
                                 "precompiled": loaded is not None}
        serving = now or later
        if capture:
            # The eager graphs serve for seconds: cudnn's algorithm search (cudnn.benchmark) is left to the compiled
            # buckets' capture, which replaces them.
            benchmark = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = benchmark and bool(now)
            try:
                with torch.inference_mode():
                    self._graphed = GraphedForward(self._run, sample_shape=sample_shape, dtype=dtype, device=device,
                                                   batch_sizes=serving, memory_format=memory_format)
            finally:
                torch.backends.cudnn.benchmark = benchmark
        self._ready_sizes = sorted(serving)
        logger.info("compiled forward ready for batch sizes %s: %s (cache %s)%s%s", now, self.warmup,
                    cache_dir, ", each captured in a CUDA graph" if capture else "",
                    f"; batch sizes {later} run the eager forward until their saved buckets load" if not now else "")
        # Where a start's seconds went (tracing, cache lookups, loading kernels), per compiler phase.
        logger.info("%s", torch._dynamo.utils.compile_times(repr="str", aggregate=True))
        if later:
            threading.Thread(target=self._load_later, args=(saved, later), name="saved-buckets", daemon=True).start()
        else:
            self._all_in.set()

    def _load_later(self, saved: SavedBuckets, sizes: Sequence[int]) -> None:
        """Each of `sizes`' saved buckets, in that order, read here and then put in service on the forward's thread,
        between batches. Where torch does not take a bucket read on another thread (its guards then fail), the
        forward's thread reads it as at start-up, serving waiting meanwhile. Nothing is compiled behind serving: a
        bucket that cannot be read or run keeps the eager forward, and its file is removed so that the next start
        (or `python -m serve_app.prebuild`) compiles it again."""
        try:
            for size in sizes:
                started = time.perf_counter()
                with torch.inference_mode():
                    compiled = None if self._closing else saved.read(size)
                if self._closing:  # the model is being unloaded: its saved buckets stay for the next load
                    break
                if compiled is not None and self._in_service(size, compiled, saved, started):
                    continue
                if compiled is None or not self._in_service(size, None, saved, started):
                    saved.discard(size)
                    logger.warning("batch size %d keeps running the eager forward", size)
        finally:
            self._all_in.set()

    def _in_service(self, size: int, compiled: Callable[..., torch.Tensor] | None, saved: SavedBuckets,
                    started: float) -> bool:
        return self.executor.submit(self._put_in_service, size, compiled, saved, started).result()

    def _put_in_service(self, size: int, compiled: Callable[..., torch.Tensor] | None, saved: SavedBuckets,
                        started: float) -> bool:
        """On the forward's thread: check `compiled` (None: read it here), capture it if serving captures, and let
        batches use it; False, with nothing of it left in use, if any step fails."""
        with DEVICE_SETUP_LOCK:
            return self._put_in_service_alone(size, compiled, saved, started)

    def _put_in_service_alone(self, size: int, compiled: Callable[..., torch.Tensor] | None, saved: SavedBuckets,
                              started: float) -> bool:
        waiting = time.perf_counter()
        running = self._buckets[size]
        try:
            with torch.inference_mode():
                example = self._example(size)
                compiled = saved.load(size, example) if compiled is None else saved.check(size, compiled, example)
                if compiled is None:
                    return False
                self._buckets[size] = compiled  # the capture runs it through _run
                if self._graphed is not None:
                    self._graphed.add(size)
            if example.is_cuda:
                torch.cuda.synchronize(example.device)
        except Exception:
            self._buckets[size] = running  # its graph, if captured, was replaced only once captured
            logger.exception("batch size %d could not be put in service", size)
            return False
        # In this order: a reader of eager_sizes, then warmup, finds the size in one of them.
        self.warmup[size] = {"seconds": round(time.perf_counter() - started, 1), "from_cache": True,
                             "precompiled": True, "after_start": True}
        self.eager_sizes = [other for other in self.eager_sizes if other != size]
        logger.info("batch size %d in service %.1f s after it began loading (serving waited %.2f s)", size,
                    time.perf_counter() - started, time.perf_counter() - waiting)
        return True

    def _torch_compiled(self) -> Callable[..., torch.Tensor]:
        """The forward through `torch.compile`, which compiles each new shape on its first call. Made on first use:
        making it imports inductor (~1 s), which a start served from saved buckets does after turning ready."""
        if self._traced is None:
            forward, options = self._compile_spec
            self._traced = torch.compile(forward, dynamic=False, options=options or None)
        return self._traced

    def _example(self, size: int) -> torch.Tensor:
        """A batch of `size` as serving makes them (under inference mode: an inference tensor), which the guards
        check."""
        sample_shape, dtype, memory_format, device = self._example_spec
        return torch.zeros((size, *sample_shape), dtype=dtype, device=device).contiguous(memory_format=memory_format)

    def close(self) -> None:
        """Stop putting saved buckets in service (after the one in hand), then finish the work queued on the
        forward's thread and end it."""
        self._closing = True
        self._all_in.wait(CLOSE_WAIT_S)
        self.executor.shutdown(wait=True)

    def wait_for_buckets(self, timeout: float | None = None) -> bool:
        """Block until every bucket is in service (or has failed to load); False on timeout."""
        return self._all_in.wait(timeout)

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
        return run_in_buckets(batch, self._ready_sizes, lambda size, images: self._run(pad_to(images, size)))

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        compiled = self._buckets[batch.shape[0]]
        if compiled is self._eager:
            return compiled(self._module, batch)
        if compiled is not self._traced:
            # A saved bucket answers only the inputs it was compiled for (it raises where torch.compile would
            # compile again): an inference tensor of the bucket's layout, under inference mode.
            with torch.inference_mode():
                if not batch.is_inference() or not batch.is_contiguous(memory_format=self._memory_format):
                    batch = batch.contiguous(memory_format=self._memory_format).clone(
                        memory_format=torch.preserve_format)
                try:
                    return compiled(self._module, batch)
                except RuntimeError as error:  # raised by the guards, before anything runs
                    if not str(error).startswith(_GUARD_FAILURE):
                        raise
            logger.warning("a batch of shape %s does not match its saved bucket; running it through torch.compile",
                           tuple(batch.shape))
            compiled = self._torch_compiled()
        if not self._cuda_graphs:
            return compiled(self._module, batch)
        # A new step each call: the previous call's outputs are no longer read through the graph's memory. The
        # clone is that guarantee: a replay overwrites its outputs in place, and a batch above the largest bucket
        # runs the same graph again before its pieces are joined.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(self._module, batch).clone()


_GUARD_FAILURE = "GuardManager check failed"


def _cache_misses() -> tuple[int, int]:
    # A saved bucket is compiled through AOTAutograd's cache, a traced one through inductor's FX graph cache.
    return counters["inductor"]["fxgraph_cache_miss"], counters["aot_autograd"]["autograd_cache_miss"]


class SavedBuckets:
    """Compiled buckets saved whole and loaded back, one file per bucket, keyed by all that shapes the compile.

    The key covers torch, the device, the forward's and the module's code (this package and every source file the
    module's classes come from), the classes' import paths, the parameters' names, shapes and dtypes, the input and
    the compile options;
    torch checks its own system information again on load. Any failure to save or load is logged and the bucket
    compiles as before.
    """

    def __init__(self, cache_dir: Path, forward: ModuleForward, module: torch.nn.Module,
                 sample_shape: tuple[int, int, int], dtype: torch.dtype, memory_format: torch.memory_format,
                 device: torch.device, options: dict | None, rewrites: Sequence[str] = ()):
        self.directory = cache_dir / "precompiled"
        self._forward = forward
        self._module = module
        self._options = _with_rewrites(options, rewrites)
        self._key = _artifact_key(forward, module, sample_shape, dtype, memory_format, device,
                                  {**(options or {}), "rewrites": sorted(rewrites)})
        self.available = hasattr(torch.compiler, "load_compiled_function")

    def path(self, size: int) -> Path:
        return self.directory / f"{self._key}-batch{size}.bin"

    def load(self, size: int, example: torch.Tensor) -> Callable[..., torch.Tensor] | None:
        """The saved bucket for `size`, run once on `example` (which checks its guards), or None."""
        started = time.perf_counter()
        compiled = self.read(size)
        if compiled is None or self.check(size, compiled, example) is None:
            return None
        logger.info("loaded compiled batch size %d from %s in %.1f s", size, self.path(size),
                    time.perf_counter() - started)
        return compiled

    def read(self, size: int) -> Callable[..., torch.Tensor] | None:
        """The saved bucket for `size` as read from disk, not yet run, or None."""
        path = self.path(size)
        if not self.available or not path.is_file():
            return None
        try:
            with path.open("rb") as file:
                return torch.compiler.load_compiled_function(file)
        except Exception:
            logger.warning("saved bucket %s could not be read; compiling it again", path, exc_info=True)
            return None

    def check(self, size: int, compiled: Callable[..., torch.Tensor],
              example: torch.Tensor) -> Callable[..., torch.Tensor] | None:
        """`compiled` once it ran on `example` (which checks its guards), or None if it could not."""
        try:
            compiled(self._module, example)
        except Exception:
            logger.warning("saved bucket %s did not run", self.path(size), exc_info=True)
            return None
        return compiled

    def discard(self, size: int) -> None:
        """Remove `size`'s saved bucket (one that cannot be used), so that the next start compiles it again."""
        try:
            self.path(size).unlink(missing_ok=True)
        except OSError:
            logger.warning("could not remove %s", self.path(size), exc_info=True)

    def compile(self, size: int, example: torch.Tensor) -> Callable[..., torch.Tensor] | None:
        """`size`'s bucket compiled whole and saved for the next start, or None if it cannot be (a forward with graph
        breaks): the caller then compiles it as before, without saving."""
        if not self.available:
            return None
        try:
            with _aot_compile_enabled():
                options = {**(self._options or {}), "guard_filter_fn": _saved_guards}
                compiled = torch.compile(self._forward, fullgraph=True, dynamic=False,
                                         options=options).aot_compile(  # type: ignore[attr-defined]
                                             ((self._module, example), {}))
        except Exception:  # graph breaks, or a torch without aot_compile
            logger.info("batch size %d cannot be compiled ahead of time; compiling it without saving", size,
                        exc_info=True)
            return None
        path = self.path(size)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            compiled.save_compiled_function(str(partial))
            os.replace(partial, path)  # whole or absent: several processes may save the same bucket
        except Exception:
            logger.warning("could not save compiled batch size %d to %s", size, path, exc_info=True)
        return compiled


def _saved_guards(entries: Sequence[Any]) -> list[bool]:
    """Which of Dynamo's guards a saved bucket keeps: torch's own choice for saved functions (no guards on globals,
    none it cannot serialise), less the process-wide state guard. That one also pins the number of CPU threads,
    which Ray sets from each task's CPUs: a bucket saved by the prebuild (a replica's 2 CPUs) would never load in
    the bulk tool's model actor (1 CPU). The compiled code is the same for any thread count, and every call runs
    under inference mode (CompiledForward._run), the state the other parts of that guard check."""
    unsupported = getattr(CheckFunctionManager, "UNSUPPORTED_SERIALIZATION_GUARD_TYPES", ())
    return [not (entry.is_global or entry.guard_type in unsupported or entry.guard_type == "GLOBAL_STATE")
            for entry in entries]


def _aot_compile_enabled() -> AbstractContextManager:
    """torch.compile's `aot_compile`, which torch 2.11 offers only behind a config flag (on by default later)."""
    if hasattr(torch._dynamo.config, "enable_aot_compile"):
        return torch._dynamo.config.patch(enable_aot_compile=True)
    return nullcontext()


def _with_rewrites(options: dict | None, rewrites: Sequence[str]) -> dict | None:
    """Inductor's options for a compile: `options`, with graph_rewrites' passes that `rewrites` names on the traced
    graph before inductor lowers it. Not in the saved buckets' key as an object (its address differs in every
    process): as the names."""
    if not rewrites:
        return options or None
    return {**(options or {}), "pre_grad_custom_pass": GraphRewrites(rewrites)}


def _artifact_key(forward: ModuleForward, module: torch.nn.Module, sample_shape: tuple[int, int, int],
                  dtype: torch.dtype, memory_format: torch.memory_format, device: torch.device,
                  options: dict | None) -> str:
    digest = hashlib.sha256()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    digest.update(json.dumps([torch.__version__, torch.version.cuda, device_name, list(sample_shape), str(dtype),
                              str(memory_format), options or {}], sort_keys=True, default=str).encode())
    # This package's own code is traced too (the forward, fused attention, the deformable convolution).
    sources: set[str | None] = {str(path) for path in Path(__file__).parent.glob("*.py")}
    sources |= {sys.modules[forward.__module__].__file__}
    sources |= {sys.modules[type(part).__module__].__file__ for part in module.modules()}
    for source in sorted(path for path in sources if path):
        digest.update(Path(source).read_bytes())
    # Forwards given to single layers (the fused window attention's kernel) are traced in place of their class's.
    digest.update(json.dumps(sorted({f"{type(part).__qualname__}.{layer_forward_name(part)}"
                                     for part in module.modules() if "forward" in part.__dict__})).encode())
    # The classes themselves, by import path: a saved bucket is guarded on its module's type, and the same remote
    # code loaded from another directory is another module (transformers_modules.<dir>...) of other classes.
    digest.update(json.dumps(sorted({f"{type(part).__module__}.{type(part).__qualname__}"
                                     for part in module.modules()})).encode())
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    return digest.hexdigest()[:20]

"""The model core: images in, alpha masks out, all tensor work on the model's device.

No Ray here. The Serve deployment, the bulk tool and the benchmarks all call `BackgroundRemovalModel.predict`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from serve_app.model.attention import ContiguousAttentionMasks, fuse_window_attention, fused_attention_kernel
from serve_app.model.batch_memory import probe_batch_limit, release_cached_memory, submit_split_on_out_of_memory
from serve_app.model.compiled import CompiledForward
from serve_app.model.cuda_graphs import DEVICE_SETUP_LOCK, GraphedForward
from serve_app.model.deform_conv import (
    capturable_deform_conv_active,
    capturable_deform_conv_kernel,
    deform_conv_implementation,
    use_capturable_deform_conv,
)
from serve_app.model.foreground import refine_foreground_uint8
from serve_app.model.graph_rewrites import REWRITES
from serve_app.model.jpeg_on_device import decode_on_device
from serve_app.model.loading import load_segmentation_module
from serve_app.model.png_device import check_cutout_stream, encode_cutout_stream
from serve_app.model.timeline import PassTimeline, PassTiming
from serve_app.protocol import DeviceDecodeFailed, EncodedJpeg, OutOfDeviceMemory, Pending, ReducedImage
from serve_app.settings import COMPILED_EXECUTIONS, ModelSettings, default_compile_cache_dir

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# What a pass takes: decoded pixels, a large JPEG's reduced copy, or decode_jpeg()'s tensor on the device.
ModelImage = np.ndarray | ReducedImage | torch.Tensor


# The executions that capture CUDA graphs of their own, and what each runs without them (off CUDA).
_WITHOUT_CUDA_GRAPHS = {"cuda_graphs": "eager", "compiled_graphs": "compiled"}


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(choice)


def resolve_precision(choice: str, device: torch.device) -> str:
    if choice == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return choice


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing `array`'s memory, which is only read: arrays from Ray's object store are read-only, and
    torch warns about those for nothing here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def final_logits(outputs: object) -> torch.Tensor:
    """The prediction to use from a segmentation network's outputs, as float32 logits (B, 1, h, w)."""
    if hasattr(outputs, "logits"):
        outputs = outputs.logits
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[-1]  # BiRefNet returns its multi-scale predictions, finest last
    return cast(torch.Tensor, outputs).float()


def segment_logits(module: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The forward pass every execution runs: logits, with attention masks the fused kernels can read."""
    with ContiguousAttentionMasks():
        return final_logits(module(batch))


def segment_logits_published_masks(module: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """`segment_logits` with the attention masks as the model's code makes them."""
    return final_logits(module(batch))


def split_masks(flat: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """`postprocess()`'s one flat host tensor back into (H, W) uint8 masks, views of it, in order."""
    values = flat.numpy()
    masks, offset = [], 0
    for height, width in sizes:
        masks.append(values[offset : offset + height * width].reshape(height, width))
        offset += height * width
    return masks


@dataclass
class PendingMasks:
    """A submitted batch: masks flattened into `host` (pinned memory on CUDA), complete once `done` fires; on CUDA
    the forward's device time goes to `timeline` as the masks are read."""

    host: torch.Tensor
    sizes: list[tuple[int, int]]
    done: torch.cuda.Event | None
    timing: PassTiming | None = None
    timeline: PassTimeline | None = None

    def result(self) -> list[np.ndarray]:
        if self.done is not None:
            self.done.synchronize()  # blocks this thread only; other CUDA work keeps running
        if self.timing is not None and self.timeline is not None:
            self.timeline.record(self.timing)
        return split_masks(self.host, self.sizes)


def rewrites_on(settings: ModelSettings | None) -> tuple[str, ...]:
    """The graph rewrites (graph_rewrites.REWRITES) whose model settings are on in `settings`, or by default."""
    values = settings if settings is not None else ModelSettings.model_construct()
    return tuple(name for name in REWRITES if getattr(values, name))


class BackgroundRemovalModel:
    """A segmentation network wrapped with its pre- and post-processing."""

    def __init__(self, module: torch.nn.Module, *, input_size: tuple[int, int], device: torch.device,
                 precision: str, model_id: str = "<module>", execution: str = "eager",
                 graph_batch_sizes: tuple[int, ...] = (1, 2, 4, 8), channels_last: bool = False,
                 compile_cache_dir: Path | None = None, compile_options: dict | None = None,
                 attention_precision: str = "model", contiguous_attention_masks: bool = True,
                 fused_window_attention: bool = True, capturable_deform_conv: str = "triton",
                 window_attention_kernel: str = "triton", graph_rewrites: Sequence[str] | None = None):
        self.model_id = model_id
        self.input_size = input_size  # (width, height)
        self.device = device
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        started = time.perf_counter()
        self.module = module.to(device=device, dtype=self.dtype,  # type: ignore[call-overload]
                                memory_format=self.memory_format).eval()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        to_device_s = time.perf_counter() - started
        if device.type == "cuda":
            # Convolution algorithms are tuned once per input shape; batches take a handful of shapes.
            torch.backends.cudnn.benchmark = True
        self.attention_precision = attention_precision
        # Process-wide, like cudnn.benchmark: one model per process. The math attention kernel otherwise upcasts
        # fp16 to fp32 and multiplies on CUDA cores; the rest of the network already runs in fp16.
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(attention_precision == "model")
        self.contiguous_attention_masks = contiguous_attention_masks
        # The forward pass every execution runs (eager, captured, compiled), so all get the same attention.
        self._segment = segment_logits if contiguous_attention_masks else segment_logits_published_masks
        # Before any compile or capture, which trace whichever forward the layers have.
        self.fused_window_attention_layers = (fuse_window_attention(self.module, window_attention_kernel)
                                              if fused_window_attention else 0)
        # What runs the fused layers, for describe(): the Triton kernel only on CUDA.
        self.window_attention_kernel = fused_attention_kernel(self.module)
        if self.window_attention_kernel and device.type != "cuda":
            self.window_attention_kernel = "sdpa"
        if device.type == "cuda":
            self._upload_stream = torch.cuda.Stream(device)
            self._download_stream = torch.cuda.Stream(device)
            # decode_jpeg()'s tensors are allocated and made here: nvJPEG writes them from a stream of its own, so
            # their memory must never be a block the compute stream may still be reading.
            self._decode_stream = torch.cuda.Stream(device)
        # For pixels of 0-255: the division by 255 is folded into the normalisation, which runs at the model's size,
        # not over the whole photo (a 12 MP photo's float copy is 144 MB, one more pass of device memory each way).
        self._mean_255 = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self._std_255 = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0
        # CUDA graphs need CUDA: elsewhere, what runs without them.
        self.execution = _WITHOUT_CUDA_GRAPHS.get(execution, execution) if device.type != "cuda" else execution
        if execution != self.execution:
            logger.warning("execution %r needs CUDA; running %s on %s", execution, self.execution, device)
        self.out_of_memory_splits = 0  # batches retried in halves
        self._device_png: bool | None = None  # cutout_stream's kernels checked and working (None: not yet used)
        self._device_png_check = threading.Lock()
        self._largest_batch_run = 0  # the most images a forward has run with (cudnn tunes no larger ones)
        self.pass_timeline = PassTimeline()  # CUDA only: each forward's device time and the stalls between them
        self._previous_forward_end: torch.cuda.Event | None = None
        self.on_out_of_memory: Callable[[int], None] | None = None
        self.compile_warmup: dict[int, dict] = {}  # per bucket: seconds to compile or load, and from_cache
        self.load_phases: dict[str, float] = {}  # seconds per start-up step (from_settings), for /v1/info
        self.compile_options = dict(compile_options or {})
        # the compiled executions' rewrites of the traced graph, by setting name (graph_rewrites.REWRITES); by
        # default those the model settings turn on by default
        self.graph_rewrites = tuple(graph_rewrites) if graph_rewrites is not None else rewrites_on(None)
        # torchvision's deform_conv2d kernel is not recomputed when a CUDA graph replays (serve_app/model/
        # deform_conv.py); BiRefNet's decoder calls it. Process-wide, like the settings above.
        # A later model in the same process (benchmarks run several) gets it too, whatever its execution:
        # describe() reports what this process runs.
        if device.type == "cuda" and (
                self.execution in _WITHOUT_CUDA_GRAPHS
                or (self.execution == "compiled" and bool(self.compile_options.get("triton.cudagraphs")))):
            use_capturable_deform_conv("CUDA", capturable_deform_conv_kernel(capturable_deform_conv))
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self._eager_forward
        started = time.perf_counter()
        if self.execution == "cuda_graphs":
            self._forward = self._capture_graphs(graph_batch_sizes)
        elif self.execution in COMPILED_EXECUTIONS:
            self._forward = self._compile(graph_batch_sizes, compile_cache_dir or default_compile_cache_dir(),
                                          capture=self.execution == "compiled_graphs")
        self.load_phases = {"to_device_s": round(to_device_s, 1),
                            "buckets_s": round(time.perf_counter() - started, 1)}

    def _or_eager(self, build: Callable[[], Callable[[torch.Tensor], torch.Tensor]],
                  what: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """`build()`, or the eager forward if this model cannot be captured or compiled (data-dependent shapes,
        syncs, operators the compiler cannot handle)."""
        try:
            return build()
        except Exception:
            logger.exception("%s failed for %s; running eager", what, self.model_id)
            self.execution = "eager"
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return self._eager_forward

    def _capture_graphs(self, batch_sizes: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
        width, height = self.input_size

        def capture() -> GraphedForward:
            with torch.inference_mode():
                return GraphedForward(self._eager_forward, sample_shape=(3, height, width), dtype=self.dtype,
                                      device=self.device, batch_sizes=batch_sizes)
        return self._or_eager(capture, "CUDA graph capture")

    def _compile(self, batch_sizes: tuple[int, ...], cache_dir: Path,
                 capture: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """Compiled forward, every bucket built (or loaded from inductor's cache) now, before traffic; with
        `capture`, each then captured in a CUDA graph."""
        width, height = self.input_size

        def compile_buckets() -> CompiledForward:
            compiled = CompiledForward(self._segment, self.module, sample_shape=(3, height, width), dtype=self.dtype,
                                       memory_format=self.memory_format, device=self.device,
                                       batch_sizes=batch_sizes, cache_dir=cache_dir, options=self.compile_options,
                                       capture=capture, rewrites=self.graph_rewrites)
            self.compile_warmup = compiled.warmup
            return compiled
        return self._or_eager(compile_buckets, "compiling")

    @classmethod
    def from_settings(cls, settings: ModelSettings, module: torch.nn.Module | None = None) -> BackgroundRemovalModel:
        """The model `settings` describe, loaded from `settings.model_id`, or built around `module`, already loaded
        from there (a benchmark's changed copy), which then goes to the device and gets compiled or captured."""
        device = resolve_device(settings.device)
        precision = resolve_precision(settings.precision, device)
        started = time.perf_counter()
        if module is None:
            module = load_segmentation_module(settings.model_id, settings.revision)
        module_s = time.perf_counter() - started
        with DEVICE_SETUP_LOCK:  # never beside another model's capture in this process (cuda_graphs.py)
            model = cls(module, input_size=settings.input_size, device=device, precision=precision,
                        model_id=settings.model_id, execution=settings.execution,
                        graph_batch_sizes=settings.graph_batch_sizes, channels_last=settings.channels_last,
                        compile_cache_dir=settings.compile_cache_dir,
                        compile_options=settings.compile_options,
                        attention_precision=settings.attention_precision,
                        contiguous_attention_masks=settings.contiguous_attention_masks,
                        fused_window_attention=settings.fused_window_attention,
                        capturable_deform_conv=settings.capturable_deform_conv,
                        window_attention_kernel=settings.window_attention_kernel,
                        graph_rewrites=rewrites_on(settings))
        model.load_phases = {"module_s": round(module_s, 1), **model.load_phases}
        logger.info("loaded %s on %s in %s (%.1f s: %s)", settings.model_id, device, precision,
                    time.perf_counter() - started, model.load_phases)
        return model

    def _blank_batch(self, size: int) -> list[np.ndarray]:
        """`size` white images of the input size: the work of a real batch with nothing to decode."""
        width, height = self.input_size
        return [np.full((height, width, 3), 255, dtype=np.uint8)] * size

    def warm_up(self, batch_size: int = 1) -> None:
        """Run forward passes so that lazy CUDA initialisation and cudnn's algorithm search for this batch size
        are paid before the first request: in eager execution two, as the search waits for a size's second batch
        (_forward_new_sizes_untuned); the other executions searched as they captured or compiled their buckets."""
        if batch_size > 0:
            for _ in range(2 if self.execution == "eager" else 1):
                self.predict(self._blank_batch(batch_size))

    def warm_up_cutout_stream(self) -> bool:
        """Compile (or load from Triton's cache: `make prebuild` fills it) the kernels of cutout_stream() on a CUDA
        device and check what they write; False where they do not build or do not give back their pixels, and
        then cutout_stream() writes nothing (the ingress encodes every PNG) while the model serves as before."""
        if self.device.type != "cuda":
            return False
        try:
            check_cutout_stream(self.device)
        except Exception as error:
            logger.warning("large photos' PNGs stay on the ingress: the device's PNG kernels failed their check "
                           "(%s: %s)", type(error).__name__, error)
            return False
        return True

    def predict(self, images: Sequence[ModelImage]) -> list[np.ndarray]:
        """Masks for a batch of (H, W, 3) uint8 RGB images (or RGBX, (H, W, 4), the fourth channel unread) of any
        sizes, in order, as (H, W) uint8. Images may also be `decode_jpeg()`'s tensors, already on the device, or
        ReducedImages, whose masks have their `size`. Raises the device's out-of-memory error if an image ran out
        of memory even in a pass of its own (submit() gives it as that image's result instead)."""
        masks = self.submit(images).result()
        for mask in masks:
            if isinstance(mask, BaseException):
                raise mask
        return masks

    @torch.inference_mode()
    def decode_jpeg(self, encoded: EncodedJpeg) -> torch.Tensor:
        """The model's copy of a JPEG, decoded on the model's device (nvJPEG on CUDA), for predict()/submit().

        On CUDA the tensor is made on a stream of its own, which the upload of the pass it joins waits for. The
        decode can wait for the work already queued on the device, so it pays only on an idle device. Raises
        DeviceDecodeFailed, also while another model sets up on the device: nvJPEG's first use allocates and
        synchronises, which must not meet a CUDA graph capture in another thread (cuda_graphs.py); the caller then
        sends pixels.
        """
        if self.device.type != "cuda":
            return decode_on_device(encoded, self.device)
        if not DEVICE_SETUP_LOCK.try_shared():
            raise DeviceDecodeFailed("another model is setting up on the device; send the pixels")
        try:
            with torch.cuda.stream(self._decode_stream):
                return decode_on_device(encoded, self.device)
        except torch.cuda.OutOfMemoryError:
            # The pixels from the ingress then join a pass, where a batch too big for the memory is split.
            release_cached_memory(self.device)
            raise DeviceDecodeFailed("the device ran out of memory decoding the JPEG; send the pixels") from None
        finally:
            DEVICE_SETUP_LOCK.release_shared()

    @torch.inference_mode()
    def cutout_stream(self, pixels: torch.Tensor, mask: np.ndarray) -> np.ndarray | None:
        """The zlib stream of the RGBA cut-out's PNG rows (serve_app.png.wrap_zlib_stream makes the PNG), written on
        the device (png_device.py) from decode_jpeg()'s `pixels` and their (H, W) uint8 `mask`, on a stream of the
        calling thread's own. None where the device cannot write it now: not CUDA, kernels that failed their check
        at first use (warm_up_cutout_stream), another model setting up on the device (which the waits here must not
        meet: cuda_graphs.py), or out of memory; the caller then encodes the PNG itself."""
        if self.device.type != "cuda" or self._device_png is False or not DEVICE_SETUP_LOCK.try_shared():
            return None
        try:
            if self._device_png is None:  # the first large photo's: compiling here keeps it off every start
                with self._device_png_check:  # once, whichever PNG thread comes first; Triton's compile is not
                    if self._device_png is None:  # made to run twice at once
                        self._device_png = self.warm_up_cutout_stream()
                if not self._device_png:
                    return None
            return encode_cutout_stream(pixels, _read_only_tensor(mask))
        except torch.cuda.OutOfMemoryError:
            release_cached_memory(self.device)  # else the passes after it find the memory held and split
            logger.warning("the PNG of a %dx%d cut-out ran out of device memory; the ingress encodes it",
                           mask.shape[1], mask.shape[0])
            return None
        finally:
            DEVICE_SETUP_LOCK.release_shared()

    @torch.inference_mode()
    def estimate_foreground(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Clean edges: the subject's own colours where `mask` (H, W) uint8 is semi-transparent, estimated on the
        device from `image` (H, W, 3) RGB or (H, W, 4) RGBX uint8 (serve_app/model/foreground.py), as (H, W, 3)
        uint8; opaque pixels keep their colour. OutOfDeviceMemory when the image is too large for the memory
        left (about 250 bytes a pixel: 12 GB for 50 MP)."""
        try:
            pixels = self._upload(image)[..., :3]
            alpha = torch.from_numpy(np.ascontiguousarray(mask)).to(self.device)
            return refine_foreground_uint8(pixels, alpha).cpu().numpy()
        except torch.cuda.OutOfMemoryError as error:
            release_cached_memory(self.device)
            logger.warning("clean edges of a %dx%d image ran out of device memory: %s", mask.shape[1], mask.shape[0],
                           error)
            raise OutOfDeviceMemory(f"clean edges of a {mask.shape[1]}x{mask.shape[0]} image") from None

    def submit(self, images: Sequence[ModelImage]) -> Pending:
        """Queue the whole batch on the device and return at once; `.result()` waits for the masks.

        On CUDA nothing here waits for the GPU, so a caller can queue the next batch while this one runs and
        the device never idles between batches. A batch that runs out of device memory is retried in halves
        (recursively), so no image fails because its batch-mates made the batch too big; `on_out_of_memory`
        hears the size that failed, so the caller can lower its batch limit. An image that runs out of memory in a
        pass of its own has the error as its result, in its place among the masks: it alone fails.
        """
        return submit_split_on_out_of_memory(self._submit, images, self.device, self._count_split)

    def _count_split(self, failed_size: int) -> None:
        self.out_of_memory_splits += 1
        if self.on_out_of_memory is not None:
            self.on_out_of_memory(failed_size)

    def probe_batch_limit(self, ceiling: int, headroom_fraction: float = 0.1) -> int:
        """The largest batch (a power of two, or `ceiling`) whose whole pass fits in free device memory."""
        buckets = getattr(self._forward, "batch_sizes", None)  # captured or compiled: the largest ran at start-up
        if buckets and ceiling <= max(buckets):
            # Every batch up to the ceiling runs in a bucket that already ran before this: probing would only
            # add seconds to each start.
            return ceiling

        def run_batch(size: int) -> None:
            # The probe tries only sizes its linear estimate says fit, and serving will run them: cudnn searches
            # their algorithms here, at start-up, rather than at their first live batch (_forward_new_sizes_untuned).
            self._largest_batch_run = max(self._largest_batch_run, size)
            self._submit(self._blank_batch(size)).result()
        return probe_batch_limit(run_batch, self.device, ceiling=ceiling, headroom_fraction=headroom_fraction)

    @torch.inference_mode()
    def _submit(self, images: Sequence[ModelImage]) -> PendingMasks:
        sizes = [image.size if isinstance(image, ReducedImage) else tuple(image.shape[:2]) for image in images]
        if not images:
            return PendingMasks(torch.empty(0, dtype=torch.uint8), sizes, None)
        if self.device.type != "cuda":
            return PendingMasks(self.postprocess(self._forward_new_sizes_untuned(self.preprocess(images)), sizes),
                                sizes, None)
        # Only the forward passes run on the compute stream. Each batch's upload, resize and normalisation run on
        # the upload stream, during the previous batch's forward; its post-processing and download on the
        # download stream, during the next one's. Eight 6 MP photos are ~150 MB up and ~50 MB down per batch; the
        # resizing and the rest are a few milliseconds of GPU work beside a compiled pass of over 100 ms, and give
        # the same masks as on one stream.
        compute = torch.cuda.current_stream(self.device)
        decoded_here = [image for image in images if isinstance(image, torch.Tensor) and image.is_cuda]
        if decoded_here:  # decode_jpeg()'s, made on its stream
            self._upload_stream.wait_stream(self._decode_stream)
        with torch.cuda.stream(self._upload_stream):
            for tensor in decoded_here:
                tensor.record_stream(self._upload_stream)  # read there: its memory is not reused before
            batch = self._resize_and_normalise([self._upload(image) for image in images])
        compute.wait_stream(self._upload_stream)
        batch.record_stream(compute)  # allocated on the upload stream, read on this one
        # Still running: this pass waits behind it, so any idle time of the stream in between is a stall.
        previous = self._previous_forward_end
        behind = previous if previous is not None and not previous.query() else None
        forward_start, forward_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        forward_start.record(compute)
        logits = self._forward_new_sizes_untuned(batch)  # a tensor of its own: the graph executions hand out clones
        forward_end.record(compute)
        self._previous_forward_end = forward_end
        self._download_stream.wait_stream(compute)
        with torch.cuda.stream(self._download_stream):
            logits.record_stream(self._download_stream)
            flat = self.postprocess(logits, sizes)
            host = torch.empty(flat.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            # Blocking: the thread that waits for it sleeps (CUDA would spin a CPU core for the whole pass).
            done = torch.cuda.Event(blocking=True)
            done.record()
        return PendingMasks(host, sizes, done, PassTiming(forward_start, forward_end, behind), self.pass_timeline)

    def preprocess(self, images: Sequence[ModelImage]) -> torch.Tensor:
        """Upload, resize to the input size and normalise on the device: (B, 3, H_in, W_in) in the model dtype."""
        return self._resize_and_normalise([self._upload(image) for image in images])

    def _resize_and_normalise(self, uploaded: Sequence[torch.Tensor]) -> torch.Tensor:
        width, height = self.input_size
        resized = []
        for image in uploaded:
            pixels = image.permute(2, 0, 1)[:3].unsqueeze(0).float()  # RGBX: the X is not read
            resized.append(F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False,
                                         antialias=True))
        batch = torch.cat(resized).sub_(self._mean_255).div_(self._std_255)
        return batch.to(dtype=self.dtype, memory_format=self.memory_format)

    def _upload(self, image: ModelImage) -> torch.Tensor:
        """One (H, W, 3) or (H, W, 4) uint8 image on the device, from pinned memory on CUDA (an asynchronous copy)."""
        if isinstance(image, ReducedImage):  # its mask has the whole image's size (_submit)
            image = image.pixels
        if isinstance(image, torch.Tensor):  # decode_jpeg()'s, on the device already
            if (image.device.type != self.device.type or image.ndim != 3 or image.shape[2] != 3
                    or image.dtype != torch.uint8):
                raise ValueError(f"expected an (H, W, 3) uint8 tensor on {self.device}, got {tuple(image.shape)} "
                                 f"{image.dtype} on {image.device}")
            return image
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB or (H, W, 4) RGBX, got {image.shape} {image.dtype}")
        tensor = _read_only_tensor(np.ascontiguousarray(image))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of the final prediction, (B, 1, h, w) in float32."""
        return self._forward(batch)

    def _forward_new_sizes_untuned(self, batch: torch.Tensor) -> torch.Tensor:
        """forward(), with cudnn's algorithm search (cudnn.benchmark) only for batch sizes that already ran.

        The search times every algorithm of each convolution for each new input shape: seconds per shape at batch
        sizes in the hundreds. A batch larger than any before may be about to run out of memory (and its halves
        too), and would pay that search for nothing; it runs with cudnn's heuristics instead, and the search
        happens at that size's next batch. Eager execution only: graph replays call no cudnn, and compiled buckets
        were searched as they were built (the flag is left alone where Dynamo checks its guards on every call).
        """
        size = batch.shape[0]
        if self.execution != "eager" or size <= self._largest_batch_run:
            return self.forward(batch)  # the process-wide flag untouched: other models' threads read it too
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = previous and size <= self._largest_batch_run
        try:
            logits = self.forward(batch)
        finally:
            torch.backends.cudnn.benchmark = previous
        self._largest_batch_run = max(self._largest_batch_run, size)
        return logits

    def wait_for_buckets(self, timeout: float | None = None) -> bool:
        """Block until every batch bucket is in service (compiled execution loads all but the largest after start-up,
        padding their batches up meanwhile); False on timeout."""
        return self._forward.wait_for_buckets(timeout) if isinstance(self._forward, CompiledForward) else True

    @property
    def forward_executor(self) -> Executor | None:
        """The one thread the forward must run on, if it has one (compiled execution): a caller that runs its
        device work there saves a thread hop per batch."""
        return self._forward.executor if isinstance(self._forward, CompiledForward) else None

    def _eager_forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self._segment(self.module, batch)

    def postprocess(self, logits: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Sigmoid, resize each mask to its image's (H, W), uint8, all masks flattened into one tensor.

        One tensor means one device-to-host copy for the whole batch. The scaling to 0-255 runs at the model's
        size, before the (linear) resize; the resized values, each between its neighbours, need no clamping, and
        go straight into their place in the flat tensor: at 12 MP every full-size pass left out is 96 MB of device
        memory traffic.
        """
        scaled = logits.sigmoid().mul_(255.0)
        flat = torch.empty(sum(height * width for height, width in sizes), dtype=torch.uint8, device=logits.device)
        offset = 0
        for index, (height, width) in enumerate(sizes):
            mask = F.interpolate(scaled[index : index + 1], size=(height, width), mode="bilinear",
                                 align_corners=False)
            flat[offset : offset + height * width].view(1, 1, height, width).copy_(mask.round_())
            offset += height * width
        return flat

    def close(self) -> None:
        """Give the device memory back: weights, captured or compiled buckets and cached blocks. The model cannot
        run afterwards (a replica unloads a model no request uses)."""
        if isinstance(self._forward, CompiledForward):
            self._forward.close()  # stops loading saved buckets, then finishes the work queued on its thread
        self._forward = self._eager_forward
        self.module = torch.nn.Module()
        with DEVICE_SETUP_LOCK:
            gc.collect()  # graphs and their memory pools go with the last reference
            release_cached_memory(self.device)

    def check_device(self) -> None:
        """Raise if the device cannot compute any more.

        After a sticky CUDA error (illegal memory access, ECC error, a lost device) every later CUDA call fails,
        but only a call that reaches the device finds out: a tiny kernel and its result do.
        """
        if self.device.type != "cuda":
            return
        with torch.inference_mode():
            two = torch.ones(1, device=self.device).add_(1).item()  # .item() synchronises
        if two != 2:
            raise RuntimeError(f"{self.device} computed 1 + 1 = {two}")

    def describe(self) -> dict:
        # Read before compile_warmup, which a loading bucket enters first: each bucket is in one or the other.
        eager_batch_sizes = list(getattr(self._forward, "eager_sizes", []))
        return {
            "model_id": self.model_id,
            "input_size": list(self.input_size),
            "precision": self.precision,
            "device": str(self.device),
            "execution": self.execution,
            "channels_last": self.memory_format == torch.channels_last,
            "attention_precision": self.attention_precision,
            "contiguous_attention_masks": self.contiguous_attention_masks,
            "fused_window_attention_layers": self.fused_window_attention_layers,
            "window_attention_kernel": self.window_attention_kernel,
            "capturable_deform_conv": self.device.type == "cuda" and capturable_deform_conv_active("CUDA"),
            "deform_conv_kernel": deform_conv_implementation("CUDA") if self.device.type == "cuda" else "torchvision",
            "out_of_memory_splits": self.out_of_memory_splits,
            "device_passes": self.pass_timeline.summary(),
            "compile_options": self.compile_options,
            **{name: self.execution in COMPILED_EXECUTIONS and name in self.graph_rewrites
               for name in REWRITES},
            # A copy first: the compiled forward adds the buckets it loads after start-up from another thread.
            "compile_warmup": {str(size): warmup for size, warmup in dict(self.compile_warmup).items()},
            "eager_batch_sizes": eager_batch_sizes,  # buckets on the eager forward while their saved form loads
            "load_phases": self.load_phases,
            "device_name": device_name(self.device),
        }

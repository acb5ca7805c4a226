"""Model-only limit: forward passes of the model core on input already on the device, no codecs, no HTTP.

The model settings are the config's (`configs/prod.yaml` unless --config says otherwise): its model, execution
and batch buckets, each replaceable on the command line.

    python scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id /path/to/hub-layout-dir \
        --modes eager,compiled_graphs --out model.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from harness.gpu_monitor import GpuBusySampler
from harness.model_kernels import kernels_label, load_model, parse_kernels
from harness.photos import sample_photo_jpegs
from harness.run_record import run_record
from serve_app.imaging import decode_image, reduced_jpeg
from serve_app.model.core import BackgroundRemovalModel, split_masks
from serve_app.protocol import ReducedImage
from serve_app.serve_config import app_args, parse_overrides, read_config
from serve_app.settings import IngressSettings, ModelSettings, parse_app_args
from serve_app.versions import component_versions

T = TypeVar("T")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/prod.yaml"),
                        help="the Serve config whose args.model the measured settings start from")
    parser.add_argument("--model-id", help="Hub id, Hub-layout directory or import: path (default: the config's)")
    parser.add_argument("--input-size", type=int, help="square input side (default: the config's)")
    parser.add_argument("--batch-sizes", help="comma-separated; also the graph buckets (default: the config's)")
    parser.add_argument("--precisions", default="fp16")
    parser.add_argument("--modes", help="comma-separated executions, e.g. eager,compiled_graphs (default: the "
                                        "config's)")
    parser.add_argument("--compile-cache-dir", type=Path, help="packages of the compiled mode (default: settings)")
    parser.add_argument("--compile-options", type=json.loads,
                        help="inductor settings of the compiled mode as JSON (default: the config's), "
                             'e.g. \'{"coordinate_descent_tuning": true}\'')
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other model setting (serve_app/settings.py ModelSettings), value as YAML, "
                             "e.g. --set attention_precision=fp32; repeatable")
    parser.add_argument("--layouts", default="contiguous", help="comma-separated: contiguous, channels_last")
    parser.add_argument("--kernels", default="none",
                        help="comma-separated kernel candidates in the model (scripts/harness/model_kernels.py), each "
                             "none or a +-joined set of deform, attention, linear, e.g. none,deform,deform+linear")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iterations", type=int, default=100,
                        help="timed batches per setting (100 of 8 at 100 images/s: 8 s, past a clock's first boost)")
    parser.add_argument("--inputs", default="photos",
                        help="comma-separated, what the timed batches hold: noise (Gaussian), photos (the "
                             "benchmark photos bench_service.py sends, resized and normalised by the model core as "
                             "in the service); the work can follow the content (BiRefNet's deformable "
                             "convolutions sample where their offsets point)")
    parser.add_argument("--photo-dir", type=Path,
                        help="for --inputs photos: folder of the original photos (default: scikit-image's)")
    parser.add_argument("--predict-image-size", default="", metavar="WxH",
                        help="also time predict() on uint8 host images of this size (upload, resize, forward, "
                             "resize back, download), e.g. 3000x2000")
    parser.add_argument("--serving-path", action="store_true",
                        help="with --inputs photos, also time the model deployment's whole device path: decoded "
                             "photos in host memory to masks in host memory (upload, resize, forward, resize back, "
                             "download), each batch submitted before the previous one's masks are read, on the "
                             "thread the deployment uses; against the forward alone, what the service's batches "
                             "cost beyond it without Ray or HTTP")
    parser.add_argument("--lone-trace", type=Path, metavar="FILE",
                        help="with --serving-path, also write a profiler trace (Chrome JSON) of three lone requests "
                             "at batch 1: pass and masks, as the deployment runs an image that finds the device "
                             "idle")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the largest batch size of each variant: the top kernels by device time "
                             "go into the record and to stdout (where the time goes, for the next optimisation)")
    parser.add_argument("--in-ray-task", type=Path, metavar="CONFIG",
                        help="measure inside a local Ray task with the actor options of CONFIG's model deployment, "
                             "the kind of process a replica and `python -m serve_app.prebuild` are: inductor's "
                             "cache keys depend on the process, so only then does the compiled mode find the "
                             "prebuild's cache instead of compiling for minutes per bucket")
    parser.add_argument("--out", type=Path)
    return config_defaults(parser.parse_args())


def config_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with what the command line left out taken from the config's model settings."""
    config = args.in_ray_task or args.config
    model = parse_app_args(app_args(read_config(config))).default
    args.base_settings = model.model_dump(mode="json")
    args.model_id = args.model_id or model.model_id
    args.input_size = args.input_size or model.input_size[0]
    args.batch_sizes = args.batch_sizes or ",".join(str(size) for size in model.graph_batch_sizes)
    args.modes = args.modes or model.execution
    args.compile_options = model.compile_options if args.compile_options is None else args.compile_options
    return args


def decoded_photos(jpegs: list[bytes], input_size: int) -> list[np.ndarray | ReducedImage]:
    """The benchmark photos bench_service.py sends, as the ingress hands them to the model deployment: a large
    JPEG's reduced copy, any other photo decoded whole."""
    limit = IngressSettings().max_image_pixels
    return [reduced_jpeg(jpeg, min_size=(input_size, input_size), max_pixels=limit)
            or decode_image(jpeg, max_pixels=limit).model_input for jpeg in jpegs]


def input_batch(model: BackgroundRemovalModel, batch_size: int,
                photos: list[np.ndarray] | None = None) -> torch.Tensor:
    """A model-ready input on the device (the model's dtype, size and memory format): noise, or the first
    `batch_size` of the decoded `photos` through the model core's own resize and normalisation."""
    if photos is None:
        width, height = model.input_size
        batch = torch.randn(batch_size, 3, height, width, device=model.device).to(model.dtype)
    else:
        with torch.inference_mode():
            batch = model.preprocess(photos[:batch_size])
    return batch.contiguous(memory_format=model.memory_format)


def profile_forward(model: BackgroundRemovalModel, batch_size: int, photos: list[np.ndarray] | None = None,
                    iterations: int = 3, top: int = 40) -> tuple[list[dict], dict[str, dict]]:
    """The kernels and ops that take the most device time over a few forward passes, as a table, and the device
    time of every kernel by kind (kernel_kind)."""
    batch = input_batch(model, batch_size, photos)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if model.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.inference_mode():
        model.forward(batch)
        with torch.profiler.profile(activities=activities) as profiler:
            for _ in range(iterations):
                model.forward(batch)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
    events = profiler.key_averages()
    # Device time on a GPU; on a CPU, where ops run synchronously, their own CPU time.
    field = "self_device_time_total" if model.device.type == "cuda" else "self_cpu_time_total"
    total_us = sum(getattr(event, field) for event in events) or 1.0
    rows = sorted(events, key=lambda event: getattr(event, field), reverse=True)[:top]
    return [{"name": event.key[:120], "calls_per_forward": event.count / iterations,
             "self_ms_per_forward": round(getattr(event, field) / 1000 / iterations, 2),
             "share": round(getattr(event, field) / total_us, 4)} for event in rows], \
        kernel_time_by_kind(events, field, iterations)


# Kinds of device kernel by name, first match wins (inductor names its kernels after the ops it fused, so a fused
# kernel counts as the first kind its name mentions in this order).
KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("convolution", ("fprop", "conv", "winograd", "implicit_gemm")),
    ("matmul", ("gemm", "nvjet", "cutlass", "gemv", "mm_")),
    ("deformable sampling", ("deformable", "grid_sampler", "grid_sample")),
    ("upsample", ("upsample", "interpolate")),
    ("normalisation", ("norm",)),
    ("copy and layout", ("copy", "clone", "cat_", "permute", "transpose", "contiguous", "memcpy", "memset")),
    ("other fused (Triton)", ("triton_",)),
)


def kernel_kind(name: str) -> str:
    """The kind of device kernel `name` is (KERNEL_KINDS), or "other"."""
    lowered = name.lower()
    return next((kind for kind, marks in KERNEL_KINDS if any(mark in lowered for mark in marks)), "other")


def kernel_time_by_kind(events, field: str, iterations: int) -> dict[str, dict]:
    """Device milliseconds per forward and kernel launches per forward of each kernel kind (device events only)."""
    kinds: dict[str, dict] = {}
    for event in events:
        if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA or not getattr(event, field):
            continue
        entry = kinds.setdefault(kernel_kind(event.key), {"ms_per_forward": 0.0, "kernels_per_forward": 0.0})
        entry["ms_per_forward"] += getattr(event, field) / 1000 / iterations
        entry["kernels_per_forward"] += event.count / iterations
    return {kind: {key: round(value, 2) for key, value in entry.items()}
            for kind, entry in sorted(kinds.items(), key=lambda item: -item[1]["ms_per_forward"])}


def time_forward(model: BackgroundRemovalModel, batch_size: int, iterations: int,
                 photos: list[np.ndarray] | None = None) -> dict:
    batch = input_batch(model, batch_size, photos)
    synchronize = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    with torch.inference_mode():
        for _ in range(2):  # warm-up (cudnn autotuning, allocator)
            model.forward(batch).sigmoid()
        synchronize()
        with GpuBusySampler() as sampler:  # the clock it ran at, to compare with the service's under load
            started = time.perf_counter()
            for _ in range(iterations):
                model.forward(batch).sigmoid()
            synchronize()
            # here, not after the block: leaving it waits for the sampler's nvidia-smi call in flight
            ms_per_batch = (time.perf_counter() - started) * 1000 / iterations
    peak = torch.cuda.max_memory_allocated(model.device) / 1e9 if model.device.type == "cuda" else None
    return {"batch_size": batch_size, "ms_per_batch": round(ms_per_batch, 1),
            "images_per_s": round(batch_size * 1000 / ms_per_batch, 2),
            "peak_gpu_memory_gb": round(peak, 2) if peak is not None else None,
            **(sampler.summary() if model.device.type == "cuda" else {})}


def on_forward_thread(model: BackgroundRemovalModel, run: Callable[[], T]) -> T:
    """`run()` on the thread the model deployment runs its device work on: the compiled forward's own where it has one
    (a caller elsewhere would pay a thread hop per forward), else this one."""
    executor = model.forward_executor
    return executor.submit(run).result() if executor is not None else run()


def time_serving_path(model: BackgroundRemovalModel, batch_size: int, iterations: int,
                      photos: list[np.ndarray]) -> dict:
    """Batches of decoded photos through submit() and result() as the model deployment runs them under load:
    the next batch submitted (uploaded, resized, its forward queued) before the current one's masks are read, all
    on one thread: the compiled forward's own where it has one, as in the deployment."""
    # alternating between two batches (at least 2 x batch_size photos), as consecutive batches differ
    batches = [photos[:batch_size], photos[batch_size : 2 * batch_size]]

    def run() -> float:
        for batch in batches:  # warm-up
            model.predict(batch)
        model.pass_timeline.clear()
        started = time.perf_counter()
        pending = model.submit(batches[0])
        for index in range(1, iterations):
            following = model.submit(batches[index % 2])
            pending.result()
            pending = following
        pending.result()
        return time.perf_counter() - started

    with GpuBusySampler() as sampler:
        seconds = on_forward_thread(model, run)
    ms_per_batch = seconds * 1000 / iterations
    return {"serving_path_ms_per_batch": round(ms_per_batch, 1),
            "serving_path_images_per_s": round(batch_size * 1000 / ms_per_batch, 2),
            # each forward's device time and the stalls before them: to set beside the service's /v1/info
            **({f"serving_path_{key}": value for key, value in sampler.summary().items()}
               | {"serving_path_device_passes": model.pass_timeline.summary()}
               if model.device.type == "cuda" else {})}


def time_lone_requests(model: BackgroundRemovalModel, jpegs: list[bytes], iterations: int,
                       trace: Path | None = None) -> dict:
    """One decoded photo at a time, as the model deployment runs a request that finds the device idle: a pass of
    its own and its mask read, on the deployment's thread. Set beside the batch-1 forward, this is what the device
    side adds to a lone request's latency, without Ray or HTTP."""
    limit = IngressSettings().max_image_pixels
    images = [decode_image(jpeg, max_pixels=limit).model_input for jpeg in jpegs]

    def one(image: np.ndarray) -> float:
        began = time.perf_counter()
        model.submit([image]).result()
        return time.perf_counter() - began

    def run() -> list[float]:
        for image in images[:2]:  # warm-up
            one(image)
        model.pass_timeline.clear()
        times = [one(images[index % len(images)]) for index in range(max(iterations, len(images)))]
        if trace is not None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if model.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as profiler:
                for image in images[:3]:
                    one(image)
            trace.parent.mkdir(parents=True, exist_ok=True)
            profiler.export_chrome_trace(str(trace))
        return times

    pass_ms = [seconds * 1000 for seconds in on_forward_thread(model, run)]
    return {"lone_requests": len(pass_ms), "lone_pass_ms_mean": round(float(np.mean(pass_ms)), 2),
            "lone_pass_ms_p50": round(float(np.median(pass_ms)), 2),
            "lone_mean_megapixels": round(float(np.mean([i.shape[0] * i.shape[1] for i in images])) / 1e6, 2),
            **({"lone_device_passes": model.pass_timeline.summary()} if model.device.type == "cuda" else {})}


def time_predict(model: BackgroundRemovalModel, batch_size: int, image_size: str, iterations: int) -> dict:
    """predict() from host numpy images to host masks: what the serving path pays per batch on the device side."""
    width, height = (int(v) for v in image_size.split("x"))
    images = [np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8) for i in range(batch_size)]
    for _ in range(2):
        model.predict(images)
    started = time.perf_counter()
    for _ in range(iterations):
        model.predict(images)
    ms_per_batch = (time.perf_counter() - started) * 1000 / iterations
    return {"predict_image_size": image_size, "predict_ms_per_batch": round(ms_per_batch, 1),
            "predict_images_per_s": round(batch_size * 1000 / ms_per_batch, 2),
            "predict_max_abs_mask_diff_vs_one_stream": one_stream_difference(model, images)}


def one_stream_difference(model: BackgroundRemovalModel, images: list[np.ndarray]) -> int:
    """Largest mask difference between predict() (copies on their own streams, batches queued back to back) and
    the same steps run one after the other on one stream: a missing stream dependency shows up here."""
    pending = [model.submit(images) for _ in range(3)]  # overlapping batches, as the service runs them
    sizes = [image.shape[:2] for image in images]
    with torch.inference_mode():
        reference = split_masks(model.postprocess(model.forward(model.preprocess(images)), sizes).cpu(), sizes)
    return max(int(np.abs(mask.astype(np.int16) - expected).max())
               for batch in pending for mask, expected in zip(batch.result(), reference, strict=True))


def reference_logits(model: BackgroundRemovalModel) -> torch.Tensor:
    """Logits for a fixed input, to compare execution modes of the same weights."""
    width, height = model.input_size
    generator = torch.Generator().manual_seed(1)
    batch = torch.randn(2, 3, height, width, generator=generator).to(model.device, model.dtype)
    with torch.inference_mode():
        return model.forward(batch.contiguous(memory_format=model.memory_format)).float().cpu()


def main() -> None:
    args = parse_args()
    record: dict = run_record()
    record = measure_in_ray_task(args, record) if args.in_ray_task else measure(args, record)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


def measure_in_ray_task(args: argparse.Namespace, record: dict) -> dict:
    """measure() in a task placed and sized as a replica of the config's model deployment (its rows print there)."""
    import ray

    from serve_app.serve_config import derive_config, remover_actor_options

    options = remover_actor_options(derive_config(args.in_ray_task))
    # The task's process need not share this one's working directory.
    args = argparse.Namespace(**{key: value.resolve() if isinstance(value, Path) else value
                                 for key, value in vars(args).items()})
    ray.init(logging_level=logging.WARNING)
    print(f"measuring in a Ray task with {options}", flush=True)
    try:
        task = ray.remote(_measure_from_file).options(**options)
        return ray.get(task.remote(str(Path(__file__).resolve()), args, record))
    finally:
        ray.shutdown()


def _measure_from_file(script: str, args: argparse.Namespace, record: dict) -> dict:
    """measure() of this script loaded in the task's process (this module, run as __main__, holds objects Ray
    cannot pickle, such as torch.backends.cudnn)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_model_in_task", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure(args, record)


def measure(args: argparse.Namespace, record: dict) -> dict:
    """`record` with every variant's rows, printed as they come."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # compile/load progress
    torch.backends.cudnn.benchmark = True
    record = {**record, "versions": component_versions(), "results": []}
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    inputs = args.inputs.split(",")
    if not set(inputs) <= {"noise", "photos"}:
        raise SystemExit(f"--inputs takes noise and/or photos, got {args.inputs!r}")
    if args.serving_path and "photos" not in inputs:
        raise SystemExit("--serving-path times the benchmark photos: add photos to --inputs")
    # Decoded once for every variant; twice the largest batch: the serving path alternates two different batches.
    jpegs = sample_photo_jpegs(2 * max(batch_sizes), photo_dir=args.photo_dir) if "photos" in inputs else None
    photos = decoded_photos(jpegs, args.input_size) if jpegs is not None else None
    kernel_sets = [parse_kernels(text) for text in args.kernels.split(",")]
    for precision in args.precisions.split(","):
        eager_logits = None
        for mode, layout, kernels in itertools.product(args.modes.split(","), args.layouts.split(","), kernel_sets):
            torch.manual_seed(0)  # the same random weights for every variant
            settings = ModelSettings.model_validate({
                **args.base_settings, "model_id": args.model_id, "input_size": args.input_size,
                "precision": precision, "device": args.device, "execution": mode,
                "graph_batch_sizes": batch_sizes, "channels_last": layout == "channels_last",
                "compile_options": args.compile_options,
                **({"compile_cache_dir": args.compile_cache_dir} if args.compile_cache_dir else {}),
                **parse_overrides(args.set)})
            started = time.perf_counter()
            model = load_model(settings, kernels)
            load_s = round(time.perf_counter() - started, 1)
            model.wait_for_buckets()  # every bucket measured as it serves, none padded up to a larger one
            description = model.describe()
            variant = {"precision": precision, "mode": mode, "layout": layout, "kernels": kernels_label(kernels),
                       "load_s": load_s,
                       "all_buckets_s": round(time.perf_counter() - started, 1),
                       # what ran (a failing mode runs eager); per bucket: seconds to get ready, from cache?
                       "execution": model.execution,
                       # process-wide once a graph mode ran: later eager rows use it too (model/deform_conv.py)
                       "capturable_deform_conv": description["capturable_deform_conv"],
                       # which: torchvision's own, the service's capturable form, or a candidate (--kernels)
                       "deform_conv_kernel": description["deform_conv_kernel"],
                       "compile_warmup": description["compile_warmup"],
                       # the attention settings (--set): BiRefNet as published has neither of this project's fixes
                       "contiguous_attention_masks": description["contiguous_attention_masks"],
                       "attention_precision": description["attention_precision"],
                       "fused_window_attention_layers": description["fused_window_attention_layers"],
                       "window_attention_kernel": description["window_attention_kernel"],
                       **({"compile_options": args.compile_options} if mode.startswith("compiled") else {})}
            record["device"] = description["device_name"]
            logits = reference_logits(model)
            if eager_logits is None:
                eager_logits = logits
            variant["max_abs_logit_diff_vs_first"] = round(float((logits - eager_logits).abs().max()), 5)
            for batch_size, kind in itertools.product(batch_sizes, inputs):
                try:
                    row = {**variant, "input": kind,
                           **time_forward(model, batch_size, args.iterations, photos if kind == "photos" else None)}
                    if args.serving_path and kind == "photos":
                        row |= time_serving_path(model, batch_size, args.iterations, photos)
                        if batch_size == 1:
                            trace = args.lone_trace
                            if trace is not None and len(args.modes.split(",")) > 1:
                                trace = trace.with_name(f"{trace.stem}_{mode}{trace.suffix}")
                            if trace is not None and len(kernel_sets) > 1:
                                trace = trace.with_name(f"{trace.stem}_{kernels_label(kernels)}{trace.suffix}")
                            row |= time_lone_requests(model, jpegs, args.iterations, trace)
                    if args.predict_image_size:
                        row |= time_predict(model, batch_size, args.predict_image_size, args.iterations)
                except torch.cuda.OutOfMemoryError:
                    row = {**variant, "input": kind, "batch_size": batch_size, "error": "out of memory"}
                    torch.cuda.empty_cache()
                print(json.dumps(row), flush=True)
                record["results"].append(row)
            if args.profile:
                table, by_kind = profile_forward(model, batch_sizes[-1],
                                                 photos if inputs[-1] == "photos" else None)
                record.setdefault("profiles", []).append({**variant, "batch_size": batch_sizes[-1],
                                                          "device_ms_by_kind": by_kind, "top_kernels": table})
                print(json.dumps({"device_ms_by_kind": by_kind}), flush=True)
                for kernel in table:
                    print(f"  {kernel['share']:7.2%} {kernel['self_ms_per_forward']:8.2f} ms "
                          f"x{kernel['calls_per_forward']:g}  {kernel['name']}", flush=True)
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return record


if __name__ == "__main__":
    main()

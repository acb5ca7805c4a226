"""Bulk offline mode: the same job as client mode with no HTTP service, as a Ray Data pipeline.

read + decode the model's copy (CPU tasks) -> model core (one actor per GPU, or CPU actors) -> read + decode whole,
composite, encode, write (CPU tasks). It runs unchanged on a multi-node cluster when INPUT and OUTPUT are shared paths
(s3://, gs://, NFS).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import cast

import numpy as np
import ray

from serve_app import imaging, local_ray
from serve_app.bulk.layout import (
    Layout,
    WorkItem,
    job_options,
    output_unusable,
    read_bytes,
    stopped_by_output,
    write_atomically,
)
from serve_app.bulk.ledger import Ledger
from serve_app.errors import ApiError
from serve_app.options import OutputOptions
from serve_app.protocol import ReducedImage
from serve_app.settings import IngressSettings, ModelSettings

CODEC_TASK_CPUS = 0.5
ACTOR_CPUS = 1  # per model actor, beside its GPU
# How long the pipeline waits for its model actors to load before it gives up (a first run on a GPU kind compiles
# the model's bucket: minutes).
MODEL_ACTOR_START_TIMEOUT_S = 3600
OUTPUT_UNUSABLE = "output_unusable"  # a row's code where OUTPUT is full or read-only: the run stops there
_PLACEHOLDER = np.zeros((1, 1, 3), dtype=np.uint8)  # carried by rows that failed, so every row has an image


def connect(address: str | None) -> None:
    """Join the given cluster; else an existing one (`auto`); else start Ray on this machine."""
    if ray.is_initialized():
        return
    if address:
        local_ray.init(address=address)  # "local" starts one here
        return
    try:
        ray.init(address="auto")
    except ConnectionError:
        local_ray.init()


def decode_row(row: dict, *, max_pixels: int, model_input_size: tuple[int, int] | None = None) -> dict:
    """CPU task: read the file and decode what the model gets, as the ingress would send it (EXIF, modes, limits;
    a large JPEG's reduced copy, imaging.reduced_jpeg; a transparent image over white), so that both give the same
    masks. The row carries that copy and the mask's size only: the cut-out is made from the file again after the
    model (encode_write_row), so whole photos never pass through the model actor and back out of it."""
    failure = {"code": "", "reason": ""}
    # Ray Data columns need an array in every row: failed images carry a 1x1 stand-in.
    model_image, height, width, reduced = _PLACEHOLDER, 1, 1, False
    try:
        data = read_bytes(row["source"])
        copy = None
        if model_input_size is not None:
            copy = imaging.reduced_jpeg(data, min_size=model_input_size, max_pixels=max_pixels)
        if copy is not None:
            model_image, (height, width), reduced = copy.pixels, copy.size, True
        else:
            decoded = imaging.decode_image(data, max_pixels=max_pixels)
            model_image, (width, height) = decoded.model_input, decoded.size
    except ApiError as error:
        failure = {"code": error.code, "reason": error.message}
    except OSError as error:
        failure = {"code": "io_error", "reason": f"{type(error).__name__}: {error}"}
    return {**row, **failure, "model_image": model_image, "height": height, "width": width, "reduced": reduced}


def model_view(batch: dict[str, np.ndarray], i: int) -> np.ndarray | ReducedImage:
    """What the model gets for row `i`: the photo (over white where transparent), or its reduced copy."""
    if batch["reduced"][i]:
        return ReducedImage(batch["model_image"][i], (int(batch["height"][i]), int(batch["width"][i])))
    return batch["model_image"][i]


# Batches each model actor works on at once: one on the device and three queued behind it, so that the GPU never
# waits while Ray Data hands a batch in, takes masks out or schedules the next call (each call is one batch).
BATCHES_PER_ACTOR = 4
# What leaves the model actor: the row's identity, its outcome so far and its mask (never the pixels).
MODEL_OUTPUT_COLUMNS = ("source", "relative", "target", "code", "reason")


class SegmentBatch:
    """Actor holding the model core: masks for the rows that decoded."""

    def __init__(self, model_settings: dict):
        from serve_app.model.core import BackgroundRemovalModel

        self.model = BackgroundRemovalModel.from_settings(ModelSettings.model_validate(model_settings))
        self._node_id = ray.get_runtime_context().get_node_id()
        # Ray calls this actor from BATCHES_PER_ACTOR threads. Queuing work on the device is serialised (CUDA
        # graphs reuse fixed input buffers); waiting for the masks is not, which is what overlaps the batches.
        self._submit_lock = threading.Lock()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["source"])
        usable = [i for i in range(count) if not batch["code"][i]]
        images = [model_view(batch, i) for i in usable]
        with self._submit_lock:
            pending = self.model.submit(images)
        masks = pending.result()
        column = np.empty(count, dtype=object)
        for i in range(count):
            column[i] = np.zeros((1, 1), np.uint8)
        codes, reasons = batch["code"].copy(), batch["reason"].copy()
        for i, mask in zip(usable, masks, strict=True):
            if isinstance(mask, BaseException):  # out of device memory even in a pass of its own: it alone fails
                codes[i], reasons[i] = "out_of_memory", f"the GPU ran out of memory on this image even alone: {mask}"
            else:
                column[i] = mask
        # The forward pass's size, on its first row (0 on the others): the run's batch-size histogram counts them.
        batch_images = np.zeros(count, dtype=np.int64)
        if usable:
            batch_images[usable[0]] = len(usable)
        return {**{name: batch[name] for name in MODEL_OUTPUT_COLUMNS}, "code": codes, "reason": reasons,
                "mask": column, "batch_images": batch_images,
                "model_node": np.full(count, self._node_id, dtype=object)}


def encode_write_row(row: dict, *, options: OutputOptions, webp_quality: int, max_pixels: int) -> dict:
    """CPU task: decode the file whole, composite it with its mask, encode and write the output atomically;
    returns the row's outcome only."""
    outcome = {"relative": row["relative"], "code": row["code"], "reason": row["reason"],
               "batch_images": row.get("batch_images", 0), "model_node": row.get("model_node", "")}
    if row["code"]:
        return outcome
    try:
        decoded = imaging.decode_image(read_bytes(row["source"]), max_pixels=max_pixels)
        if decoded.pixels.shape[:2] != row["mask"].shape:  # the file changed since it was decoded for the model
            return outcome | {"code": "io_error", "reason": "the input changed while it was being processed"}
        encoded = imaging.render(decoded, row["mask"], cast(imaging.OutputFormat, options.format),
                                 only_mask=options.only_mask, bg_color=options.bg_color, webp_quality=webp_quality)
        write_atomically(row["target"], encoded, durable=True)
    except ApiError as error:  # the file changed since, into something that no longer decodes
        outcome |= {"code": error.code, "reason": error.message}
    except OSError as error:
        code = OUTPUT_UNUSABLE if output_unusable(error) else "io_error"
        outcome |= {"code": code, "reason": f"{type(error).__name__}: {error}"}
    return outcome


def _pipeline(pending: list[WorkItem], options: OutputOptions, model: ModelSettings, limits: IngressSettings, *,
              batch_size: int, gpus: int, actors: int) -> ray.data.Dataset:
    """decode -> blocks of one batch -> model actors -> encode and write, as a lazy dataset of row outcomes."""
    rows = [{"source": item.source, "relative": item.relative, "target": item.target} for item in pending]
    return (
        ray.data.from_items(rows)
        # Half a CPU per codec task: unlike the model stage's (1 CPU, or 1 GPU), so that Ray Data does not
        # fuse decoding into the model actors, and decode/encode run as many parallel tasks.
        .map(decode_row, fn_kwargs={"max_pixels": limits.max_image_pixels,  # type: ignore[arg-type]
                                    "model_input_size": tuple(model.input_size)}, num_cpus=CODEC_TASK_CPUS)
        # Blocks of exactly one batch. Ray Data hands the model stage whole blocks, at least batch_size rows per
        # call, and cuts each call's rows into batches: from_items' own blocks (15 rows for 3,000 photos) would
        # run as a batch of 8 and one of 7, padded to 8 on the device.
        .repartition(target_num_rows_per_block=batch_size, strict=True)
        .map_batches(SegmentBatch, fn_constructor_kwargs={"model_settings": model.model_dump(mode="json")},
                     batch_size=batch_size, batch_format="numpy", num_gpus=1 if gpus else 0, num_cpus=ACTOR_CPUS,
                     compute=ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=BATCHES_PER_ACTOR,
                                                        enable_true_multi_threading=True))
        .map(encode_write_row, fn_kwargs={"options": options,  # type: ignore[arg-type]
                                          "webp_quality": limits.webp_quality,
                                          "max_pixels": limits.max_image_pixels}, num_cpus=CODEC_TASK_CPUS)
    )


def run_offline(layout: Layout, options: OutputOptions, model: ModelSettings, *, address: str | None = None,
                batch_size: int = 8, cpu_actors: int = 1, limits: IngressSettings | None = None) -> dict:
    """Process every pending image under the layout's INPUT; the run's summary. Stopped by Ctrl-C
    (KeyboardInterrupt), the ledger is written first, marked interrupted."""
    pending, skipped = layout.plan()
    with layout.exclusive():
        layout.claim_output(job_options(options, model.model_id, revision=model.revision,
                                        input_size=list(model.input_size)))
        layout.record_shared_names()
        removed = layout.remove_stale_temporaries()
        ledger = Ledger(layout, "offline", skipped=skipped)
        ledger.write(pending=len(pending))  # this run's, from its start: never an earlier run's left in place
        for note in layout.start_notes(removed):
            print(note, file=sys.stderr)
        try:
            if pending:
                _process(pending, ledger, options, model, limits or IngressSettings(), address=address,
                         batch_size=batch_size, cpu_actors=cpu_actors)
        except KeyboardInterrupt:
            ledger.interrupted = True
            raise
        finally:
            summary = ledger.write(pending=len(pending), last=True)
    return summary


def _process(pending: list[WorkItem], ledger: Ledger, options: OutputOptions, model: ModelSettings,
             limits: IngressSettings, *, address: str | None, batch_size: int, cpu_actors: int) -> None:
    """Run the pipeline over the pending images, recording each outcome in the ledger as it comes."""
    # Every batch but the last is full: one bucket of `batch_size` serves them all, and the model actor starts
    # sooner without compiling or loading the others.
    model = model.model_copy(update={"graph_batch_sizes": (batch_size,)})
    connect(address)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = gpus or cpu_actors
    # The model actors load (imports, weights, the compiled bucket) before any photo is decoded: decoding
    # alongside takes every CPU while they import and load, and delays the first output (docs/benchmarks).
    # Only when they all fit now: on a cluster where some GPUs are taken (a service), the run starts with the
    # actors that can be placed, as Ray Data does by default.
    free = ray.available_resources().get("GPU" if gpus else "CPU", 0)
    wait_s = MODEL_ACTOR_START_TIMEOUT_S if free >= actors * (1 if gpus else ACTOR_CPUS) else -1
    if wait_s > 0:  # seconds without output otherwise: imports, weights, the compiled bucket
        print(f"loading the model in {actors} actor(s) before decoding starts", file=sys.stderr)
    context = ray.data.DataContext.get_current()
    previous_wait_s, context.wait_for_min_actors_s = context.wait_for_min_actors_s, wait_s
    try:
        outcomes = _pipeline(pending, options, model, limits, batch_size=batch_size, gpus=gpus, actors=actors)
    finally:
        context.wait_for_min_actors_s = previous_wait_s  # the dataset keeps its own copy
    by_relative = {item.relative: item for item in pending}
    passes: Counter[int] = Counter()
    nodes: Counter[str] = Counter()
    try:
        for outcome in outcomes.iter_rows():
            if outcome["code"] == OUTPUT_UNUSABLE:  # full or read-only: the images not done stay pending
                raise stopped_by_output(outcome["reason"])
            item: WorkItem = by_relative[outcome["relative"]]
            passes[int(outcome["batch_images"])] += 1
            if outcome["code"]:
                ledger.failed(item, outcome["code"], outcome["reason"])
            else:
                ledger.succeeded(item)
                nodes[outcome["model_node"]] += 1
            if (ledger.done + len(ledger.failures)) % Ledger.FLUSH_EVERY == 0:
                ledger.write(pending=len(pending))
    finally:  # an interrupted run's summary counts the passes and nodes of the images it settled
        ledger.batch_size_histogram = {size: count for size, count in sorted(passes.items()) if size}
        ledger.images_by_model_node = dict(nodes)

#!/usr/bin/env python3
"""The model replica's batching under a closed-loop load, on the CPU: how full its passes are, with no GPU.

The replica's own code forms and runs the passes (`ModelSlot`: Ray Serve's `@serve.batch`, the wait it is given,
`DevicePasses`), in front of a simulated device: one pass at a time, in order, each taking the time of its padded
batch (`--pass-ms` for 2 to 8 images, the compiled batch-8 bucket; `--pass-1-ms` for one), within +-2%. Each client
sends a photo, waits for its mask and sends the next, spending a random 0.3x to 1.7x of `--ingress-ms` before each
call (the ingress's decode and transfer) and of `--encode-ms` after it (the cut-out's PNG). The figures are the
images a second and the passes by size in the measured window: with enough clients the device is the limit, and the
best is 8 images per `--pass-ms`.

    python scripts/sim_batching.py --clients 64 --seconds 15 --out sim.json

These are not GPU figures: they show whether passes fill when calls arrive the way the service's do, the question
the GPU runs could only answer with device time (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from ray.serve import batching as serve_batching

from harness.run_record import run_record
from serve_app.deployments.batching import DeviceClock
from serve_app.deployments.model_slots import ModelSlot
from serve_app.settings import BatchSettings, ModelSettings

MAX_BATCH_SIZE = 8  # configs/prod.yaml's, and the compiled bucket every pass of 2 to 8 is padded to


class SimulatedPass:
    """A pass queued on the simulated device: `result` waits until the device has run it."""

    def __init__(self, images: Sequence[Any]):
        self.images = list(images)
        self.done = threading.Event()

    def result(self) -> list[Any]:
        self.done.wait()
        return self.images


class SimulatedDevice:
    """The model as `ModelSlot` sees it: `submit` queues a pass and returns at once; one thread runs them in order."""

    forward_executor = None
    on_out_of_memory = None

    def __init__(self, pass_s: float, pass_1_s: float, seed: int):
        self.pass_s, self.pass_1_s = pass_s, pass_1_s
        self.busy_s = 0.0
        self._random = random.Random(seed)
        self._queue: list[SimulatedPass] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name="device").start()

    def submit(self, images: Sequence[Any]) -> SimulatedPass:
        queued = SimulatedPass(images)
        with self._ready:
            self._queue.append(queued)
            self._ready.notify()
        return queued

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                running = self._queue.pop(0)
            seconds = (self.pass_1_s if len(running.images) == 1 else self.pass_s) * self._random.uniform(0.98, 1.02)
            deadline = time.perf_counter() + seconds
            while (left := deadline - time.perf_counter()) > 0:
                time.sleep(min(left, 0.0005))
            self.busy_s += seconds
            running.done.set()


class Metrics:
    def batch(self, model: str, size: int) -> None: ...
    def split(self, model: str) -> None: ...


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time, after --warmup")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--pass-ms", type=float, default=80.0, help="a pass of 2 to 8 images (the batch-8 bucket)")
    parser.add_argument("--pass-1-ms", type=float, default=12.5, help="a pass of one image (the batch-1 bucket)")
    parser.add_argument("--ingress-ms", type=float, default=30.0, help="mean time before each call")
    parser.add_argument("--encode-ms", type=float, default=35.0, help="mean time after each call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the JSON record here")
    return parser.parse_args()


async def simulate(args: argparse.Namespace) -> dict:
    device = SimulatedDevice(args.pass_ms / 1000, args.pass_1_ms / 1000, args.seed)
    slot = ModelSlot(ModelSettings(model_id="/simulated"), device, DeviceClock(),  # type: ignore[arg-type]
                     BatchSettings(max_batch_size=MAX_BATCH_SIZE), Metrics(), {})
    started = time.perf_counter()
    measure_from, measure_to = started + args.warmup, started + args.warmup + args.seconds
    latencies: list[float] = []  # of the calls answered in the window
    window: dict[str, Any] = {}

    async def client(index: int) -> None:
        rng = random.Random(args.seed * 1000 + index)
        while time.perf_counter() < measure_to:
            await asyncio.sleep(rng.uniform(0.3, 1.7) * args.ingress_ms / 1000)
            sent = time.perf_counter()
            await slot.masks(index)
            if measure_from <= time.perf_counter() <= measure_to:
                latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(rng.uniform(0.3, 1.7) * args.encode_ms / 1000)

    async def snapshot(at: float, name: str) -> None:
        await asyncio.sleep(at - time.perf_counter())
        window[name] = (Counter(slot.batch_sizes), device.busy_s)

    await asyncio.gather(snapshot(measure_from, "start"), snapshot(measure_to, "end"),
                         *(client(index) for index in range(args.clients)))
    sizes, busy_end = window["end"]
    sizes.subtract(window["start"][0])
    latencies.sort()
    return {"clients": args.clients, "measured_s": args.seconds, "pass_ms": args.pass_ms,
            "pass_1_ms": args.pass_1_ms, "ingress_ms": args.ingress_ms, "encode_ms": args.encode_ms,
            "images_per_s": round(len(latencies) / args.seconds, 2),
            "best_images_per_s": round(MAX_BATCH_SIZE * 1000 / args.pass_ms, 2),
            "device_busy_fraction": round((busy_end - window["start"][1]) / args.seconds, 3),
            "latency_ms_p50": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
            "batch_size_histogram": {str(size): count for size, count in sorted(sizes.items()) if count > 0}}


@contextlib.contextmanager
def outside_a_replica() -> Iterator[None]:
    """Serve's batch queue with no replica around it: it asks its replica's config for max_ongoing_requests only to
    warn, and there is none here."""
    queue: Any = serve_batching._BatchQueue
    name = "_warn_if_max_batch_size_exceeds_max_ongoing_requests"
    original = getattr(queue, name)
    setattr(queue, name, lambda self: None)
    try:
        yield
    finally:
        setattr(queue, name, original)


def main() -> None:
    args = parse_args()
    with outside_a_replica():
        record = run_record(simulation=asyncio.run(simulate(args)))
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()

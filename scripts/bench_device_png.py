"""Time a large photo's cut-out PNG written on the GPU (serve_app/model/png_device.py) against the ingress's CPU
encoder, and check that Pillow reads it back to the pixels it was made of.

    python scripts/bench_device_png.py --out device_png.json
    python scripts/bench_device_png.py --size 6000x4000 --busy

The photo is one of the service benchmark's JPEGs (scripts/harness/photos.py), decoded on the device by nvJPEG as
the model replica decodes it; the alpha a disc with a soft edge over about half the photo. The wall time is the
calling thread's, which the model replica's PNG thread spends. With --busy, what the encoder takes from a device
kept busy on the default stream (as forward passes keep it): matrix products a second alone and beside a thread
that encodes without pause, the difference counted in milliseconds of products per photo. With --threads, the
photos a second that many threads write together (what more PNG threads in a replica, which has one, would
give), idle and beside the products.
"""

import argparse
import io
import json
import threading
import time

import numpy as np
import torch
from PIL import Image

from harness.photos import sample_photo_jpegs
from harness.run_record import run_record
from serve_app import png
from serve_app.model.jpeg_on_device import decode_on_device
from serve_app.model.png_device import encode_cutout_stream
from serve_app.protocol import EncodedJpeg


def soft_disc(height: int, width: int) -> np.ndarray:
    """(H, W) uint8: opaque inside a disc over about half the photo, a 64-pixel soft edge, transparent outside."""
    rows, cols = np.mgrid[0:height, 0:width]
    distance = np.hypot(rows - height / 2, cols - width / 2)
    return np.clip((min(height, width) * 0.45 - distance) * 4, 0, 255).astype(np.uint8)


def wall_ms(rgb: torch.Tensor, alpha: np.ndarray, repeats: int) -> float:
    """Median wall milliseconds of the calling thread over `repeats` calls, after one that compiles the kernels."""
    encode_cutout_stream(rgb, torch.from_numpy(alpha))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        encode_cutout_stream(rgb, torch.from_numpy(alpha))
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(times)), 3)


def products_per_s(seconds: float, stop: threading.Event | None = None) -> float:
    """fp16 8192x8192 matrix products a second on the default stream for `seconds`: the device kept busy."""
    left = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            left @ left
        torch.cuda.synchronize()
        done += 10
    if stop is not None:
        stop.set()
    return done / (time.perf_counter() - started)


def busy_cost(rgb: torch.Tensor, alpha: np.ndarray, seconds: float) -> dict:
    """What the encoder takes from a busy device: matrix products a second alone and beside a thread that encodes
    without pause; the products lost per photo encoded, as milliseconds of the products' device time."""
    alone = products_per_s(seconds)
    beside = photos_per_s(rgb, alpha, 1, seconds, busy=True)
    photos, products = beside["photos_per_s"], beside["products_per_s_beside"]
    lost_ms = round((1 - products / alone) * 1000 / photos, 3) if photos else None
    return {"products_per_s_alone": round(alone, 2), "products_per_s_beside": products,
            "photos_per_s_beside": photos, "device_ms_per_photo": lost_ms}


def photos_per_s(rgb: torch.Tensor, alpha: np.ndarray, threads: int, seconds: float, busy: bool) -> dict:
    """Photos a second that `threads` threads encode together, each without pause on a stream of its own, for
    `seconds`; with `busy`, beside matrix products on the default stream (their rate alongside, too)."""
    stop, done = threading.Event(), [0] * threads

    def encode_until_stopped(index: int) -> None:
        while not stop.is_set():
            encode_cutout_stream(rgb, torch.from_numpy(alpha))
            done[index] += 1
    workers = [threading.Thread(target=encode_until_stopped, args=(index,)) for index in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    products = products_per_s(seconds, stop) if busy else None
    if not busy:
        time.sleep(seconds)
        stop.set()
    for worker in workers:
        worker.join()
    result = {"threads": threads, "photos_per_s": round(sum(done) / (time.perf_counter() - started), 1)}
    if products is not None:
        result["products_per_s_beside"] = round(products, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the photo")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--busy", action="store_true", help="also measure what it takes from a busy device")
    parser.add_argument("--seconds", type=float, default=5.0, help="each half of --busy")
    parser.add_argument("--threads", default="", help="comma-separated thread counts: photos a second that many "
                        "threads encode together, on an idle device and beside a busy one")
    parser.add_argument("--out")
    args = parser.parse_args()
    width, height = (int(value) for value in args.size.split("x"))
    device = torch.device("cuda")
    jpeg = sample_photo_jpegs(1, size_range=((width, height), (width, height)))[0]
    rgb = decode_on_device(EncodedJpeg(jpeg, 1, (height, width)), device)  # nvJPEG's planes, as the replica has
    torch.cuda.synchronize()
    alpha = soft_disc(height, width)
    stream = encode_cutout_stream(rgb, torch.from_numpy(alpha))
    expected = np.dstack([rgb.cpu().numpy(), alpha])
    expected[alpha == 0] = 0
    decoded = np.asarray(Image.open(io.BytesIO(png.wrap_zlib_stream(stream.data, width, height))))
    if not np.array_equal(decoded, expected):
        raise SystemExit("the device's PNG does not decode to its pixels")
    rgbx = np.dstack([expected[..., :3], np.full((height, width), 255, np.uint8)])
    started = time.process_time()
    cpu_png = png.encode_png(rgbx, alpha=alpha, clear_transparent=True)
    cpu_ms = (time.process_time() - started) * 1000
    result = {"size": args.size, "device": torch.cuda.get_device_name(), "pixels_equal": True,
              "device_png_bytes": len(stream) + 57, "cpu_png_bytes": len(cpu_png),
              "cpu_png_one_core_ms": round(cpu_ms, 1), "wall_ms_idle_device": wall_ms(rgb, alpha, args.repeats)}
    if args.busy:
        result["busy"] = busy_cost(rgb, alpha, args.seconds)
    for threads in (int(count) for count in args.threads.split(",") if count):
        result.setdefault("by_threads", []).extend(
            {**photos_per_s(rgb, alpha, threads, args.seconds, busy), "busy_device": busy} for busy in (False, True))
    record = run_record(results=result)
    print(json.dumps(record))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()

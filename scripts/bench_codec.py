"""The host's ceiling for the ingress's CPU work: how many photos a second its cores decode and encode as PNG.

Each photo gets what an ingress replica does for a JPEG upload, with the same functions: the model's reduced copy
when the photo is large enough for one, the full decode for the cut-out, and the PNG of the cut-out. The mask is
opaque everywhere, as the random-weight model's masks are in effect (no transparent pixel to clear), which is the
costliest case for the PNG. No model, Ray or HTTP is involved: the figure is what the cores allow at best, to set
beside the service's own.

Several worker processes run at once, each with `--per-process` photos in flight on threads and a PNG pool of
`--png-threads` (an ingress replica: `codec_threads` and `png_threads`), for each count in `--processes`:

    python scripts/bench_codec.py --photo-dir DIR --photo-size 4000x3000 --processes 1,8,14,16
    python scripts/bench_codec.py --photo-dir DIR --photo-size 4000x3000 --processes 12 --per-process 4 --png-threads 16

`--cutout composed` makes the cut-out as the composing APIs do (rembg's `/api/remove`, remove.bg's
`/v1.0/removebg`, the native options that crop, place or add a background): compose.render_cutout with its
defaults, where the native plain cut-out is imaging.render. `--cutout jpg` makes a JPEG on white, as
`format=jpg` and remove.bg's `format=jpg` do (its `mean_png_bytes` are then the JPEG's).

`--stages file-scan` against `--stages file-decode`: the ingress's CPU work for a JPEG whose PNG the model replica
writes (device_png_min_pixels), against one it only decodes:

    python scripts/bench_codec.py --photo-size 4000x3000 --processes 1 --stages file-decode
    python scripts/bench_codec.py --photo-size 4000x3000 --processes 1 --stages file-scan
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from harness.photos import sample_photo_jpegs
from harness.run_record import run_record
from serve_app import compose, imaging

INPUT_SIZE = (1024, 1024)  # the model's input (width, height) in configs/prod.yaml: what the reduced copy covers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo-dir", type=Path, help="folder of scikit-image's sample photos (default: the "
                        "installed scikit-image's)")
    parser.add_argument("--photo-size", default="4000x3000", metavar="WxH", help="every photo this size")
    parser.add_argument("--photos", type=int, default=12, help="distinct photos, cycled")
    parser.add_argument("--processes", default="1,8,16", help="comma-separated worker process counts, one level each")
    parser.add_argument("--per-process", type=int, default=1, help="photos in flight per process (threads)")
    parser.add_argument("--png-threads", type=int, default=1, help="threads compressing one PNG's stripes")
    parser.add_argument("--stages", choices=("all", "no-reduced", "decode", "png", "file-decode", "file-scan"),
                        default="all",
                        help="no-reduced: without the model's reduced copy; decode: the decodes alone; png: the "
                        "PNG alone, of each photo decoded once beforehand; file-decode: a JPEG sent to the model "
                        "replica as the file, its header read and the photo decoded beside the call; file-scan: such "
                        "a JPEG whose PNG the replica writes, its header read and its scan checked")
    parser.add_argument("--cutout", choices=("native", "composed", "jpg"), default="native",
                        help="the cut-out as the native plain API makes it, as the composing APIs do, or a JPEG on "
                        "white")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per level before counting")
    parser.add_argument("--out", type=Path, help="write the record as JSON here")
    return parser.parse_args()


def photo_work(photos: list[bytes], stages: str, png_pool: ThreadPoolExecutor | None, png_threads: int,
               max_pixels: int, cutout: str = "native") -> Callable[[int], int]:
    """The CPU work for photo i as the ingress does it (`stages`: all of it or a part, see --stages); each call
    returns the bytes it produced (the PNG's, or 0)."""
    decoded = [imaging.decode_image(data, max_pixels=max_pixels) for data in photos] if stages == "png" else []

    def run(index: int) -> int:
        data = photos[index % len(photos)]
        if stages.startswith("file-"):
            encoded = imaging.device_decodable_jpeg(data, max_pixels=max_pixels)
            assert encoded is not None, "not a JPEG the model replica decodes"
            if stages == "file-scan":
                assert imaging.scan_jpeg(encoded.data).clean
            else:
                imaging.decode_image(encoded.data, max_pixels=max_pixels)
            return 0
        if stages in ("all", "decode"):
            imaging.reduced_jpeg(data, min_size=INPUT_SIZE, max_pixels=max_pixels)
        if stages == "png":
            image = decoded[index % len(photos)]
        else:
            image = imaging.decode_image(data, max_pixels=max_pixels)
        if stages == "decode":
            return 0
        mask = np.full(image.pixels.shape[:2], 255, np.uint8)
        # render may reuse the pixels' spare channel for the alpha: a decoded photo kept for the next round stays
        # as it was, since the alpha it writes is the same every time
        if cutout in ("composed", "jpg"):
            layout = compose.Layout(format="jpg") if cutout == "jpg" else compose.Layout()
            return len(compose.render_cutout(image, mask, layout, png_pool=png_pool, png_threads=png_threads).data)
        return len(imaging.render(image, mask, "png", png_pool=png_pool, png_threads=png_threads))

    return run


def worker(photos: list[bytes], max_pixels: int, stages: str, cutout: str, per_process: int, png_threads: int,
           start_at: float, count_from: float, stop_at: float, results: multiprocessing.Queue) -> None:
    """Cut out photos on `per_process` threads until `stop_at`; report those finished after `count_from`."""
    png_pool = ThreadPoolExecutor(png_threads, thread_name_prefix="png") if png_threads > 1 else None
    work = photo_work(photos, stages, png_pool, png_threads, max_pixels, cutout)
    counted, output_bytes = [0], [0]
    lock = threading.Lock()

    def loop(offset: int) -> None:
        index = offset
        while time.time() < stop_at:
            size = work(index)
            index += per_process
            if count_from <= time.time() <= stop_at:
                with lock:
                    counted[0] += 1
                    output_bytes[0] += size

    time.sleep(max(0.0, start_at - time.time()))
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(per_process)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, count_from - time.time()))
    cpu_from = time.process_time()  # all of this process's threads, over the counted window
    time.sleep(max(0.0, stop_at - time.time()))
    cpu_s = time.process_time() - cpu_from
    for thread in threads:
        thread.join()
    results.put((counted[0], output_bytes[0], cpu_s))


def run_level(photos: list[bytes], max_pixels: int, processes: int, args: argparse.Namespace) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0  # room for the workers to start before the clock runs
    count_from = start_at + args.warmup
    stop_at = count_from + args.duration
    worker_args = (photos, max_pixels, args.stages, args.cutout, args.per_process, args.png_threads, start_at,
                   count_from, stop_at, results)
    workers = [context.Process(target=worker, args=worker_args) for _ in range(processes)]
    for process in workers:
        process.start()
    reports = [results.get(timeout=stop_at - time.time() + 120) for _ in workers]
    for process in workers:
        process.join()
    done = sum(report[0] for report in reports)
    cpu_s = sum(report[2] for report in reports)
    return {"stages": args.stages, "cutout": args.cutout, "processes": processes, "per_process": args.per_process,
            "png_threads": args.png_threads, "images": done, "images_per_s": round(done / args.duration, 2),
            "cpu_ms_per_image": round(1000 * cpu_s / max(1, done), 1),
            "mean_png_bytes": round(sum(report[1] for report in reports) / max(1, done))}


def main() -> None:
    args = parse_args()
    width, _, height = args.photo_size.partition("x")
    size = (int(width), int(height))
    photos = sample_photo_jpegs(args.photos, photo_dir=args.photo_dir, size_range=(size, size))
    record: dict = run_record(photo_size=args.photo_size, mean_jpeg_bytes=round(sum(map(len, photos)) / len(photos)),
                              levels=[])
    for processes in (int(value) for value in args.processes.split(",")):
        level = run_level(photos, size[0] * size[1], processes, args)
        print(json.dumps(level), flush=True)
        record["levels"].append(level)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

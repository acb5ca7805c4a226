"""Why the service's encode stage (~9.6 ms at one client on an H200 host) is ~2.7 ms longer than the same encoder
timed alone (~6.9 ms, same photos, 8 threads): the ingress's own path, step by step, in one process.

Variants, each over the benchmark photos one at a time, interleaved:
  alone      encode_png(pixels, png_pool, alpha=mask) on the calling thread (the probe's way)
  via_codec  imaging.render run on a codec-pool thread, as the ingress's _in_pool does (one more hop)
  plasma     as via_codec, the mask fetched from Ray's object store (as the ingress gets it from the model replica)
  fresh      as via_codec, the photo freshly decoded just before (cold pages, as in a request)
"""
import asyncio, functools, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
import ray
from serve_app import imaging, png
from serve_app.bench.photos import sample_photo_jpegs

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 8
jpegs = sample_photo_jpegs(12, photo_dir=Path(".photos"))
codec, pool = ThreadPoolExecutor(4), ThreadPoolExecutor(threads)
ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
decoded = [imaging.decode_image(j, max_pixels=50_000_000) for j in jpegs]
masks = [np.full(d.pixels.shape[:2], 128, np.uint8) for d in decoded]
refs = [ray.put(m) for m in masks]

def render(image, mask):
    return imaging.render(image, mask, "png", png_pool=pool, png_threads=threads)

async def main():
    loop = asyncio.get_running_loop()
    times = {k: [] for k in ("alone", "via_codec", "plasma", "fresh")}
    for rnd in range(3):
        for i, (image, mask, ref, jpeg) in enumerate(zip(decoded, masks, refs, jpegs)):
            t = time.perf_counter(); png.encode_png(image.pixels, pool, alpha=mask, clear_transparent=True, threads=threads); times["alone"].append(time.perf_counter() - t)
            t = time.perf_counter(); await loop.run_in_executor(codec, render, image, mask); times["via_codec"].append(time.perf_counter() - t)
            fetched = ray.get(ref)
            t = time.perf_counter(); await loop.run_in_executor(codec, render, image, fetched); times["plasma"].append(time.perf_counter() - t)
            fresh = await loop.run_in_executor(codec, functools.partial(imaging.decode_image, jpeg, max_pixels=50_000_000))
            t = time.perf_counter(); await loop.run_in_executor(codec, render, fresh, mask); times["fresh"].append(time.perf_counter() - t)
    for k, v in times.items():
        print(f"{k:10s} mean {np.mean(v) * 1000:6.2f} ms  p50 {np.median(v) * 1000:6.2f} ms", flush=True)

asyncio.run(main())
ray.shutdown()

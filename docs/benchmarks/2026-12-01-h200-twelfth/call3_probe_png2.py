"""Throwaway probe: striped PNG encode per photo on this host: 1 MiB stripes vs as many equal stripes as threads
(or 2x), by GIL switch interval; one image at a time through a persistent pool, as the ingress runs it at one client."""
import json, math, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import simplejpeg
from serve_app.bench.photos import sample_photo_jpegs
from serve_app.png import encode_png

photos = [simplejpeg.decode_jpeg(j, colorspace="RGBX") for j in sample_photo_jpegs(24, photo_dir=__import__("pathlib").Path(sys.argv[1]))]
alphas = [np.full(p.shape[:2], 128, np.uint8) for p in photos]  # random-weight masks sit near 128
print("mean MP", np.mean([p.shape[0] * p.shape[1] for p in photos]) / 1e6, flush=True)

def run(pool, stripe_of, reps=3):
    for px, a in zip(photos[:3], alphas[:3]):
        encode_png(px, pool, alpha=a, stripe_bytes=stripe_of(px))
    times = []
    for rep in range(reps):
        for px, a in zip(photos, alphas):
            t = time.perf_counter()
            encode_png(px, pool, alpha=a, stripe_bytes=stripe_of(px))
            times.append((time.perf_counter() - t) * 1000)
    return round(float(np.mean(times)), 2), round(float(np.median(times)), 2)

print(json.dumps({"threads": 1, "stripe": "1MiB", "ms": run(None, lambda p: 1 << 20, 1)}), flush=True)
for interval in (0.005, 0.0005):
    sys.setswitchinterval(interval)
    for threads in (8, 12, 16):
        pool = ThreadPoolExecutor(threads)
        for name, parts in (("1MiB", None), ("equal x1", 1), ("equal x2", 2)):
            stripe_of = (lambda p: 1 << 20) if parts is None else (lambda p, n=threads * parts: math.ceil(p.nbytes / n))
            print(json.dumps({"switch_ms": interval * 1000, "threads": threads, "stripe": name, "ms": run(pool, stripe_of)}), flush=True)
        pool.shutdown()

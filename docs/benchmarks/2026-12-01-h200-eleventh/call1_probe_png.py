"""Throwaway probe: striped PNG encode time per photo on this host, by threads and stripe size (one image at a time,
a persistent pool, as the ingress runs it at one client)."""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import simplejpeg
from serve_app.bench.photos import sample_photo_jpegs
from serve_app.png import encode_png

count = int(sys.argv[1]) if len(sys.argv) > 1 else 24
photos = [simplejpeg.decode_jpeg(j, colorspace="RGBX") for j in sample_photo_jpegs(count, photo_dir=None if len(sys.argv) < 3 else __import__("pathlib").Path(sys.argv[2]))]
alphas = []
for px in photos:
    h, w = px.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    alphas.append((np.clip((0.8 - r) * 20, 0, 1) * 255).astype(np.uint8))
print("mean MP", np.mean([p.shape[0] * p.shape[1] for p in photos]) / 1e6)
for threads in (8, 12, 16):
    pool = ThreadPoolExecutor(threads)
    for stripe in (1 << 18, 1 << 19, 1 << 20):
        for px, a in zip(photos[:3], alphas[:3]):
            encode_png(px, pool, alpha=a, stripe_bytes=stripe)
        times, sizes = [], []
        for rep in range(3):
            for px, a in zip(photos, alphas):
                t = time.perf_counter()
                b = encode_png(px, pool, alpha=a, stripe_bytes=stripe)
                times.append((time.perf_counter() - t) * 1000)
                sizes.append(len(b))
        print(json.dumps({"threads": threads, "stripe_kib": stripe >> 10, "mean_ms": round(float(np.mean(times)), 2),
                          "p50_ms": round(float(np.median(times)), 2), "mean_mb": round(float(np.mean(sizes)) / 1e6, 3)}),
              flush=True)
    pool.shutdown()

"""PNG encode of the benchmark photos' cut-outs (alpha 128), one at a time through a persistent pool, as the ingress
renders them: the encoder before this session (stripes joined on their threads) against now (pieces), 1-16 threads.

.gpurun/png_before.py is `git show 8085b47:serve_app/png.py` (the encoder as the fourteenth session left it)."""
import importlib.util, sys, time, os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
from serve_app import imaging, png
from serve_app.bench.photos import sample_photo_jpegs
spec = importlib.util.spec_from_file_location("png_before", ".gpurun/png_before.py")
before = importlib.util.module_from_spec(spec); spec.loader.exec_module(before)
images = [imaging.decode_image(j, max_pixels=50_000_000) for j in sample_photo_jpegs(24, photo_dir=Path(".photos"))]
print("photos", len(images), "mean MP", round(np.mean([i.size[0] * i.size[1] for i in images]) / 1e6, 2), "cpus", os.cpu_count(), flush=True)
for threads in (1, 4, 8, 12, 16):
    pool = ThreadPoolExecutor(threads)
    res = {"before": [], "now": []}
    for rnd in range(2):
        for image in images:
            alpha = np.full(image.pixels.shape[:2], 128, np.uint8)
            for name, module in (("before", before), ("now", png)) if rnd == 0 else (("now", png), ("before", before)):
                t = time.perf_counter()
                out = module.encode_png(image.pixels, pool, alpha=alpha, clear_transparent=True, threads=threads)
                res[name].append((time.perf_counter() - t) * 1000)
    print(f"threads {threads:2d}: " + "  ".join(f"{k} mean {np.mean(v):6.2f} p50 {np.median(v):6.2f}" for k, v in res.items()), flush=True)
    pool.shutdown()

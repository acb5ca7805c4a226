"""Striped PNG encode of cut-outs, one thread: colours under alpha 0 kept vs cleared (encode_png clear_transparent)."""
import time
import numpy as np
import simplejpeg
from serve_app.bench.photos import sample_photo_jpegs
from serve_app.png import encode_png

photos = [simplejpeg.decode_jpeg(j, colorspace="RGBX") for j in sample_photo_jpegs(6)]
for name, edge in (("half transparent (ellipse)", 0.8), ("none transparent", None)):
    totals = {False: [0.0, 0], True: [0.0, 0]}
    for px in photos:
        h, w = px.shape[:2]
        if edge is None:
            alpha = np.full((h, w), 200, np.uint8)
        else:
            yy, xx = np.mgrid[:h, :w]
            r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
            alpha = (np.clip((edge - r) * 20, 0, 1) * 255).astype(np.uint8)
        for clear in (False, True):
            encode_png(px, None, alpha=alpha, clear_transparent=clear)
            t = time.perf_counter()
            for _ in range(3):
                data = encode_png(px, None, alpha=alpha, clear_transparent=clear)
            totals[clear][0] += (time.perf_counter() - t) / 3 * 1000
            totals[clear][1] += len(data)
    mp = np.mean([p.shape[0] * p.shape[1] for p in photos]) / 1e6
    for clear, (ms, size) in totals.items():
        print(f"{name}, {len(photos)} photos of {mp:.2f} MP mean, clear_transparent={clear}: "
              f"{ms / len(photos):.1f} ms, {size / len(photos) / 1e6:.2f} MB per photo")

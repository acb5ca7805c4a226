import io, time, numpy as np
from pathlib import Path
from PIL import Image
from serve_app.bench.photos import sample_photo_jpegs
from serve_app import imaging
jpegs = sample_photo_jpegs(3, photo_dir=Path('.photos'))
for j in jpegs:
    d = imaging.decode_image(j, max_pixels=50_000_000)
    h, w = d.pixels.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (((yy - h/2)**2/(h/3)**2 + (xx - w/2)**2/(w/3)**2) < 1).astype(np.uint8) * 255
    px = imaging.compose_result(d, mask, only_mask=False, bg_color=None, reuse_pixels=False)
    for method in (4, 2, 0):
        t = time.perf_counter(); b = io.BytesIO(); Image.fromarray(px).save(b, format="WEBP", quality=90, method=method); dt = (time.perf_counter()-t)*1000
        print(w, h, "method", method, f"{dt:.0f} ms", len(b.getvalue()))
    t = time.perf_counter(); b = io.BytesIO(); Image.fromarray(px).save(b, format="WEBP", lossless=True, quality=0, method=0); print("  lossless m0", f"{(time.perf_counter()-t)*1000:.0f} ms", len(b.getvalue()))
    from serve_app import png; t = time.perf_counter(); out = png.encode_png(px); print("  png 1 thread", f"{(time.perf_counter()-t)*1000:.0f} ms", len(out))

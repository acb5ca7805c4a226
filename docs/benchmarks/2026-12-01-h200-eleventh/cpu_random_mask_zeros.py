"""How much of a random-weight BiRefNet mask is exactly 0 (what clear_transparent acts on), eager fp32 on CPU."""
import time
import numpy as np
import simplejpeg
import torch
from serve_app.bench.photos import sample_photo_jpegs
from serve_app.model.core import BackgroundRemovalModel
import birefnet_random

torch.set_num_threads(2)
started = time.perf_counter()
model = BackgroundRemovalModel(birefnet_random.build(), input_size=(1024, 1024), device=torch.device("cpu"),
                               precision="fp32", model_id="import:birefnet_random:build")
print(f"built in {time.perf_counter() - started:.1f} s", flush=True)
for jpeg in sample_photo_jpegs(3):
    pixels = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    started = time.perf_counter()
    mask = model.predict([pixels])[0]
    print(f"{pixels.shape[1]}x{pixels.shape[0]}: {time.perf_counter() - started:.1f} s, alpha==0 {np.mean(mask == 0):.3f}, "
          f"alpha==255 {np.mean(mask == 255):.3f}, mean {mask.mean():.1f}, p5/p50/p95 {np.percentile(mask, [5, 50, 95])}",
          flush=True)

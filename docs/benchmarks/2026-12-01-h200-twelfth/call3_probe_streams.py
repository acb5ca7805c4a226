"""Throwaway probe: the model core's side-stream pipeline (resize/normalise on the upload stream, post-processing
on the download stream) against everything on one stream, eager fp16 BiRefNet (random weights), 24 photos:
(1) the same masks, batches submitted back to back and a device-decoded JPEG included; (2) GPU ms of the pre- and
post-processing of a batch of 8; (3) wall time of 3 batches of 8 pipelined, old order vs new."""
import json, time
from pathlib import Path
import numpy as np, simplejpeg, torch
from serve_app import imaging
from serve_app.bench.photos import sample_photo_jpegs
from serve_app.model.core import BackgroundRemovalModel, split_masks
from serve_app.settings import ModelSettings

jpegs = sample_photo_jpegs(24, photo_dir=Path(".photos"))
photos = [simplejpeg.decode_jpeg(j, colorspace="RGBX") for j in jpegs]
model = BackgroundRemovalModel.from_settings(ModelSettings(model_id="import:birefnet_random:build", precision="fp16"))
model.warm_up(8)

def one_stream(batch):
    with torch.inference_mode():
        sizes = [tuple(p.shape[:2]) for p in batch]
        flat = model.postprocess(model.forward(model.preprocess(batch)), sizes).cpu()
        return [m.copy() for m in split_masks(flat, sizes)]

reference = [m for i in (0, 8, 16) for m in one_stream(photos[i:i + 8])]
pending = [model.submit(photos[i:i + 8]) for i in (0, 8, 16)]  # back to back, as the device queue submits
piped = [m.copy() for p in pending for m in p.result()]
diffs = [int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(reference, piped)]
print(json.dumps({"same_masks_max_abs_diff": max(diffs), "shapes_equal": all(a.shape == b.shape for a, b in zip(reference, piped))}), flush=True)
encoded = imaging.device_decodable_jpeg(jpegs[0], max_pixels=50_000_000)
on_device = model.decode_jpeg(encoded)
a = model.predict([on_device])[0].copy()
b = one_stream([on_device.cpu().numpy()])[0]
print(json.dumps({"device_jpeg_max_abs_diff": int(np.abs(a.astype(int) - b.astype(int)).max())}), flush=True)

def gpu_ms(fn, reps=5):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(reps):
        torch.cuda.synchronize(); start.record(); fn(); end.record(); torch.cuda.synchronize(); out.append(start.elapsed_time(end))
    return round(float(np.median(out)), 2)

with torch.inference_mode():
    batch = photos[:8]
    sizes = [tuple(p.shape[:2]) for p in batch]
    uploaded = [model._upload(p) for p in batch]
    torch.cuda.synchronize()
    x = model._resize_and_normalise(uploaded)
    logits = model.forward(x)
    print(json.dumps({"mean_MP": round(float(np.mean([p.shape[0] * p.shape[1] for p in batch])) / 1e6, 2),
                      "resize_normalise_ms_b8": gpu_ms(lambda: model._resize_and_normalise(uploaded)),
                      "postprocess_ms_b8": gpu_ms(lambda: model.postprocess(logits, sizes)),
                      "forward_eager_ms_b8": gpu_ms(lambda: model.forward(x), 3)}), flush=True)

def wall(run, reps=3):
    out = []
    for _ in range(reps):
        torch.cuda.synchronize(); t = time.perf_counter(); run(); torch.cuda.synchronize(); out.append((time.perf_counter() - t) * 1000)
    return round(float(np.median(out)), 1)

def old_order():
    with torch.inference_mode():
        for i in (0, 8, 16):
            sizes = [tuple(p.shape[:2]) for p in photos[i:i + 8]]
            model.postprocess(model.forward(model.preprocess(photos[i:i + 8])), sizes)
def new_order():
    ps = [model.submit(photos[i:i + 8]) for i in (0, 8, 16)]
    [p.result() for p in ps]
print(json.dumps({"three_b8_one_stream_ms": wall(old_order), "three_b8_side_streams_ms": wall(new_order)}), flush=True)

"""Session 10 probe: JPEG decode on the GPU (nvJPEG via torchvision) against libjpeg-turbo on the CPU, scaled CPU
decode, and PNG encode thread scaling, on the benchmark photos. Prints one JSON line per measurement."""
import json, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np, simplejpeg, torch, torchvision
from torchvision.io import decode_jpeg, ImageReadMode
from serve_app.bench.photos import sample_photo_jpegs
from serve_app import png

photos = sample_photo_jpegs(int(sys.argv[1]) if len(sys.argv) > 1 else 24, photo_dir=Path(".photos"))
sizes = [simplejpeg.decode_jpeg_header(p)[:2] for p in photos]
print(json.dumps({"photos": len(photos), "mean_mp": round(float(np.mean([h * w for h, w in sizes])) / 1e6, 2),
                  "mean_kb": round(float(np.mean([len(p) for p in photos])) / 1e3, 1), "torchvision": torchvision.__version__}))

def timed(fn, repeat=3):
    best = []
    for _ in range(repeat):
        t = time.perf_counter(); out = fn(); best.append(time.perf_counter() - t)
    return min(best) * 1000, out

def report(name, ms_list, **extra):
    print(json.dumps({"what": name, "mean_ms": round(statistics.mean(ms_list), 2), "median_ms": round(statistics.median(ms_list), 2),
                      "max_ms": round(max(ms_list), 2), **extra}), flush=True)

cpu_full = [timed(lambda p=p: simplejpeg.decode_jpeg(p, colorspace="RGBX"))[0] for p in photos]
report("cpu simplejpeg RGBX full", cpu_full)
scaled = [timed(lambda p=p: simplejpeg.decode_jpeg(p, colorspace="RGBX", min_height=1024, min_width=1024)) for p in photos]
report("cpu simplejpeg RGBX min 1024", [s[0] for s in scaled], shapes=[list(s[1].shape[:2]) for s in scaled[:6]])
scaled2 = [timed(lambda p=p: simplejpeg.decode_jpeg(p, colorspace="RGBX", min_height=1024, min_width=1024, min_factor=2))[0] for p in photos]
report("cpu simplejpeg RGBX min 1024 factor>=2", scaled2)

dev = torch.device("cuda")
tensors = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in photos]
for t in tensors[:4]:
    decode_jpeg(t, mode=ImageReadMode.RGB, device=dev)
torch.cuda.synchronize()
def gpu_one(t):
    out = decode_jpeg(t, mode=ImageReadMode.RGB, device=dev); torch.cuda.synchronize(); return out
gpu_single = [timed(lambda t=t: gpu_one(t)) for t in tensors]
report("gpu nvjpeg single (host bytes -> device CHW, synced)", [g[0] for g in gpu_single])
diffs = []
for p, (_, g) in zip(photos, gpu_single):
    ref = simplejpeg.decode_jpeg(p, colorspace="RGB").astype(np.int16)
    got = g.permute(1, 2, 0).cpu().numpy().astype(np.int16)
    d = np.abs(ref - got)
    diffs.append((float(d.mean()), int(d.max()), float((d > 2).mean())))
print(json.dumps({"what": "nvjpeg vs libjpeg-turbo pixels", "worst_mean_abs": round(max(d[0] for d in diffs), 4),
                  "worst_max_abs": max(d[1] for d in diffs), "worst_frac_gt2": round(max(d[2] for d in diffs), 5)}))
for b in (4, 8):
    batches = [tensors[i:i + b] for i in range(0, len(tensors) - b + 1, b)]
    def gpu_batch(bt):
        out = decode_jpeg(bt, mode=ImageReadMode.RGB, device=dev); torch.cuda.synchronize(); return out
    ms = [timed(lambda bt=bt: gpu_batch(bt))[0] / b for bt in batches]
    report(f"gpu nvjpeg batch of {b}, per image", ms)
# GPU decode concurrent with a busy GPU: time single decodes while a matmul loop runs on another stream
a = torch.randn(8192, 8192, device=dev, dtype=torch.float16)
side = torch.cuda.Stream()
def busy(n=40):
    with torch.cuda.stream(side):
        for _ in range(n):
            a @ a
busy(); torch.cuda.synchronize()
ms = []
for t in tensors[:12]:
    busy(); t0 = time.perf_counter(); gpu_one(t); ms.append((time.perf_counter() - t0) * 1000)
torch.cuda.synchronize()
report("gpu nvjpeg single while a matmul stream runs", ms)

for threads in (1, 4, 8, 12, 16):
    pool = ThreadPoolExecutor(threads)
    ms = []
    for p in photos:
        rgbx = simplejpeg.decode_jpeg(p, colorspace="RGBX")
        alpha = np.full(rgbx.shape[:2], 200, np.uint8); alpha[::7] = 0
        ms.append(timed(lambda: png.encode_png(rgbx, pool if threads > 1 else None, alpha=alpha))[0])
    report(f"png encode with alpha, {threads} threads", ms)
    pool.shutdown()

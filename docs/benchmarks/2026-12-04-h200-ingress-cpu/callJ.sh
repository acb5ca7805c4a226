# Probe (fresh machine, no Ray): nvJPEG through torchvision on 12 MP JPEGs: device time and host CPU per image,
# one at a time and in batches of 8, beside Pillow's CPU decode of the same files.
mkdir -p /tmp/j; export PYTHONPATH=$PWD:$PWD/scripts
python3 - <<'PY' 2>&1 | tee /tmp/j/nvjpeg_12mp.txt
import io, time, pathlib, json
import torch, torchvision
from torchvision.io import decode_jpeg
from PIL import Image
from harness.photos import sample_photo_jpegs
jpegs = sample_photo_jpegs(8, photo_dir=pathlib.Path(".photos"), size_range=((4000, 3000), (4000, 3000)))
print("torch", torch.__version__, "torchvision", torchvision.__version__, torch.cuda.get_device_name(0), "mean bytes", sum(map(len, jpegs)) // 8)
datas = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
def timed(fn, reps):
    torch.cuda.synchronize(); c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(reps): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t0) / reps * 1000, (time.process_time() - c0) / reps * 1000
for _ in range(3): decode_jpeg(datas, device="cuda"); decode_jpeg(datas[0], device="cuda")
wall, cpu = timed(lambda: decode_jpeg(datas[0], device="cuda"), 20); print(json.dumps({"nvjpeg_one_ms": round(wall, 2), "host_cpu_ms": round(cpu, 2)}))
wall, cpu = timed(lambda: decode_jpeg(datas, device="cuda"), 10); print(json.dumps({"nvjpeg_batch8_ms_per_image": round(wall / 8, 2), "host_cpu_ms_per_image": round(cpu / 8, 2)}))
def resized():
    out = decode_jpeg(datas, device="cuda")
    return [torch.nn.functional.interpolate(o[None].half(), size=(1024, 1024), mode="bilinear", antialias=True) for o in out]
wall, cpu = timed(resized, 10); print(json.dumps({"nvjpeg_batch8_plus_resize_ms_per_image": round(wall / 8, 2), "host_cpu_ms_per_image": round(cpu / 8, 2)}))
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    decode_jpeg(datas, device="cuda"); torch.cuda.synchronize()
kernel_us = sum(e.device_time_total for e in prof.key_averages())
print(json.dumps({"batch8_device_kernel_ms_per_image": round(kernel_us / 1000 / 8, 2)}))
print(prof.key_averages().table(sort_by="device_time_total", row_limit=8))
c0 = time.process_time(); t0 = time.perf_counter()
for j in jpegs: Image.open(io.BytesIO(j)).convert("RGB").load()
print(json.dumps({"pillow_cpu_decode_ms_per_image": round((time.perf_counter() - t0) / 8 * 1000, 1)}))
PY
tar -C /tmp -czf $OUT/callJ.tgz j

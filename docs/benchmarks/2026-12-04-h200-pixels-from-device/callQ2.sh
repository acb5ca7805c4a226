# Lease Q, call 2 (call Q1's machine): the Ray kit, a cold prebuild, the model alone.
[ -d /tmp/bulk/in ] || { echo "not call Q1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ph "setup done"
pack() { cp $OUT/phases.txt /tmp/r/phases_q2.txt; tar -C /tmp -czf $OUT/callQ2.tgz r; }
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/r/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
timeout 150 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --out /tmp/r/model.json > /tmp/r/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/r/model.log | cut -c1-300 | tail -2
timeout 60 python3 - > /tmp/r/nvjpeg_12mp.log 2>&1 <<'PY'
# GPU time of nvJPEG on 12 MP JPEGs through torchvision, alone on the device (1 and 8 files a call).
import io, glob, time, torch, torchvision
from PIL import Image
from torchvision.io import decode_jpeg
files = sorted(glob.glob("/tmp/photos/*"))[:8]
datas = []
for f in files:
    buf = io.BytesIO(); Image.open(f).convert("RGB").resize((4000, 3000)).save(buf, "JPEG", quality=90); datas.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
print("torchvision", torchvision.__version__, "mean bytes", sum(d.numel() for d in datas) // len(datas))
for n in (1, 8):
    for rep in range(3):
        torch.cuda.synchronize(); t = time.perf_counter(); s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True); s.record()
        for _ in range(5): out = decode_jpeg(datas[:n], device="cuda")
        e.record(); torch.cuda.synchronize()
        print(f"batch {n}: wall {(time.perf_counter()-t)/5/n*1e3:.2f} ms/image, events {s.elapsed_time(e)/5/n:.2f} ms/image")
PY
ph "nvjpeg exit $?"; tail -3 /tmp/r/nvjpeg_12mp.log; ph done; pack

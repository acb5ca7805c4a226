# Probe (fresh machine, no Ray): does torchvision's nvJPEG decode on a side stream wait for work queued on another
# stream? A ~150 ms queue of matmuls on the default stream, then 8 (batched) or 1 12 MP JPEGs decoded on a side stream.
mkdir -p /tmp/k; export PYTHONPATH=$PWD:$PWD/scripts
python3 - <<'PY' 2>&1 | tee /tmp/k/nvjpeg_behind_busy.txt
import time, pathlib, json
import torch
from torchvision.io import decode_jpeg
from harness.photos import sample_photo_jpegs
jpegs = sample_photo_jpegs(8, photo_dir=pathlib.Path(".photos"), size_range=((4000, 3000), (4000, 3000)))
datas = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
a = torch.randn(8192, 8192, device="cuda", dtype=torch.half); b = torch.randn(8192, 8192, device="cuda", dtype=torch.half)
side = torch.cuda.Stream()
for _ in range(3):
    decode_jpeg(datas, device="cuda"); decode_jpeg(datas[0], device="cuda"); a @ b
torch.cuda.synchronize()
def busy(n):
    for _ in range(n): a @ b
t = time.perf_counter(); busy(20); torch.cuda.synchronize(); per = (time.perf_counter() - t) / 20 * 1000
print(json.dumps({"matmul_ms": round(per, 2)}))
n = int(150 / per)
for label, what in (("batch8", datas), ("one", datas[0]), ("batch8_again", datas), ("one_again", datas[0])):
    torch.cuda.synchronize()
    t0 = time.perf_counter(); busy(n); t_queued = time.perf_counter()
    with torch.cuda.stream(side):
        out = decode_jpeg(what, device="cuda")
        t_returned = time.perf_counter()
        side.synchronize(); t_decoded = time.perf_counter()
    torch.cuda.current_stream().synchronize(); t_busy_done = time.perf_counter()
    ms = lambda x: round((x - t0) * 1000, 1)
    print(json.dumps({"decode": label, "busy_queue_ms": round(n * per, 1), "queued_at": ms(t_queued), "decode_returned_at": ms(t_returned),
                      "decode_done_at": ms(t_decoded), "busy_done_at": ms(t_busy_done)}))
PY
tar -C /tmp -czf $OUT/callK.tgz k

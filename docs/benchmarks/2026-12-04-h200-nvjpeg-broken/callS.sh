# Lease S (fresh machine): what nvJPEG (torchvision, CUDA) does with JPEGs broken after their header, against Pillow.
mkdir -p $OUT/s
timeout 120 python3 - > $OUT/s/nvjpeg_broken.txt 2>&1 <<'PY'
import io, numpy as np, torch, torchvision, PIL
from PIL import Image
from torchvision.io import decode_jpeg, ImageReadMode
print("torch", torch.__version__, "torchvision", torchvision.__version__, "pillow", PIL.__version__, torch.cuda.get_device_name())
rng = np.random.default_rng(0)
small = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
img = Image.fromarray(small).resize((4096, 3072), Image.Resampling.BICUBIC)
noise = np.clip(np.asarray(img, dtype=np.int16) + rng.normal(0, 6, (3072, 4096, 3)), 0, 255).astype(np.uint8)
buf = io.BytesIO(); Image.fromarray(noise).save(buf, "JPEG", quality=90); whole = buf.getvalue()
sos = whole.index(b"\xff\xda")
def flip(data, at, n=64):
    b = bytearray(data); b[at:at + n] = rng.integers(0, 255, n, dtype=np.uint8).tobytes(); return bytes(b)
cases = {"whole": whole, "cut_half": whole[: len(whole) // 2], "cut_half_eoi": whole[: len(whole) // 2] + b"\xff\xd9",
         "cut_sos+100": whole[: sos + 100], "cut_last_byte": whole[:-1], "cut_last_2": whole[:-2],
         "garbage_middle": flip(whole, len(whole) // 2), "garbage_after_sos": flip(whole, sos + 200, 512)}
for name, data in cases.items():
    try:
        Image.open(io.BytesIO(data)).load(); pil = "ok"
    except Exception as e:
        pil = f"raises {type(e).__name__}: {str(e)[:60]}"
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    for label, call in (("single", lambda: decode_jpeg(t, mode=ImageReadMode.RGB, device="cuda")),
                        ("batch", lambda: decode_jpeg([t, t], mode=ImageReadMode.RGB, device="cuda")[0])):
        try:
            out = call(); torch.cuda.synchronize()
            ref = torch.from_numpy(noise).permute(2, 0, 1).cuda()
            rows_bad = ((out.int() - ref.int()).abs().amax(dim=(0, 2)) > 40).sum().item()
            res = f"ok {tuple(out.shape)}, rows far from the source: {rows_bad} of 3072"
        except Exception as e:
            res = f"raises {type(e).__name__}: {str(e)[:90]}"
        print(f"{name:18s} pillow: {pil:50s} nvjpeg {label}: {res}")
    try:
        torch.cuda.synchronize(); torch.zeros(1, device="cuda").item()
    except Exception as e:
        print("  device unusable after", name, e); break
PY
echo "exit $?"; cat $OUT/s/nvjpeg_broken.txt | cut -c1-250

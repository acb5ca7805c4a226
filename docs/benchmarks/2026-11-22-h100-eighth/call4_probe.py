# throwaway probe: the project's capturable deform_conv2d on the GPU: exact under CUDA graph replay, and its time
# against torchvision's kernel at BiRefNet's decoder shapes (batch 8, 64 channels, 1x1/3x3/7x7, 32..256 px)
import torch, torchvision
from serve_app.model import deform_conv
torch.manual_seed(0)
dev = "cuda"

def ours(x, off, w, m, pad):
    k = w.shape[2] * w.shape[3]
    return deform_conv.deform_conv2d(x, w, off, m, torch.zeros(w.shape[0], device=dev, dtype=x.dtype), 1, 1, pad, pad, 1, 1, 1, off.shape[1] // (2 * k), True)

def tv(x, off, w, m, pad):
    return torchvision.ops.deform_conv2d(x, off, w, padding=pad, mask=m)

def make(b, c, s, k, dtype):
    return (torch.randn(b, c, s, s, device=dev, dtype=dtype), torch.randn(b, 2 * k * k, s, s, device=dev, dtype=dtype) * 3,
            torch.randn(256, c, k, k, device=dev, dtype=dtype) * 0.05, torch.rand(b, k * k, s, s, device=dev, dtype=dtype) * 2)

def timed(fn, *args, n=10):
    fn(*args); torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n): fn(*args)
    end.record(); torch.cuda.synchronize()
    return start.elapsed_time(end) / n

with torch.inference_mode():
    # exact under graph replay
    x, off, w, m = make(2, 64, 64, 7, torch.float16)
    static = [t.clone() for t in (x, off, w, m)]
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): ours(*static, 3)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): out = ours(*static, 3)
    fresh = make(2, 64, 64, 7, torch.float16)
    static[0].copy_(fresh[0]); static[1].copy_(fresh[1]); static[3].copy_(fresh[3])
    g.replay(); torch.cuda.synchronize()
    ref32 = tv(fresh[0].float(), fresh[1].float(), w.float(), fresh[3].float(), 3)
    ref16 = tv(fresh[0], fresh[1], w, fresh[3], 3)
    print(f"ours replayed vs torchvision fp32: max {float((out.float() - ref32).abs().max()):.4g}; torchvision fp16 vs fp32: max {float((ref16.float() - ref32).abs().max()):.4g}; range {float(ref32.abs().max()):.3g}", flush=True)
    for s_ in (32, 64, 128, 256):
        for k in (1, 3, 7):
            args = make(8, 64, s_, k, torch.float16)
            t_tv = timed(tv, *args, k // 2); t_ours = timed(ours, *args, k // 2)
            print(f"batch 8, 64 ch, {s_}x{s_}, {k}x{k}: torchvision {t_tv:.2f} ms, ours {t_ours:.2f} ms", flush=True)
    print("peak GB", torch.cuda.max_memory_allocated() / 1e9)

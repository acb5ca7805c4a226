# throwaway probe: do torchvision's deform_conv2d and masked SDPA give the eager answer when replayed from a CUDA graph
# (torch.cuda.graph capture, and torch.compile with triton.cudagraphs) on inputs other than the captured ones?
import torch, torchvision
import torch.nn.functional as F
torch.manual_seed(0)
dev = "cuda"

def deform(x, off, w):
    return torchvision.ops.deform_conv2d(x, off, w, padding=1)

def attn(q, k, v, m):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=m)

def cases(dtype):
    w = torch.randn(16, 16, 3, 3, device=dev, dtype=dtype)
    mk_d = lambda: (torch.randn(2, 16, 64, 64, device=dev, dtype=dtype), torch.randn(2, 18, 64, 64, device=dev, dtype=dtype) * 3)
    mk_a = lambda: (torch.randn(64, 6, 144, 32, device=dev, dtype=dtype), torch.randn(64, 6, 144, 32, device=dev, dtype=dtype),
                    torch.randn(64, 6, 144, 32, device=dev, dtype=dtype), torch.randn(64, 6, 144, 144, device=dev, dtype=dtype))
    return [("deform_conv2d", lambda x, off: deform(x, off, w), mk_d), ("sdpa+mask", attn, mk_a)]

def graphed(fn, static):
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): fn(*static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): out = fn(*static)
    return g, out

for dtype in (torch.float16, torch.float32):
    for name, fn, make in cases(dtype):
        with torch.inference_mode():
            static = [t.clone() for t in make()]
            g, out = graphed(fn, static)
            fresh = make()
            for s_, f_ in zip(static, fresh): s_.copy_(f_)
            g.replay(); torch.cuda.synchronize()
            ref = fn(*fresh)
            print(f"{name} {dtype} torch.cuda.graph replay vs eager: max {float((out - ref).abs().max()):.3g}, eager range {float(ref.abs().max()):.3g}", flush=True)
            comp = torch.compile(fn, options={"triton.cudagraphs": True})
            for _ in range(3): comp(*make())
            fresh = make(); torch.compiler.cudagraph_mark_step_begin()
            got = comp(*fresh).clone(); ref = fn(*fresh)
            print(f"{name} {dtype} compile+triton.cudagraphs vs eager: max {float((got - ref).abs().max()):.3g}", flush=True)
            comp2 = torch.compile(fn)
            got = comp2(*fresh); print(f"{name} {dtype} compile vs eager: max {float((got - ref).abs().max()):.3g}", flush=True)

# Seventeenth session, GPU, after call D: torch.compile(...).aot_compile() of BiRefNet at batch 1 again, now with every
# Dynamo guard left out of the saved function (guard_filter_fn: call D's fresh process failed rebuilding them) and a
# warm-up call before timing (call D timed the first call's kernel builds too). `save` then `load` (new process).
import os, sys, time, torch
t0 = time.perf_counter()
from serve_app.model.core import final_logits
from serve_app.model.attention import ContiguousAttentionMasks
from serve_app.model.deform_conv import use_capturable_deform_conv
from serve_app.model.loading import load_segmentation_module
mode, size, model_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
device = "cuda" if torch.cuda.is_available() else "cpu"
side = 1024 if device == "cuda" else 256
torch._dynamo.config.enable_aot_compile = True  # False by default on torch 2.11
skip_guards = getattr(torch.compiler, "skip_all_guards_unsafe", lambda entries: [False] * len(entries))
print("torch", torch.__version__, "skip_all_guards_unsafe", hasattr(torch.compiler, "skip_all_guards_unsafe"), flush=True)
if device == "cuda":
    use_capturable_deform_conv("CUDA")
    torch.backends.cudnn.benchmark = True
dtype = torch.float16 if device == "cuda" else torch.float32
network = load_segmentation_module(model_id).to(device, dtype).eval()
print("built network s", round(time.perf_counter() - t0, 1), flush=True)
example = torch.randn((size, 3, side, side), generator=torch.Generator().manual_seed(1)).to(device, dtype)
path = f"/tmp/aot2_b{size}.bin"
def fwd(batch):
    with ContiguousAttentionMasks():
        return final_logits(network(batch))
def sync():
    if device == "cuda": torch.cuda.synchronize()
def timed(fn, n=20):
    fn(example); sync(); t = time.perf_counter()
    for _ in range(n): out = fn(example)
    sync(); return (time.perf_counter() - t) / n * 1000, out
if mode == "save":
    t = time.perf_counter()
    with torch.inference_mode():
        compiled = torch.compile(fwd, fullgraph=True, dynamic=False,
                                 options={"guard_filter_fn": skip_guards}).aot_compile(((example,), {}))
    print("aot_compile s", round(time.perf_counter() - t, 1), flush=True)
    with torch.inference_mode():
        t = time.perf_counter(); compiled(example); sync(); print("first call s", round(time.perf_counter() - t, 2), flush=True)
        ms, out = timed(compiled)
        print("compiled ms per batch", round(ms, 2), flush=True)
        torch.save(out.float().cpu(), f"/tmp/aot2_out_b{size}.pt")
    t = time.perf_counter()
    compiled.save_compiled_function(path, external_data={"network": network})
    print("saved s", round(time.perf_counter() - t, 1), "MB", round(os.path.getsize(path) / 1e6, 1), flush=True)
else:
    t = time.perf_counter()
    with open(path, "rb") as f:
        loaded = torch.compiler.load_compiled_function(f, f_globals=globals(), external_data={"network": network})
    print("load s", round(time.perf_counter() - t, 2), flush=True)
    with torch.inference_mode():
        t = time.perf_counter(); out = loaded(example); sync()
        print("first call s", round(time.perf_counter() - t, 2), flush=True)
        ms, out = timed(loaded)
        eager_ms, eager = timed(fwd, 5)
    ref = torch.load(f"/tmp/aot2_out_b{size}.pt")
    print("loaded ms per batch", round(ms, 2), "eager ms", round(eager_ms, 2), "max diff vs saving process",
          (out.float().cpu() - ref).abs().max().item(), "max diff vs eager", (out.float() - eager.float()).abs().max().item(), flush=True)
print("total s", round(time.perf_counter() - t0, 1))

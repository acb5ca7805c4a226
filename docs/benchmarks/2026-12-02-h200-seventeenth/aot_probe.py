# Seventeenth session, GPU: does torch.compile(...).aot_compile() save BiRefNet's compiled forward (random weights,
# fp16, 1024x1024, our attention patch and capturable deform conv as execution compiled_graphs uses them) and load it
# in a fresh process without tracing, and how long does the load take? `save B` then `load B` (new process).
import sys, time, torch
t0 = time.perf_counter()
from serve_app.model.core import final_logits
from serve_app.model.attention import ContiguousAttentionMasks
from serve_app.model.deform_conv import use_capturable_deform_conv
from serve_app.model.loading import load_segmentation_module
mode, size = sys.argv[1], int(sys.argv[2])
torch._dynamo.config.enable_aot_compile = True  # False by default on torch 2.11 (True, "should always be", on 2.14)
print("torch", torch.__version__, "has aot_compile", hasattr(torch.compile(lambda x: x), "aot_compile"),
      "has load_compiled_function", hasattr(torch.compiler, "load_compiled_function"), flush=True)
use_capturable_deform_conv("CUDA")
torch.backends.cudnn.benchmark = True
network = load_segmentation_module("import:birefnet_random:build").to("cuda", torch.float16).eval()
print("built network s", round(time.perf_counter() - t0, 1), flush=True)
example = torch.randn((size, 3, 1024, 1024), device="cuda", generator=torch.Generator("cuda").manual_seed(1)).half()
path = f"/tmp/aot_b{size}.bin"
def fwd(batch):
    with ContiguousAttentionMasks():
        return final_logits(network(batch))
def timed(fn, n=20):
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): out = fn(example)
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n * 1000, out
if mode == "save":
    t = time.perf_counter()
    with torch.inference_mode():
        compiled = torch.compile(fwd, fullgraph=True, dynamic=False).aot_compile(((example,), {}))
    print("aot_compile s", round(time.perf_counter() - t, 1), flush=True)
    with torch.inference_mode():
        ms, out = timed(compiled)
        print("compiled ms per batch", round(ms, 2), flush=True)
        torch.save(out.float().cpu(), f"/tmp/aot_out_b{size}.pt")
    t = time.perf_counter()
    compiled.save_compiled_function(path, external_data={"network": network})
    import os
    print("saved s", round(time.perf_counter() - t, 1), "MB", round(os.path.getsize(path) / 1e6, 1), flush=True)
else:
    t = time.perf_counter()
    with open(path, "rb") as f:
        loaded = torch.compiler.load_compiled_function(f, f_globals=globals(), external_data={"network": network})
    print("load s", round(time.perf_counter() - t, 2), flush=True)
    with torch.inference_mode():
        t = time.perf_counter(); out = loaded(example); torch.cuda.synchronize()
        print("first call s", round(time.perf_counter() - t, 2), flush=True)
        ms, out = timed(loaded)
        eager_ms, eager = timed(fwd, 5)
    ref = torch.load(f"/tmp/aot_out_b{size}.pt")
    print("loaded ms per batch", round(ms, 2), "eager ms", round(eager_ms, 2), "max diff vs saving process",
          (out.float().cpu() - ref).abs().max().item(), "max diff vs eager", (out.float() - eager.float()).abs().max().item(), flush=True)
print("total s", round(time.perf_counter() - t0, 1))

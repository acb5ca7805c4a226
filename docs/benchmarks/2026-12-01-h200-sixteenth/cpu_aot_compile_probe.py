# After the calls, 2-core machine (torch 2.14.1, CPU): does torch.compile(...).aot_compile() save the tiny model's
# forward and load it in a fresh process without tracing? Run twice: `save`, then `load` (new process).
import sys, time, torch
from serve_app.model.core import final_logits
from serve_app.model.attention import ContiguousAttentionMasks
from serve_app.model.loading import load_segmentation_module
network = load_segmentation_module(".tiny").eval()
example = torch.zeros((2, 3, 256, 256))
def fwd(batch):
    with ContiguousAttentionMasks():
        return final_logits(network(batch))
if sys.argv[1] == "save":
    t = time.perf_counter()
    with torch.inference_mode():
        compiled = torch.compile(fwd, fullgraph=True, dynamic=False).aot_compile(((example,), {}))
    print("aot_compile s", round(time.perf_counter() - t, 1))
    with torch.inference_mode():
        torch.save(compiled(example), "/tmp/aotc_out.pt")
    compiled.save_compiled_function("/tmp/aotc.bin", external_data={"network": network})
    print("saved")
else:
    t = time.perf_counter()
    with open("/tmp/aotc.bin", "rb") as f:
        loaded = torch.compiler.load_compiled_function(f, f_globals=globals(), external_data={"network": network})
    print("load s", round(time.perf_counter() - t, 2))
    with torch.inference_mode():
        t = time.perf_counter(); out = loaded(example); print("first call s", round(time.perf_counter() - t, 2))
    print("max diff", (out - torch.load("/tmp/aotc_out.pt")).abs().max().item())

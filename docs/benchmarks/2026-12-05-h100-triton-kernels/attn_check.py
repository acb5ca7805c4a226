# The window attention's Triton kernel against the fused SDPA forward on BiRefNet's stage shapes (batch 8, 1024 px):
# largest difference and device time of each, one layer alone.
import json, sys, types, torch
sys.path.insert(0, ".")
from serve_app.model.attention import _fused_window_attention, _triton_window_attention, fuse_window_attention
from tests.hub_layout.modeling_cutout_net import WindowAttention
torch.manual_seed(0)
results = {}
for name, (dim, heads, windows) in {"stage1": (192, 6, 484), "stage2": (384, 12, 121), "stage3": (768, 24, 36),
                                     "stage4": (1536, 48, 9)}.items():
    layer = WindowAttention(dim, heads, 12).cuda().half().eval()
    with torch.no_grad():
        layer.relative_position_bias_table.normal_(0, 1)
    x = torch.randn(8 * windows, 144, dim, device="cuda", dtype=torch.half)
    regions = torch.randint(0, 3, (windows, 144), device="cuda")
    mask = (regions[:, :, None] != regions[:, None, :]).float() * -100.0
    row = {}
    with torch.inference_mode():
        ref = type(layer).forward(layer, x.float() if False else x, mask)
        for kernel, fn in (("sdpa", _fused_window_attention), ("triton", _triton_window_attention)):
            out = fn(layer, x, mask)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(3):
                fn(layer, x, mask)
            start.record()
            for _ in range(20):
                fn(layer, x, mask)
            end.record(); torch.cuda.synchronize()
            row[kernel] = {"ms": round(start.elapsed_time(end) / 20, 3),
                           "max_diff_vs_written_out": float((out.float() - ref.float()).abs().max())}
    results[name] = row
    print(name, json.dumps(row), flush=True)

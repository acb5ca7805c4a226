#!/usr/bin/env python3
"""BiRefNet's deformable convolutions and window attention at batch 8, 1024x1024, fp16, one GPU: the kernels the
service runs against the candidates in `harness/kernel_candidates.py`, call by call at the model's own shapes,
with each one's largest difference from an fp32 reference and the total per forward pass.

    python scripts/bench_kernels.py --out kernels.json

Deformable convolution (20 calls per forward, 64 channels in and 256 out, kernels 1, 3 and 7 at 32 to 256 pixels
square): torchvision's CUDA kernel (eager execution), the grid_sample + matmul form the CUDA-graph executions run
(`serve_app.model.deform_conv`), and the Triton kernel, with its bias added in the kernel or in a pass after it, and
with its input and output channels-last (`deform_conv_channels_last`).
Window attention (48 calls, 144-token windows, head dim 32, with and without the shifted-window mask): one
scaled_dot_product_attention call as the `sdpa` setting makes it (`serve_app.model.attention`), the service's Triton
kernel (`serve_app.model.window_attention_triton`), the same kernel with its keys in one padded block, reading every
window's mask rows, or both, or every window of a block of queries launched first, a variant that reads each
window's keys and values once (its keys in one padded block or split), the written-out form compiled by inductor, and
flex_attention compiled; the shifted-window mask is Swin's own (`swin_shift_mask`). The backbone's linear layers (4
per block, 48 blocks): fp16 as the service runs them, and FP8 with a scale per row and per output channel
(`torch._scaled_mm`, the rows' scaling compiled), with the TFLOP/s each reaches. The decoder's last step (`--kinds
tail`): its 1x1 convolution after the upsampling, as written, and before it (`conv_before_upsample`). The MLPs'
first layer and GELU (`--kinds mlp`): compiled as written, and with the GELU in the product (`gelu_in_matmul`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.kernel_candidates import (  # noqa: E402
    flex_window_attention,
    fp8_linear,
    fp8_weight,
    window_attention_keys_once,
)
from harness.run_record import run_record  # noqa: E402
from serve_app.model import deform_conv  # noqa: E402
from serve_app.model.deform_triton import triton_deform_conv2d  # noqa: E402
from serve_app.model.graph_rewrites import ConvBeforeUpsample, GeluInMatmul  # noqa: E402
from serve_app.model.window_attention_triton import triton_window_attention, window_attention  # noqa: E402

IMAGES = 8
# (input side, kernel, calls per forward) of BiRefNet's deformable convolutions at 1024x1024: 64 -> 256 channels.
DEFORM_CALLS = [(32, 1, 4), (32, 3, 2), (32, 7, 2), (64, 1, 2), (64, 3, 1), (64, 7, 1), (128, 1, 2), (128, 3, 1),
                (128, 7, 1), (256, 1, 2), (256, 3, 1), (256, 7, 1)]
# (windows per image, heads, calls per forward, each once with and once without the shifted-window mask): the
# backbone's stages on the image and on its half-size copy.
ATTENTION_CALLS = [(484, 6, 1), (121, 12, 1), (36, 24, 9), (9, 48, 1), (121, 6, 1), (36, 12, 1), (9, 24, 9),
                   (4, 48, 1)]
TOKENS, HEAD_DIM = 144, 32
# (tokens per image, channels, blocks) of the backbone's Swin stages on the image and on its half-size copy; each
# block's linear layers are qkv (C -> 3C), proj (C -> C), fc1 (C -> 4C) and fc2 (4C -> C).
LINEAR_STAGES = [(65536, 192, 2), (16384, 384, 2), (4096, 768, 18), (1024, 1536, 2), (16384, 192, 2), (4096, 384, 2),
                 (1024, 768, 18), (256, 1536, 2)]


def timed(function: Callable[[], torch.Tensor], iterations: int) -> float:
    """Milliseconds per call, after one untimed call (compiles and tunes)."""
    function()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(iterations):
        function()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000 / iterations


def largest_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.float() - expected.float()).abs().max())


def deform_rows(iterations: int) -> list[dict]:
    return [deform_row(side, kernel, calls, iterations) for side, kernel, calls in DEFORM_CALLS]


def deform_row(side: int, kernel: int, calls: int, iterations: int) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(side * 10 + kernel)
    taps, padding = kernel * kernel, kernel // 2

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device="cuda", generator=generator)

    x = (rand(IMAGES, 64, side, side) * 2 - 1).half()
    weight = ((rand(256, 64, kernel, kernel) * 2 - 1) / (64 * taps) ** 0.5).half()
    offset = ((rand(IMAGES, 2 * taps, side, side) * 2 - 1) * 3).half()  # a few pixels, some past the border
    mask = (rand(IMAGES, taps, side, side) * 2).half()
    bias = (rand(256) - 0.5).half()
    geometry = (1, 1, padding, padding, 1, 1)
    x_last = x.contiguous(memory_format=torch.channels_last)
    candidates = {
        "torchvision": lambda: torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=padding, mask=mask),
        "grid_sample": lambda: deform_conv.deform_conv2d(x, weight, offset, mask, bias, *geometry, 1, 1, True),
        "triton": lambda: triton_deform_conv2d(x, weight, offset, mask, bias, *geometry, True),
        "triton_bias_after": lambda: triton_deform_conv2d(x, weight, offset, mask, None, *geometry, True)
        + bias.view(1, -1, 1, 1),
        # input and output channels-last, as the compiled model hands them over with deform_conv_channels_last
        "triton_channels_last": lambda: triton_deform_conv2d(x_last, weight, offset, mask, bias, *geometry, True,
                                                             channels_last=True),
    }
    reference = torchvision.ops.deform_conv2d(x[:1].float(), offset[:1].float(), weight.float(), bias.float(),
                                              padding=padding, mask=mask[:1].float())
    row: dict = {"side": side, "kernel": kernel, "calls_per_forward": calls,
                 "reference_max_abs": float(reference.abs().max())}
    return measured(row, candidates, reference, iterations)


def measured(row: dict, candidates: dict[str, Callable[[], torch.Tensor]], reference: torch.Tensor,
             iterations: int, flops: float | None = None,
             layouts: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> dict:
    """`row` with each candidate's ms per call and largest difference from `reference` (the first rows of its
    output, in the reference's layout: `layouts` converts a candidate's own, untimed), or the error it raised (a
    candidate that fails to compile or run costs the others nothing). Only the `--candidates` named, if any."""
    for name, function in candidates.items():
        if SELECTED and name not in SELECTED:
            continue
        try:
            milliseconds = timed(function, iterations)
            output = (layouts or {}).get(name, lambda tensor: tensor)(function())
            row[f"{name}_max_diff"] = largest_difference(output[: len(reference)], reference)
        except Exception as error:  # noqa: BLE001  (recorded: which candidate failed, and how)
            row[f"{name}_error"] = f"{type(error).__name__}: {error}"[:300]
            continue
        row[f"{name}_ms"] = round(milliseconds, 3)
        if flops:
            row[f"{name}_tflops"] = round(flops / milliseconds / 1e9, 1)
    print(json.dumps(row), flush=True)
    return row


SELECTED: set[str] = set()  # --candidates: the names to time (empty: all)


@torch.compile(dynamic=False)
def _written_out(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                 scale: float) -> torch.Tensor:
    return ((query * scale) @ key.transpose(-2, -1) + mask).softmax(-1) @ value


_flex = torch.compile(flex_window_attention, dynamic=False)


def swin_shift_mask(windows: int, side: int = 12, shift: int = 6) -> torch.Tensor:
    """Swin's shifted-window mask for one image of `windows` windows (a square grid) of `side` x `side` tokens: 0
    between tokens of one region of the shifted image, -100 across regions. Only the windows along the image's
    bottom and right edges straddle regions; the others' rows are all zeros."""
    grid = round(windows ** 0.5)
    size = grid * side
    regions = torch.zeros(size, size, dtype=torch.long)
    bands = (slice(0, size - side), slice(size - side, size - shift), slice(size - shift, None))
    for row, rows in enumerate(bands):
        for column, columns in enumerate(bands):
            regions[rows, columns] = 3 * row + column
    per_window = regions.view(grid, side, grid, side).permute(0, 2, 1, 3).reshape(windows, side * side)
    return (per_window[:, :, None] != per_window[:, None, :]).float() * -100.0


def attention_rows(iterations: int) -> list[dict]:
    return [attention_row(windows, heads, shifted, calls, iterations) for windows, heads, calls in ATTENTION_CALLS
            for shifted in (False, True)]


def attention_row(windows: int, heads: int, shifted: bool, calls: int, iterations: int) -> dict:
    scale = HEAD_DIM ** -0.5
    generator = torch.Generator(device="cuda").manual_seed(windows * heads + shifted)
    query, key, value = ((torch.rand(IMAGES, windows, heads, TOKENS, HEAD_DIM, device="cuda",
                                     generator=generator) * 2 - 1).half() for _ in range(3))
    bias = torch.rand(heads, TOKENS, TOKENS, device="cuda", generator=generator) - 0.5
    shift = swin_shift_mask(windows).cuda() if shifted else None
    # the service's layout (serve_app/model/attention.py): with a shifted mask, each image's windows as heads of one
    # call, the mask broadcast over images; without, one window a call, the bias broadcast over windows
    groups = windows if shifted else 1
    combined = bias.unsqueeze(0) if shift is None else bias.unsqueeze(0) + shift.unsqueeze(1)
    sdpa_mask = combined.reshape(1, groups * heads, TOKENS, TOKENS).half()
    q, k, v = (t.reshape(IMAGES * windows // groups, groups * heads, TOKENS, HEAD_DIM) for t in (query, key, value))
    # the qkv layer's output as the Triton kernel reads it: (windows, tokens, 3 x heads x head_dim)
    qkv = torch.cat([t.permute(0, 1, 3, 2, 4).reshape(IMAGES * windows, TOKENS, heads * HEAD_DIM)
                     for t in (query, key, value)], dim=-1)
    candidates = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask, scale=scale),
        "triton": lambda: window_attention(qkv, bias.half(), shift, heads, scale),
        "triton_one_key_block": lambda: triton_window_attention(qkv, bias.half(), shift, heads, scale,
                                                                split_keys=False),
        "triton_every_mask_row": lambda: triton_window_attention(qkv, bias.half(), shift, heads, scale,
                                                                 skip_unmasked=False),
        "triton_neither": lambda: triton_window_attention(qkv, bias.half(), shift, heads, scale, split_keys=False,
                                                          skip_unmasked=False),
        "triton_every_window_first": lambda: triton_window_attention(qkv, bias.half(), shift, heads, scale,
                                                                     adjacent_blocks=False),
        "triton_keys_once": lambda: window_attention_keys_once(qkv, bias.half(), shift, heads, scale),
        "triton_keys_once_split": lambda: window_attention_keys_once(qkv, bias.half(), shift, heads, scale,
                                                                     split_keys=True),
        "written_out_compiled": lambda: _written_out(q, k, v, sdpa_mask, scale),
        "flex_compiled": lambda: _flex(query, key, value, bias, shift, scale).reshape(q.shape),
    }
    def heads_first(out: torch.Tensor) -> torch.Tensor:
        return out.view(IMAGES, windows, TOKENS, heads, HEAD_DIM).permute(0, 1, 3, 2, 4).reshape(q.shape)

    layouts = {name: heads_first for name in candidates if name.startswith("triton")}
    reference = F.scaled_dot_product_attention(q[:1].float(), k[:1].float(), v[:1].float(),
                                               attn_mask=sdpa_mask.float(), scale=scale)
    row: dict = {"windows_per_image": windows, "heads": heads, "shifted": shifted,
                 "calls_per_forward": calls}
    return measured(row, candidates, reference, iterations, layouts=layouts)


def _decoder_tail(low: torch.Tensor, side: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    upsampled = F.interpolate(low, size=side.shape[2:], mode="bilinear", align_corners=True)
    return F.conv2d(torch.cat((upsampled, side), 1), weight, bias)


def _decoder_tail_by_hand(low: torch.Tensor, side: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor) -> torch.Tensor:
    channels = low.shape[1]
    reduced = F.conv2d(low, weight[:, :channels])
    upsampled = F.interpolate(reduced, size=side.shape[2:], mode="bilinear", align_corners=True)
    return upsampled + F.conv2d(side, weight[:, channels:], bias)


def tail_rows(iterations: int) -> list[dict]:
    """BiRefNet's last decoder step at batch 8: 192 channels at 256x256 upsampled to 1024x1024, concatenated with 48
    computed there, reduced to the mask by a 1x1 convolution (240 -> 1); as written, and with the convolution
    before the upsampling (by hand, and by `conv_before_upsample`'s rewrite when compiled)."""
    generator = torch.Generator(device="cuda").manual_seed(11)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, device="cuda", generator=generator) * 2 - 1).half()

    low, side, weight, bias = rand(IMAGES, 192, 256, 256), rand(IMAGES, 48, 1024, 1024), rand(1, 240, 1, 1), rand(1)
    written = torch.compile(_decoder_tail, dynamic=False)
    rewritten = torch.compile(_decoder_tail, dynamic=False, options={"pre_grad_custom_pass": ConvBeforeUpsample()})
    candidates = {
        "eager": lambda: _decoder_tail(low, side, weight, bias),
        "eager_conv_first": lambda: _decoder_tail_by_hand(low, side, weight, bias),
        "compiled": lambda: written(low, side, weight, bias),
        "compiled_conv_before_upsample": lambda: rewritten(low, side, weight, bias),
    }
    reference = _decoder_tail(low[:1].float(), side[:1].float(), weight.float(), bias.float())
    return [measured({"calls_per_forward": 1}, candidates, reference, iterations)]


def linear_rows(iterations: int) -> list[dict]:
    return [linear_row(tokens, channels * ins, channels * outs, blocks, iterations)
            for tokens, channels, blocks in LINEAR_STAGES for ins, outs in ((1, 3), (1, 1), (1, 4), (4, 1))]


_fp8_linear = torch.compile(fp8_linear, dynamic=False)


def linear_row(tokens: int, inputs: int, outputs: int, calls: int, iterations: int) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(inputs * 7 + outputs)
    x = (torch.rand(IMAGES * tokens, inputs, device="cuda", generator=generator) * 2 - 1).half()
    weight = ((torch.rand(outputs, inputs, device="cuda", generator=generator) * 2 - 1) / inputs ** 0.5).half()
    bias = (torch.rand(outputs, device="cuda", generator=generator) - 0.5).half()
    weight_fp8, weight_scale = fp8_weight(weight)
    candidates = {
        "fp16": lambda: F.linear(x, weight, bias),
        "fp8_rowwise_compiled": lambda: _fp8_linear(x, weight_fp8, weight_scale, bias),
    }
    reference = F.linear(x[:4096].float(), weight.float(), bias.float())
    row: dict = {"rows": IMAGES * tokens, "in": inputs, "out": outputs, "calls_per_forward": calls,
                 "reference_max_abs": float(reference.abs().max())}
    return measured(row, candidates, reference, iterations, flops=2 * IMAGES * tokens * inputs * outputs)


def _mlp_first_layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(F.linear(x, weight, bias))


def mlp_rows(iterations: int) -> list[dict]:
    """The Swin MLPs' first layer and its GELU (channels to 4 x channels) at each stage, batch 8: compiled as
    written (the product, then a Triton pass for the GELU), and with `gelu_in_matmul`'s rewrite (the GELU in
    cuBLASLt's epilogue, its tanh form)."""
    written = torch.compile(_mlp_first_layer, dynamic=False)
    joined = torch.compile(_mlp_first_layer, dynamic=False, options={"pre_grad_custom_pass": GeluInMatmul()})
    return [mlp_row(tokens, channels, blocks, iterations, written, joined)
            for tokens, channels, blocks in LINEAR_STAGES]


def mlp_row(tokens: int, channels: int, calls: int, iterations: int, written: Callable, joined: Callable) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(tokens + channels)
    x = (torch.rand(IMAGES * tokens, channels, device="cuda", generator=generator) * 2 - 1).half()
    weight = ((torch.rand(4 * channels, channels, device="cuda", generator=generator) * 2 - 1) / channels ** 0.5).half()
    bias = (torch.rand(4 * channels, device="cuda", generator=generator) - 0.5).half()
    candidates = {
        "compiled": lambda: written(x, weight, bias),
        "compiled_gelu_in_matmul": lambda: joined(x, weight, bias),
    }
    reference = _mlp_first_layer(x[:4096].float(), weight.float(), bias.float())
    row: dict = {"rows": IMAGES * tokens, "in": channels, "out": 4 * channels, "calls_per_forward": calls}
    return measured(row, candidates, reference, iterations, flops=2 * IMAGES * tokens * channels * 4 * channels)


def per_forward(rows: list[dict]) -> dict[str, float]:
    """Each candidate's milliseconds per forward pass, its per-call time times the calls (candidates that ran on
    every row)."""
    names = {key.removesuffix("_ms") for row in rows for key in row if key.endswith("_ms")}
    return {name: round(sum(row[f"{name}_ms"] * row["calls_per_forward"] for row in rows), 2) for name in sorted(names)
            if all(f"{name}_ms" in row for row in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="deform,attention,linear",
                        help="comma-separated: deform, attention, linear, tail, mlp")
    parser.add_argument("--candidates", default="",
                        help="comma-separated names to time, e.g. triton,triton_every_window_first (default: all)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    SELECTED.update(name for name in args.candidates.split(",") if name)
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels.py times GPU kernels: no CUDA device here")
    record: dict = {**run_record(), "device_name": torch.cuda.get_device_name(), "images": IMAGES}
    measure = {"deform": deform_rows, "attention": attention_rows, "linear": linear_rows, "tail": tail_rows,
               "mlp": mlp_rows}
    for kind in args.kinds.split(","):
        rows = measure[kind](args.iterations)
        record[kind] = {"ms_per_forward": per_forward(rows), "calls": rows}
        print(json.dumps({kind: record[kind]["ms_per_forward"]}), flush=True)
        if args.out:  # after each kind, so that a run cut short keeps what it measured
            args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The kernel candidates of scripts/bench_kernels.py compute what the service's kernels compute (CPU here: the
Triton kernel through Triton's interpreter, flex_attention eagerly)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.kernel_candidates import flex_window_attention

ROOT = Path(__file__).resolve().parents[2]

TRITON_DEFORM = """
import json, torch, torchvision
from harness.kernel_candidates import triton_deform_available, triton_deform_conv2d
results = {}
cases = {  # name: (channels, out, size, kernel, stride, padding, dilation, dtype, offset scale, mask)
    "3x3 modulated, fp16": (20, 24, (11, 13), 3, 1, 1, 1, torch.float16, 3.0, True),
    "BiRefNet's 7x7": (33, 17, (9, 8), 7, 1, 3, 1, torch.float32, 3.0, True),
    "1x1, no padding": (16, 40, (10, 10), 1, 1, 0, 1, torch.float32, 3.0, True),
    "stride 2, dilation 2, no mask": (8, 16, (12, 9), 3, 2, 2, 2, torch.float32, 3.0, False),
    "offsets far outside": (8, 16, (7, 7), 3, 1, 1, 1, torch.float32, 20.0, True),
    "whole offsets": (8, 16, (7, 7), 3, 1, 1, 1, torch.float32, 0.0, True),
}
generator = torch.Generator().manual_seed(0)
for name, (channels, out, (height, width), k, stride, pad, dil, dtype, spread, with_mask) in cases.items():
    out_h = (height + 2 * pad - dil * (k - 1) - 1) // stride + 1
    out_w = (width + 2 * pad - dil * (k - 1) - 1) // stride + 1
    x = torch.randn(2, channels, height, width, generator=generator)
    weight = torch.randn(out, channels, k, k, generator=generator) * 0.1
    offset = torch.randn(2, 2 * k * k, out_h, out_w, generator=generator) * spread
    mask = torch.rand(2, k * k, out_h, out_w, generator=generator) * 2 if with_mask else None
    bias = torch.randn(out, generator=generator)
    expected = torchvision.ops.deform_conv2d(x.double(), offset.double(), weight.double(), bias.double(),
                                             stride=stride, padding=pad, dilation=dil,
                                             mask=None if mask is None else mask.double())
    x, weight, offset, bias = (t.to(dtype) for t in (x, weight, offset, bias))
    mask = None if mask is None else mask.to(dtype)
    assert triton_deform_available(x, weight, 1, 1) and not triton_deform_available(x, weight, 2, 1)
    got = triton_deform_conv2d(x, weight, offset, mask, bias, stride, stride, pad, pad, dil, dil, with_mask)
    assert got.dtype == dtype and got.shape == expected.shape, (got.dtype, got.shape)
    results[name] = [float((got.double() - expected).abs().max()), float(expected.abs().max())]
print(json.dumps(results))
"""


def test_the_triton_deformable_convolution_matches_torchvision() -> None:
    # Triton's interpreter runs the kernel on the CPU; it is chosen before triton is imported, hence the child.
    pytest.importorskip("triton")
    result = subprocess.run([sys.executable, "-c", TRITON_DEFORM], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TRITON_INTERPRET": "1",
                                 "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), str(ROOT)])})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(results) == 6
    for name, (difference, scale) in results.items():
        # fp16 rounds the inputs, the samples and the output; float32 sums in float32
        tolerance = 2e-2 * scale if "fp16" in name else 1e-4 * max(scale, 1.0)
        assert difference <= tolerance, (name, difference, scale)


# eager flex_attention computes the whole score matrix, which is what a check wants
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("shifted", [False, True])
def test_flex_window_attention_is_the_swin_window_attention(shifted: bool) -> None:
    generator = torch.Generator().manual_seed(int(shifted))
    images, windows, heads, tokens, head_dim = 2, 3, 2, 16, 8
    query, key, value = (torch.randn(images, windows, heads, tokens, head_dim, generator=generator)
                         for _ in range(3))
    bias = torch.randn(heads, tokens, tokens, generator=generator)
    mask = (torch.where(torch.rand(windows, tokens, tokens, generator=generator) < 0.3, -100.0, 0.0)
            if shifted else None)
    scale = head_dim ** -0.5
    got = flex_window_attention(query, key, value, bias, mask, scale)
    assert got.shape == query.shape
    for window in range(windows):  # each window on its own, written out as the Hub's Swin code does
        scores = (query[:, window] * scale) @ key[:, window].transpose(-2, -1) + bias
        if mask is not None:
            scores = scores + mask[window]
        expected = scores.softmax(-1) @ value[:, window]
        assert torch.allclose(got[:, window], expected, rtol=1e-4, atol=1e-5)
    # and no query reads another window: changing one window's keys leaves the others' outputs alone
    key[:, 0] += 1.0
    again = flex_window_attention(query, key, value, bias, mask, scale)
    assert torch.equal(again[:, 1:], got[:, 1:])


def test_the_kernel_benchmark_needs_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_kernels.py")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "no CUDA device" in result.stderr


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_sdpa_reference_layout_matches_the_services() -> None:
    # bench_kernels lays each image's windows out as heads of one call, as serve_app.model.attention does
    images, windows, heads, tokens, head_dim = 2, 3, 2, 16, 8
    query, key, value = (torch.randn(images, windows, heads, tokens, head_dim) for _ in range(3))
    bias = torch.randn(heads, tokens, tokens)
    shift = torch.where(torch.rand(windows, tokens, tokens) < 0.3, -100.0, 0.0)
    combined = (bias.unsqueeze(0) + shift.unsqueeze(1)).reshape(1, -1, tokens, tokens)
    q, k, v = (t.reshape(images, windows * heads, tokens, head_dim) for t in (query, key, value))
    service = F.scaled_dot_product_attention(q, k, v, attn_mask=combined, scale=0.5)
    flex = flex_window_attention(query, key, value, bias, shift, 0.5).reshape(service.shape)
    assert torch.allclose(service, flex, rtol=1e-4, atol=1e-5)


def test_the_fp8_linear_layer_is_the_linear_layer_to_fp8_precision() -> None:
    from harness.kernel_candidates import fp8_linear, fp8_weight

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 64, generator=generator)
    weight = torch.randn(48, 64, generator=generator) / 8
    bias = torch.randn(48, generator=generator)
    weight_fp8, weight_scale = fp8_weight(weight)
    assert weight_fp8.dtype == torch.float8_e4m3fn and weight_scale.shape == (1, 48)
    got = fp8_linear(x, weight_fp8, weight_scale, bias)
    expected = F.linear(x, weight, bias)
    assert got.shape == expected.shape and got.dtype == x.dtype
    # e4m3 keeps 3 mantissa bits: each product is within ~6%, and their sum's error mostly cancels
    assert float((got - expected).abs().max()) < 0.05 * float(expected.abs().max())
    assert float((got - expected).abs().mean()) < 0.01 * float(expected.abs().max())


def test_a_candidate_that_fails_is_recorded_and_the_others_still_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench_kernels

    monkeypatch.setattr(bench_kernels, "timed", lambda function, iterations: 2.0)  # no GPU to time on here
    reference = torch.zeros(2, 3)

    def broken() -> torch.Tensor:
        raise RuntimeError("no kernel for this shape")

    rows = [bench_kernels.measured({"calls_per_forward": calls}, {"ours": lambda: torch.full((4, 3), 0.5),
                                                                   "broken": broken}, reference, 5, flops=4e9)
            for calls in (1, 3)]
    assert rows[0]["ours_ms"] == 2.0 and rows[0]["ours_max_diff"] == 0.5 and rows[0]["ours_tflops"] == 2.0
    assert rows[0]["broken_error"] == "RuntimeError: no kernel for this shape" and "broken_ms" not in rows[0]
    assert bench_kernels.per_forward(rows) == {"ours": 8.0}

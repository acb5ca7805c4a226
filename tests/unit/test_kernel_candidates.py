"""The kernel candidates of scripts/bench_kernels.py compute what the service's kernels compute (CPU here:
flex_attention eagerly)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.kernel_candidates import flex_window_attention
from tests.helpers import triton_interpreter_results

ROOT = Path(__file__).resolve().parents[2]

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


KEYS_ONCE = """
import json, torch
from harness.kernel_candidates import window_attention_keys_once
from serve_app.model.window_attention_triton import triton_window_attention
generator = torch.Generator().manual_seed(0)
results = {}
for name, (windows, tokens, heads, head_dim, mask_windows, dtype) in {
    "144 tokens, shifted, fp16": (4, 144, 2, 32, 2, torch.float16),
    "16 tokens, no mask, fp32": (3, 16, 3, 16, 0, torch.float32),
}.items():
    qkv = torch.randn(windows, tokens, 3 * heads * head_dim, generator=generator).to(dtype)
    bias = torch.randn(heads, tokens, tokens, generator=generator).to(dtype)
    regions = torch.randint(0, 3, (mask_windows, tokens), generator=generator)
    mask = (regions[:, :, None] != regions[:, None, :]).float() * -100.0 if mask_windows else None
    service = triton_window_attention(qkv, bias, mask, heads, head_dim ** -0.5)
    for split in (False, True):
        candidate = window_attention_keys_once(qkv, bias, mask, heads, head_dim ** -0.5, split_keys=split)
        results[f"{name}, split keys {split}"] = float((candidate.double() - service.double()).abs().max())
print(json.dumps(results))
"""


def test_the_keys_once_window_attention_is_the_services() -> None:
    pytest.importorskip("triton")
    results = triton_interpreter_results(KEYS_ONCE)
    assert len(results) == 4
    assert all(difference <= 2e-3 for difference in results.values()), results


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


def test_the_benchmarks_shifted_mask_splits_only_the_edge_windows() -> None:
    from bench_kernels import swin_shift_mask

    mask = swin_shift_mask(9, side=4, shift=2)  # 3x3 windows of 4x4 tokens
    assert mask.shape == (9, 16, 16) and set(mask.unique().tolist()) == {-100.0, 0.0}
    split = mask.reshape(9, -1).ne(0).any(dim=1).view(3, 3)
    # the last row and column of windows straddle the shifted image's regions; the other four lie inside one
    assert split.tolist() == [[False, False, True], [False, False, True], [True, True, True]]
    corner = mask[8]
    assert corner[0, 0] == 0 and corner[0, 2] == -100.0 and corner[0, 8] == -100.0 and corner[0, 10] == -100.0
    assert torch.equal(corner, corner.t())


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

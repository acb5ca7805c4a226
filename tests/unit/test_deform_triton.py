"""The deformable convolution's Triton kernel (serve_app/model/deform_triton.py) computes torchvision's
deform_conv2d, here through Triton's interpreter on the CPU, and the setting that puts it in the model names it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

from serve_app.model import deform_conv, deform_triton
from serve_app.settings import ModelSettings
from tests.helpers import triton_interpreter_results

ROOT = Path(__file__).resolve().parents[2]

TRITON_DEFORM = """
import json, torch, torchvision
from serve_app.model.deform_triton import triton_deform_available, triton_deform_conv2d
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
    # the same tiles written channels-last (the compiled model's layout, deform_conv_channels_last)
    last = triton_deform_conv2d(x, weight, offset, mask, bias, stride, stride, pad, pad, dil, dil, with_mask,
                                channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last) and last.shape == expected.shape
    results[f"{name}, channels-last"] = [float((last.double() - expected).abs().max()), float(expected.abs().max())]
    # relu(result * scale + shift) written into channels 3.. of a wider channels-last buffer (a concatenation),
    # whose other channels stay as they were
    scale, shift = torch.rand(out, generator=generator) + 0.5, torch.randn(out, generator=generator)
    wide = torch.full((2, out + 5, *expected.shape[2:]), 7.0, dtype=dtype).contiguous(memory_format=torch.channels_last)
    triton_deform_conv2d(x, weight, offset, mask, bias, stride, stride, pad, pad, dil, dil, with_mask,
                         out=wide[:, 3:3 + out], affine_relu=(scale, shift))
    assert bool((wide[:, :3] == 7).all() and (wide[:, 3 + out:] == 7).all()), name
    activated = torch.relu(expected * scale.double()[:, None, None] + shift.double()[:, None, None])
    results[f"{name}, batch norm and ReLU into a concatenation"] = [
        float((wide[:, 3:3 + out].double() - activated).abs().max()), float(activated.abs().max())]
    # offsets and mask channels-last, as the compiled model hands them over; both as slices of one wider
    # channels-last tensor (offset_mask_conv's joined convolution); offsets with rows and columns swapped in memory
    # (pixels not one stride apart)
    swapped = offset.transpose(2, 3).contiguous().transpose(2, 3)
    parts = [offset] + ([] if mask is None else [mask])
    padding = offset.new_zeros(offset.shape[0], 3, *offset.shape[2:])
    joined = torch.cat([*parts, padding], 1).contiguous(memory_format=torch.channels_last)
    sliced = (joined[:, :offset.shape[1]], None if mask is None else joined[:, offset.shape[1]:-3])
    for layout, offset_in, mask_in in (("channels-last", offset.contiguous(memory_format=torch.channels_last),
                                        None if mask is None else mask.contiguous(memory_format=torch.channels_last)),
                                       ("sliced", *sliced), ("rows and columns swapped", swapped, mask)):
        got = triton_deform_conv2d(x, weight, offset_in, mask_in, bias, stride, stride, pad, pad, dil, dil, with_mask)
        results[f"{name}, offsets {layout}"] = [float((got.double() - expected).abs().max()),
                                                float(expected.abs().max())]
print(json.dumps(results))
"""


def test_the_triton_deformable_convolution_matches_torchvision() -> None:
    pytest.importorskip("triton")
    results = triton_interpreter_results(TRITON_DEFORM)
    assert len(results) == 36
    for name, (difference, scale) in results.items():
        # fp16 rounds the inputs, the samples and the output; float32 sums in float32
        tolerance = 2e-2 * scale if "fp16" in name else 1e-4 * max(scale, 1.0)
        assert difference <= tolerance, (name, difference, scale)


def test_calls_the_kernel_does_not_take_run_the_grid_sample_form() -> None:
    # two weight groups, or a tensor off CUDA: the capturable grid_sample form answers, as torchvision does
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, 6, generator=generator)
    offset = torch.randn(1, 2 * 9, 6, 6, generator=generator)
    mask = torch.rand(1, 9, 6, 6, generator=generator)
    bias = torch.zeros(6)
    for weight, groups in ((torch.randn(6, 2, 3, 3, generator=generator), 2),
                           (torch.randn(6, 4, 3, 3, generator=generator), 1)):
        assert not deform_triton.triton_deform_available(x, weight, 2, 1)
        expected = torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        got = deform_triton.deform_conv2d(x, weight, offset, mask, bias, 1, 1, 1, 1, 1, 1, groups, 1, True)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_concatenation_is_allocated_channels_last_without_a_copy() -> None:
    # deform_bn_relu_concat writes every branch into this tensor; a contiguous allocation converted afterwards would
    # copy the whole concatenation on every forward
    calls: list[str] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            calls.append(str(func))
            return func(*args, **(kwargs or {}))

    x = torch.zeros(2, 6, 9, 7, dtype=torch.float16)
    weights = [torch.zeros(5, 6, k, k, dtype=torch.float16) for k in (1, 3)]
    offsets = [torch.zeros(2, 2 * k * k, 9, 7, dtype=torch.float16) for k in (1, 3)]
    pooled = torch.zeros(2, 4, 1, 1, dtype=torch.float16)
    with Recorder():
        out, channels = deform_triton._concatenation_layout([x, x], weights, offsets, [pooled], [0, 1, -1])
    assert channels == [5, 5, 4]
    assert out.shape == (2, 14, 9, 7) and out.dtype == torch.float16
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert calls and all("empty" in call for call in calls), calls


def test_the_setting_names_the_kernel_and_refuses_others() -> None:
    assert ModelSettings(model_id="m").capturable_deform_conv == "triton"
    assert ModelSettings(model_id="m", capturable_deform_conv="grid_sample").capturable_deform_conv == "grid_sample"
    with pytest.raises(ValueError):
        ModelSettings(model_id="m", capturable_deform_conv="cuda")
    assert deform_conv.capturable_deform_conv_kernel("triton") is deform_triton.deform_conv2d
    assert deform_conv.capturable_deform_conv_kernel("grid_sample") is deform_conv.deform_conv2d
    with pytest.raises(ValueError, match="choose triton or grid_sample"):
        deform_conv.capturable_deform_conv_kernel("im2col")


REGISTERED = """
from serve_app.model import deform_conv
assert deform_conv.deform_conv_implementation("CPU") == "torchvision"
deform_conv.use_capturable_deform_conv("CPU", deform_conv.capturable_deform_conv_kernel("grid_sample"))
first = deform_conv.deform_conv_implementation("CPU")
deform_conv.use_capturable_deform_conv("CPU", deform_conv.capturable_deform_conv_kernel("triton"))
print(first, deform_conv.deform_conv_implementation("CPU"))
"""


def test_the_model_reports_which_kernel_runs() -> None:
    # In a child process: the registration is process-wide.
    result = subprocess.run([sys.executable, "-c", REGISTERED], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["grid_sample", "triton"]

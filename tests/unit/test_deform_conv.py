"""The capturable deformable convolution against torchvision's own kernel (CPU here; the CUDA graph runs that need
it were made on an H100)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from serve_app.model import deform_conv


def _case(*, batch=2, channels=8, out_channels=6, size=(9, 11), kernel=(3, 3), stride=(1, 1), padding=(1, 1),
          dilation=(1, 1), groups=1, offset_groups=1, with_mask=True, offset_scale=2.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    out_h = (height + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    taps = kernel[0] * kernel[1]
    input = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
    # Offsets of a few pixels push many samples across the border, where torchvision reads zeros.
    offset = torch.randn(batch, 2 * offset_groups * taps, out_h, out_w, generator=generator,
                         dtype=torch.float64) * offset_scale
    weight = torch.randn(out_channels, channels // groups, *kernel, generator=generator, dtype=torch.float64)
    bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
    mask = torch.rand(batch, offset_groups * taps, out_h, out_w, generator=generator,
                      dtype=torch.float64) * 2 if with_mask else None
    return dict(input=input, offset=offset, weight=weight, bias=bias, stride=stride, padding=padding,
                dilation=dilation, mask=mask)


def _ours(case: dict) -> torch.Tensor:
    weight, offset, mask = case["weight"], case["offset"], case["mask"]
    taps = weight.shape[2] * weight.shape[3]
    use_mask = mask is not None
    return deform_conv.deform_conv2d(
        case["input"], weight, offset, mask if use_mask else torch.zeros(1), case["bias"], *case["stride"],
        *case["padding"], *case["dilation"], case["input"].shape[1] // weight.shape[1],
        offset.shape[1] // (2 * taps), use_mask)


CASES = {
    "3x3 modulated": {},
    "BiRefNet's 7x7, padding 3": {"kernel": (7, 7), "padding": (3, 3)},
    "1x1, no padding": {"kernel": (1, 1), "padding": (0, 0)},
    "no mask, bias": {"with_mask": False},
    "stride 2, dilation 2": {"stride": (2, 2), "dilation": (2, 2), "padding": (2, 2)},
    "non-square kernel and strides": {"kernel": (3, 5), "stride": (1, 2), "padding": (1, 2)},
    "weight and offset groups": {"groups": 2, "offset_groups": 4, "out_channels": 4},
    "offsets far outside": {"offset_scale": 20.0},
    "whole offsets (samples on pixel centres and borders)": {"offset_scale": 0.0},
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torchvision(name: str) -> None:
    case = _case(**CASES[name])
    expected = torchvision.ops.deform_conv2d(**case)
    got = _ours(case)
    assert got.shape == expected.shape
    # Sampled in the input dtype (float64 here); positions in float32: agreement to float32 precision.
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), float((got - expected).abs().max())


def test_integer_offsets_land_exactly_on_pixels() -> None:
    case = _case(offset_scale=0.0)
    case["offset"] = torch.randint(-3, 4, case["offset"].shape, generator=torch.Generator().manual_seed(1)).double()
    assert torch.allclose(_ours(case), torchvision.ops.deform_conv2d(**case), rtol=1e-4, atol=1e-4)


def test_chunks_large_batches_without_changing_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    case = _case(batch=5)
    whole = _ours(case)
    monkeypatch.setattr(deform_conv, "_CHUNK_BYTES", 1)  # one image per chunk
    # Each image is computed on its own either way; only the matrix products' blocking changes with the batch,
    # which moves float64 results by a few units in the last place, never by more than rounding.
    assert torch.allclose(_ours(case), whole, rtol=1e-12, atol=1e-12)


def test_half_precision_follows_the_weight_dtype() -> None:
    case = {key: (value.float() if isinstance(value, torch.Tensor) else value) for key, value in _case().items()}
    expected = torchvision.ops.deform_conv2d(**case)
    case["weight"], case["bias"] = case["weight"].bfloat16(), case["bias"].bfloat16()
    got = _ours(case)
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), expected, rtol=0.05, atol=0.5)


REGISTERED = """
import torch, torchvision
from serve_app.model import deform_conv
calls = []
original = deform_conv.deform_conv2d
deform_conv.deform_conv2d = lambda *args: calls.append(1) or original(*args)
assert not deform_conv.capturable_deform_conv_active("CPU")
assert deform_conv.use_capturable_deform_conv("CPU")
assert deform_conv.use_capturable_deform_conv("CPU")  # idempotent
assert deform_conv.capturable_deform_conv_active("CPU") and not deform_conv.capturable_deform_conv_active("CUDA")
x, off, w = torch.randn(1, 4, 6, 6), torch.randn(1, 18, 6, 6), torch.randn(3, 4, 3, 3)
torchvision.ops.deform_conv2d(x, off, w, padding=1)
# another implementation replaces it (a benchmark's kernel), and the default one comes back when asked for
others = []
assert deform_conv.use_capturable_deform_conv("CPU", lambda *args: others.append(1) or original(*args))
assert deform_conv.use_capturable_deform_conv("CPU")  # without one: the current implementation stays
torchvision.ops.deform_conv2d(x, off, w, padding=1)
assert deform_conv.use_capturable_deform_conv("CPU", deform_conv.deform_conv2d)
torchvision.ops.deform_conv2d(x, off, w, padding=1)
assert deform_conv.deform_conv_implementation("CUDA") == "torchvision"  # a device it was not registered on
print(len(calls), len(others))
"""


def test_registration_routes_torchvision_calls_to_it() -> None:
    # In a child process: the registration is process-wide, and this one's other tests want torchvision's kernel.
    # The kernel is looked up when registered, so the counting wrapper must be in place first.
    result = subprocess.run([sys.executable, "-c", REGISTERED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2 1"

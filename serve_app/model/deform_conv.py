"""Deformable convolution that CUDA graphs can capture, in place of torchvision's CUDA kernel.

BiRefNet's decoder calls `torchvision.ops.deform_conv2d`. Replayed from a CUDA graph (`execution: cuda_graphs`, or
`compiled` with inductor's `triton.cudagraphs`), torchvision 0.26's CUDA kernel does not recompute: its output
bears no relation to the new input (it can differ by the output's whole range), and BiRefNet's masks drift far
outside the bounds eager fp16 keeps against eager fp32. Why torchvision's kernel escapes the capture is not known;
masked attention, the other custom kernel BiRefNet leans on, replays exactly.

This module computes the same operator from standard ops (one `grid_sample` per offset group, one batched matrix
product), which capture and compile like any other, and registers it as the CUDA kernel of `torchvision::
deform_conv2d`, so that the model's own code stays as published. Eager and plain compiled execution keep
torchvision's kernel, which is correct there.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_implementations: dict[str, Callable[..., torch.Tensor]] = {}  # dispatch key -> what runs there
_library: torch.library.Library | None = None


def deform_conv2d(input: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  bias: torch.Tensor, stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int,
                  dilation_w: int, groups: int, offset_groups: int, use_mask: bool) -> torch.Tensor:
    """torchvision::deform_conv2d's forward (same arguments, same result) from `grid_sample` and a matmul.

    Each kernel tap (i, j) of output pixel (y, x) samples the input bilinearly at
    (y * stride - pad + i * dilation + dy, x * stride - pad + j * dilation + dx), where (dy, dx) is that tap's
    offset; samples outside the image count as zero, as in torchvision. With `use_mask` each sample is scaled
    by its modulation mask (DCNv2).
    """
    batch, channels, height, width = input.shape
    taps = weight.shape[2] * weight.shape[3]
    out_h, out_w = offset.shape[-2:]
    # The samples are (channels x taps x output pixels) per image: 0.4 GB in fp16 for one of BiRefNet's 7x7
    # decoder convolutions at 256x256. Images go through in chunks that keep it near _CHUNK_BYTES.
    per_image = channels * taps * out_h * out_w * input.element_size()
    chunk = max(1, _CHUNK_BYTES // max(per_image, 1))
    geometry = (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, offset_groups, use_mask)
    outputs = [_deform_chunk(input[start:start + chunk], weight, offset[start:start + chunk],
                             mask[start:start + chunk] if use_mask else mask, bias, *geometry)
               for start in range(0, batch, chunk)]
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


_CHUNK_BYTES = 1 << 30


def _deform_chunk(input: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  bias: torch.Tensor, stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int,
                  dilation_w: int, groups: int, offset_groups: int, use_mask: bool) -> torch.Tensor:
    batch, channels, height, width = input.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    out_h, out_w = offset.shape[-2:]
    device = input.device
    # Positions are computed in float32 and sampled in the input's dtype, as torchvision does: in fp16 a sample
    # near pixel 256 is placed to within ~0.06 pixel, and the samples are half the memory traffic of float32 (in
    # float32 the 7x7 convolution above takes about twice torchvision's time).
    rows = torch.arange(out_h, device=device, dtype=torch.float32) * stride_h - pad_h
    cols = torch.arange(out_w, device=device, dtype=torch.float32) * stride_w - pad_w
    tap_rows = (torch.arange(kernel_h, device=device, dtype=torch.float32) * dilation_h).repeat_interleave(kernel_w)
    tap_cols = (torch.arange(kernel_w, device=device, dtype=torch.float32) * dilation_w).repeat(kernel_h)
    offsets = offset.float().view(batch, offset_groups, taps, 2, out_h, out_w)
    y = rows.view(1, 1, 1, out_h, 1) + tap_rows.view(1, 1, taps, 1, 1) + offsets[:, :, :, 0]
    x = cols.view(1, 1, 1, 1, out_w) + tap_cols.view(1, 1, taps, 1, 1) + offsets[:, :, :, 1]
    # grid_sample's coordinates with align_corners=False: pixel p sits at (2p + 1) / size - 1.
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1).to(input.dtype)
    grid = grid.view(batch * offset_groups, taps * out_h, out_w, 2)
    per_group = channels // offset_groups
    sampled = F.grid_sample(input.reshape(batch * offset_groups, per_group, height, width), grid,
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(batch, offset_groups, per_group, taps, out_h * out_w)
    if use_mask:
        sampled.mul_(mask.to(input.dtype).view(batch, offset_groups, 1, taps, out_h * out_w))
    # im2col layout: rows (channel, tap) within each weight group, columns the output pixels.
    columns = sampled.view(batch, groups, (channels // groups) * taps, out_h * out_w).to(weight.dtype)
    kernels = weight.reshape(groups, out_channels // groups, (channels // groups) * taps)
    out = torch.matmul(kernels.unsqueeze(0), columns)  # (batch, groups, out per group, pixels)
    return out.reshape(batch, out_channels, out_h, out_w) + bias.view(1, out_channels, 1, 1)


def capturable_deform_conv_kernel(name: str) -> Callable[..., torch.Tensor]:
    """The implementation ModelSettings.capturable_deform_conv names: "triton" (serve_app/model/deform_triton.py,
    imported only then) or "grid_sample" (`deform_conv2d` above)."""
    if name == "triton":
        from serve_app.model import deform_triton

        return deform_triton.deform_conv2d
    if name == "grid_sample":
        return deform_conv2d
    raise ValueError(f"unknown deformable convolution kernel {name!r}: choose triton or grid_sample")


def capturable_deform_conv_active(dispatch_key: str = "CUDA") -> bool:
    """Whether this process runs `torchvision::deform_conv2d` on `dispatch_key` devices with code of its own (by
    default the code above)."""
    return dispatch_key in _implementations


def deform_conv_implementation(dispatch_key: str = "CUDA") -> str:
    """What `torchvision::deform_conv2d` runs on `dispatch_key` devices in this process: "torchvision" (its own
    kernel), the ModelSettings.capturable_deform_conv name of the implementation put in its place, or the name of
    another (a benchmark's)."""
    implementation = _implementations.get(dispatch_key)
    if implementation is None:
        return "torchvision"
    if implementation is deform_conv2d:
        return "grid_sample"
    deform_triton = sys.modules.get("serve_app.model.deform_triton")  # imported only when chosen
    if deform_triton is not None and implementation is deform_triton.deform_conv2d:
        return "triton"
    return getattr(implementation, "__qualname__", repr(implementation))


def use_capturable_deform_conv(dispatch_key: str = "CUDA",
                               implementation: Callable[..., torch.Tensor] | None = None) -> bool:
    """Make `torchvision::deform_conv2d` run `implementation` (torchvision's arguments, the same result; by default
    `deform_conv2d` above) on `dispatch_key` devices, for this process.

    Returns False if torchvision's operators are not loaded (the model cannot be calling it then).
    Idempotent: without `implementation`, a device that already runs one keeps it; with one, it replaces what runs
    there (a model with another `capturable_deform_conv`). Process-wide: every caller of
    `torchvision.ops.deform_conv2d` on that device gets it.
    """
    global _library
    if dispatch_key in _implementations:
        if implementation is not None and implementation is not _implementations[dispatch_key]:
            _implementations[dispatch_key] = implementation
            logger.info("torchvision::deform_conv2d on %s now runs %s", dispatch_key,
                        deform_conv_implementation(dispatch_key))
        return True
    try:
        import torchvision  # noqa: F401  (loads the operator library)

        torch.ops.torchvision.deform_conv2d.default  # noqa: B018  (raises if the operator is missing)
    except (ImportError, AttributeError, RuntimeError):
        return False
    _implementations[dispatch_key] = implementation or deform_conv2d
    _library = _library or torch.library.Library("torchvision", "IMPL")

    def kernel(*args: object) -> torch.Tensor:
        # Looked up per call, so that a later `implementation` takes over: torch registers a kernel once per
        # library and device.
        return _implementations[dispatch_key](*args)

    with warnings.catch_warnings():
        # torch warns that a registered kernel is being overridden: that is the point.
        warnings.simplefilter("ignore", UserWarning)
        _library.impl("deform_conv2d", kernel, dispatch_key)
    logger.info("torchvision::deform_conv2d on %s now runs a capturable implementation (%s)", dispatch_key,
                deform_conv_implementation(dispatch_key))
    return True

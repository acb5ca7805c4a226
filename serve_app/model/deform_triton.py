"""torchvision's deformable convolution as one Triton kernel, for CUDA executions that replay CUDA graphs.

The capturable form in `serve_app.model.deform_conv` computes `deform_conv2d` from `grid_sample` and a matmul, which
writes every sample (channels x taps x output pixels: 3.3 GB in fp16 for one 7x7 decoder convolution of BiRefNet
at 256x256 and batch 8) to memory, scales it by the modulation mask in a second pass and reads it back for the
product. Here each program takes a tile of output pixels and of output channels; for each kernel tap and block of
input channels it computes the four bilinear corners' weights once, gathers the input there (channels last, so each
pixel's block of channels is one contiguous read) and feeds the weighted sum to `tl.dot`: the samples never leave
the chip. Positions and weights are computed in float32 and the products accumulate in float32, as torchvision's
kernel and the matmul do. One weight group and one offset group (BiRefNet's case); other calls take the
`grid_sample` form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from serve_app.model.deform_conv import deform_conv2d as grid_sample_deform_conv2d

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch's CUDA wheels bring triton; a CPU-only install may not
    triton = None


def triton_deform_available(input: torch.Tensor, weight: torch.Tensor, groups: int, offset_groups: int) -> bool:
    """Whether `triton_deform_conv2d` computes this call."""
    return (triton is not None and groups == 1 and offset_groups == 1 and input.dtype == weight.dtype
            and input.dtype in (torch.float16, torch.bfloat16, torch.float32))


if triton is not None:

    @triton.jit
    def _deform_conv_kernel(x_ptr, offset_ptr, mask_ptr, weight_ptr, bias_ptr, scale_ptr, shift_ptr, out_ptr,
                            channels, height, width, out_channels, out_w, pixels, offset_stride_n, offset_stride_c,
                            offset_stride_p, mask_stride_n, mask_stride_c, mask_stride_p, out_stride_n, out_stride_c,
                            out_stride_p, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                            KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, HAS_MASK: tl.constexpr,
                            HAS_BIAS: tl.constexpr, AFFINE_RELU: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr):
        TAPS: tl.constexpr = KERNEL_H * KERNEL_W
        pid_p = tl.program_id(0)
        pid_o = tl.program_id(1)
        image = tl.program_id(2).to(tl.int64)
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
        p_ok = offs_p < pixels
        o_ok = offs_o < out_channels
        row = (offs_p // out_w).to(tl.float32) * stride_h - pad_h
        col = (offs_p % out_w).to(tl.float32) * stride_w - pad_w
        x_image = x_ptr + image * height * width * channels
        # offsets and mask in any layout whose pixels are one stride apart (contiguous or channels-last)
        offset_pixels = offset_ptr + image * offset_stride_n + offs_p.to(tl.int64) * offset_stride_p
        mask_pixels = mask_ptr + image * mask_stride_n + offs_p.to(tl.int64) * mask_stride_p
        acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
        for tap in range(TAPS):
            dy = tl.load(offset_pixels + (2 * tap) * offset_stride_c, mask=p_ok, other=0.0).to(tl.float32)
            dx = tl.load(offset_pixels + (2 * tap + 1) * offset_stride_c, mask=p_ok, other=0.0).to(tl.float32)
            y = row + (tap // KERNEL_W) * dil_h + dy
            x = col + (tap % KERNEL_W) * dil_w + dx
            inside = p_ok & (y > -1.0) & (x > -1.0) & (y < height) & (x < width)
            y0f = tl.floor(y)
            x0f = tl.floor(x)
            ly = y - y0f
            lx = x - x0f
            y0 = y0f.to(tl.int32)
            x0 = x0f.to(tl.int32)
            scale = tl.full((BLOCK_P,), 1.0, tl.float32)
            if HAS_MASK:
                scale = tl.load(mask_pixels + tap * mask_stride_c, mask=p_ok, other=0.0).to(tl.float32)
            # a corner outside the image counts as zero, as in torchvision
            w00 = tl.where(inside & (y0 >= 0) & (x0 >= 0), (1 - ly) * (1 - lx) * scale, 0.0)
            w01 = tl.where(inside & (y0 >= 0) & (x0 + 1 < width), (1 - ly) * lx * scale, 0.0)
            w10 = tl.where(inside & (y0 + 1 < height) & (x0 >= 0), ly * (1 - lx) * scale, 0.0)
            w11 = tl.where(inside & (y0 + 1 < height) & (x0 + 1 < width), ly * lx * scale, 0.0)
            a00 = y0 * width + x0
            for c0 in range(0, channels, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                c_ok = offs_c < channels
                # channels last: a pixel's block of channels is one contiguous read
                base = x_image + offs_c[None, :]
                ok = c_ok[None, :]
                sample = tl.load(base + a00[:, None] * channels, mask=ok & (w00 != 0)[:, None],
                                 other=0.0).to(tl.float32) * w00[:, None]
                sample += tl.load(base + (a00 + 1)[:, None] * channels, mask=ok & (w01 != 0)[:, None],
                                  other=0.0).to(tl.float32) * w01[:, None]
                sample += tl.load(base + (a00 + width)[:, None] * channels, mask=ok & (w10 != 0)[:, None],
                                  other=0.0).to(tl.float32) * w10[:, None]
                sample += tl.load(base + (a00 + width + 1)[:, None] * channels, mask=ok & (w11 != 0)[:, None],
                                  other=0.0).to(tl.float32) * w11[:, None]
                # weight as (taps, in, out): this tap's (BLOCK_C, BLOCK_O) slice, contiguous along out
                kernel = tl.load(weight_ptr + (tap * channels + offs_c[:, None]) * out_channels + offs_o[None, :],
                                 mask=c_ok[:, None] & o_ok[None, :], other=0.0)
                acc += tl.dot(sample.to(kernel.dtype), kernel, input_precision=PRECISION)
        if HAS_BIAS:  # here, not in a pass of its own over the output
            acc += tl.load(bias_ptr + offs_o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
        if AFFINE_RELU:  # a batch norm's per-channel scale and shift, then ReLU, on the float32 sums
            scale = tl.load(scale_ptr + offs_o, mask=o_ok, other=0.0).to(tl.float32)
            shift = tl.load(shift_ptr + offs_o, mask=o_ok, other=0.0).to(tl.float32)
            acc = tl.maximum(acc * scale[None, :] + shift[None, :], 0.0)
        out = (out_ptr + image * out_stride_n + offs_o[None, :].to(tl.int64) * out_stride_c
               + offs_p[:, None].to(tl.int64) * out_stride_p)
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & o_ok[None, :])

    # On a GPU the tile sizes are tuned once per shape (in the warm-up pass that precedes any CUDA graph capture):
    # BiRefNet's calls differ in kernel size (1 to 7) and output size (32 to 256 px), so one tiling fits few of
    # them. The timings are kept in Triton's cache (compiled.use_compile_cache), which a restart reads instead of
    # timing each configuration again. Each run writes the whole output, so the trial runs leave nothing behind.
    # The interpreter (CPU) runs the first configuration alone.
    _DEFORM_CONFIGS = [
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 32, "BLOCK_O": 128}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 64, "BLOCK_O": 128}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 32, "BLOCK_O": 256}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 32, "BLOCK_O": 128}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 64, "BLOCK_O": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 64, "BLOCK_O": 256}, num_warps=4, num_stages=2),
    ]
    # the offsets' and output's strides tell their layouts apart (channels-last, or a slice of a concatenation's
    # channels), whose best tiles may differ
    _deform_conv_tuned = triton.autotune(_DEFORM_CONFIGS,
                                         key=["channels", "out_channels", "pixels", "KERNEL_H", "offset_stride_p",
                                              "out_stride_c", "out_stride_p"],
                                         cache_results=True)(_deform_conv_kernel)


def triton_deform_conv2d(input: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                         bias: torch.Tensor | None, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                         dilation_h: int, dilation_w: int, use_mask: bool, *, channels_last: bool = False,
                         out: torch.Tensor | None = None,
                         affine_relu: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """torchvision::deform_conv2d's forward (its CUDA kernel's arguments) for one weight group and one offset group;
    with `channels_last`, the output in channels-last memory (the same values). With `out`, the result is written
    there instead (any tensor of the output's shape whose pixels of a channel are one stride apart: contiguous,
    channels-last, or a slice of channels of either). With `affine_relu` (scale, shift; one float32 value per
    output channel), the output is relu(result * scale + shift), computed on the float32 sums."""
    batch, channels, height, width = input.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = offset.shape[-2:]
    pixels = out_h * out_w
    if out is None:
        out = torch.empty(batch, out_channels, out_h, out_w, device=input.device, dtype=input.dtype,
                          memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if out.shape != (batch, out_channels, out_h, out_w) or out.stride(2) != out_w * out.stride(3):
        raise ValueError(f"out must be {(batch, out_channels, out_h, out_w)} with a channel's pixels one stride "
                         f"apart, got {tuple(out.shape)} with strides {out.stride()}")
    if out.numel() == 0:
        return out
    # Channels-last input and (taps, in, out) weights: one pass over each, so that every gather and weight read in
    # the kernel is contiguous along the dimension the threads run over.
    input = input.permute(0, 2, 3, 1).contiguous()
    weight = weight.permute(2, 3, 1, 0).contiguous()
    # offsets and masks are read in the layout they come in, not copied first: the compiled model hands them over
    # channels-last, as the convolutions that compute them write
    offset, offset_strides = _with_pixel_stride(offset)
    mask, mask_strides = (_with_pixel_stride(mask) if use_mask and mask is not None
                          else (offset, offset_strides))  # never read without use_mask
    has_bias = bias is not None and bias.numel() > 0
    bias = bias.contiguous() if bias is not None and has_bias else offset  # never read without HAS_BIAS
    scale, shift = ((affine_relu[0].float().contiguous(), affine_relu[1].float().contiguous()) if affine_relu
                    else (offset, offset))  # never read without AFFINE_RELU
    arguments = (input, offset, mask, weight, bias, scale, shift, out, channels, height, width, out_channels, out_w,
                 pixels, *offset_strides, *mask_strides, out.stride(0), out.stride(1), out.stride(3), stride_h,
                 stride_w, pad_h, pad_w, dilation_h, dilation_w)
    constants = {"KERNEL_H": kernel_h, "KERNEL_W": kernel_w, "HAS_MASK": use_mask, "HAS_BIAS": has_bias,
                 "AFFINE_RELU": affine_relu is not None,
                 "PRECISION": "ieee" if input.dtype == torch.float32 else "tf32"}
    if input.is_cuda:
        def grid(meta: dict) -> tuple[int, int, int]:
            return triton.cdiv(pixels, meta["BLOCK_P"]), triton.cdiv(out_channels, meta["BLOCK_O"]), batch
        _deform_conv_tuned[grid](*arguments, **constants)
    else:
        first = _DEFORM_CONFIGS[0]
        blocks = {**first.kwargs, "BLOCK_O": max(16, min(128, triton.next_power_of_2(out_channels)))}
        grid_cpu = (triton.cdiv(pixels, blocks["BLOCK_P"]), triton.cdiv(out_channels, blocks["BLOCK_O"]), batch)
        _deform_conv_kernel[grid_cpu](*arguments, **constants, **blocks, num_warps=first.num_warps,
                                      num_stages=first.num_stages)
    return out


def _with_pixel_stride(tensor: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(N, C, H, W) `tensor` and its image, channel and pixel strides; copied contiguous only where its pixels are not
    one stride apart (contiguous and channels-last tensors are read as they are)."""
    if tensor.shape[2] > 1 and tensor.stride(2) != tensor.shape[3] * tensor.stride(3):
        tensor = tensor.contiguous()
    return tensor, (tensor.stride(0), tensor.stride(1), tensor.stride(3))


def deform_conv2d(input: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  bias: torch.Tensor, stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int,
                  dilation_w: int, groups: int, offset_groups: int, use_mask: bool) -> torch.Tensor:
    """torchvision::deform_conv2d's kernel (its arguments, the same result): the Triton kernel where it applies on
    CUDA, else the `grid_sample` form."""
    if input.is_cuda and triton_deform_available(input, weight, groups, offset_groups):
        return triton_deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dilation_h,
                                    dilation_w, use_mask)
    return grid_sample_deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                                     dilation_h, dilation_w, groups, offset_groups, use_mask)


def _operator_taking_any_layout(function: Callable[..., torch.Tensor]) -> Any:
    """`function` as the custom operator of its name in serve_app, tagged `flexible_layout` where torch's custom_op
    takes tags (else inductor hands over the inputs in the layout they were traced in, and the kernel copies)."""
    name = f"serve_app::{function.__name__}"
    try:
        return torch.library.custom_op(name, mutates_args=(), tags=(torch.Tag.flexible_layout,))(function)
    except TypeError:  # pragma: no cover - torch versions whose custom_op takes no tags
        return torch.library.custom_op(name, mutates_args=())(function)


@_operator_taking_any_layout
def deform_conv2d_channels_last(input: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                                bias: torch.Tensor, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                                dilation_h: int, dilation_w: int, groups: int, offset_groups: int,
                                use_mask: bool) -> torch.Tensor:
    """torchvision::deform_conv2d (its arguments, the same values) with the output in channels-last memory, and any
    memory layout of the inputs (`flexible_layout`: the compiler hands them over as they are).

    The compiled model's convolutions run channels-last (inductor's layout choice) and torchvision's operator writes
    its output channels-first, so whatever reads both (BiRefNet's ASPP block concatenates a 1x1 convolution, three
    deformable ones and a pooled branch, each after a batch norm and a ReLU) reads one side across the grain. Here
    the Triton kernel writes its tiles channels-last instead; elsewhere torchvision's result is converted."""
    if input.is_cuda and triton_deform_available(input, weight, groups, offset_groups):
        return triton_deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                                    dilation_h, dilation_w, use_mask, channels_last=True)
    out = torch.ops.torchvision.deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                                              dilation_h, dilation_w, groups, offset_groups, use_mask)
    return out.contiguous(memory_format=torch.channels_last)


@deform_conv2d_channels_last.register_fake
def _deform_conv2d_channels_last_shape(input: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor,
                                       mask: torch.Tensor, bias: torch.Tensor, stride_h: int, stride_w: int,
                                       pad_h: int, pad_w: int, dilation_h: int, dilation_w: int, groups: int,
                                       offset_groups: int, use_mask: bool) -> torch.Tensor:
    shape = (input.shape[0], weight.shape[0], *offset.shape[-2:])
    return _empty_channels_last(input, shape)


def _concatenation_layout(inputs: list[torch.Tensor], weights: list[torch.Tensor], offsets: list[torch.Tensor],
                          others: list[torch.Tensor], order: list[int]) -> tuple[torch.Tensor, list[int]]:
    """An empty channels-last tensor for `deform_bn_relu_concat`'s result (the size of its first deformable
    branch's output), and each part's channel count in turn."""
    branch = next(b for b in order if b >= 0)
    batch, _, out_h, out_w = offsets[branch].shape
    channels = [weights[b].shape[0] if b >= 0 else others[-b - 1].shape[1] for b in order]
    return _empty_channels_last(inputs[branch], (batch, sum(channels), out_h, out_w)), channels


def _empty_channels_last(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised channels-last tensor of `shape`, `like`'s dtype and device, allocated so at once: an empty
    tensor made contiguous first and converted after costs a copy of the whole, on every call (a concatenation of
    five branches at the decoder's largest size is hundreds of MB a batch)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last)


@_operator_taking_any_layout
def deform_bn_relu_concat(inputs: list[torch.Tensor], weights: list[torch.Tensor], offsets: list[torch.Tensor],
                          masks: list[torch.Tensor], scales: list[torch.Tensor], shifts: list[torch.Tensor],
                          geometry: list[int], others: list[torch.Tensor], order: list[int]) -> torch.Tensor:
    """torch.cat(parts, dim=1) in channels-last memory, where part i of `order` is deformable branch b = order[i]
    (b >= 0): relu(deform_conv2d(inputs[b], weights[b], offsets[b], masks[b]) * scales[b] + shifts[b]), with
    stride, padding and dilation (h, w each) at geometry[6b:6b+6], one weight and one offset group; or
    others[-b - 1] (b < 0), copied in (one pixel of it broadcast over the whole: an upsampled pooled branch).

    BiRefNet's ASPP blocks concatenate four deformable convolutions, each after a batch norm and a ReLU, and a pooled
    branch, and a 1x1 convolution reads the concatenation. Compiled as written, one kernel reads the four outputs
    back to apply the batch norms and ReLUs and writes every channel of the concatenation again. Here the Triton
    kernel applies them to its float32 sums and writes each branch's tiles straight into its channels of the
    concatenation; elsewhere the deformable convolution runs as `deform_conv2d` would and is copied in."""
    out, channels = _concatenation_layout(inputs, weights, offsets, others, order)
    # the kernel reads its input channels-last: each distinct input converted once, not once per branch reading it
    last = {id(x): x.contiguous(memory_format=torch.channels_last) for x in inputs}
    start = 0
    for b, count in zip(order, channels, strict=True):
        target = out[:, start:start + count]
        start += count
        if b < 0:
            target.copy_(others[-b - 1])
            continue
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w = geometry[6 * b:6 * b + 6]
        x, weight, offset, mask = last[id(inputs[b])], weights[b], offsets[b], masks[b]
        if x.is_cuda and triton_deform_available(x, weight, 1, 1):
            triton_deform_conv2d(x, weight, offset, mask, None, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, True,
                                 out=target, affine_relu=(scales[b], shifts[b]))
            continue
        zeros = x.new_zeros(weight.shape[0])
        if x.is_cuda:  # the capturable form, as the model's other deformable convolutions take it
            result = deform_conv2d(x, weight, offset, mask, zeros, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, 1, 1,
                                   True)
        else:
            result = torch.ops.torchvision.deform_conv2d(x, weight, offset, mask, zeros, stride_h, stride_w, pad_h,
                                                         pad_w, dil_h, dil_w, 1, 1, True)
        target.copy_(torch.relu(result.float() * scales[b].float()[:, None, None] + shifts[b].float()[:, None, None]))
    return out


@deform_bn_relu_concat.register_fake
def _deform_bn_relu_concat_shape(inputs: list[torch.Tensor], weights: list[torch.Tensor],
                                 offsets: list[torch.Tensor], masks: list[torch.Tensor], scales: list[torch.Tensor],
                                 shifts: list[torch.Tensor], geometry: list[int], others: list[torch.Tensor],
                                 order: list[int]) -> torch.Tensor:
    return _concatenation_layout(inputs, weights, offsets, others, order)[0]

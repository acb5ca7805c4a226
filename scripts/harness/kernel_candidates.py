"""Kernel candidates for the model's deformable convolution, window attention and linear layers, measured by
scripts/bench_kernels.py against the kernels the service runs, kept outside the runtime until a measurement of the
whole model shows they pay.

The deformable convolution as one Triton kernel. The service's CUDA-graph path (`serve_app.model.deform_conv`)
computes torchvision's `deform_conv2d` from `grid_sample` and a matmul, which writes every sample (channels x taps x
output pixels: 3.3 GB in fp16 for one 7x7 decoder convolution of BiRefNet at 256x256 and batch 8) to memory, scales
it by the modulation mask in a second pass and reads it back for the product. Here each program takes a tile of
output pixels and of output channels; for each kernel tap and block of input channels it computes the four bilinear
corners' weights once, gathers the input there (channels last, so each pixel's block of channels is one contiguous
read) and feeds the weighted sum to `tl.dot`: the samples never leave the chip. Positions and weights are computed in
float32 and the products accumulate in float32, as torchvision's kernel and the matmul do. One weight group and one
offset group (BiRefNet's case).

Window attention through `flex_attention`: see `flex_window_attention`. The backbone's linear layers in FP8: see
`fp8_linear`.
"""

from __future__ import annotations

import functools

import torch

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
    def _deform_conv_kernel(x_ptr, offset_ptr, mask_ptr, weight_ptr, out_ptr, channels, height, width,
                            out_channels, out_w, pixels, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                            KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, HAS_MASK: tl.constexpr,
                            PRECISION: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                            BLOCK_O: tl.constexpr):
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
        offset_image = offset_ptr + image * 2 * TAPS * pixels
        mask_image = mask_ptr + image * TAPS * pixels
        acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
        for tap in range(TAPS):
            dy = tl.load(offset_image + (2 * tap) * pixels + offs_p, mask=p_ok, other=0.0).to(tl.float32)
            dx = tl.load(offset_image + (2 * tap + 1) * pixels + offs_p, mask=p_ok, other=0.0).to(tl.float32)
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
                scale = tl.load(mask_image + tap * pixels + offs_p, mask=p_ok, other=0.0).to(tl.float32)
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
        out = out_ptr + image * out_channels * pixels + offs_o[None, :].to(tl.int64) * pixels + offs_p[:, None]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & o_ok[None, :])

    # On a GPU the tile sizes are tuned once per shape (in the warm-up pass that precedes any CUDA graph capture):
    # BiRefNet's calls differ in kernel size (1 to 7) and output size (32 to 256 px), so one tiling fits few of
    # them. Each run writes the whole output, so the trial runs leave nothing behind. The interpreter (CPU) runs
    # the first configuration alone.
    _DEFORM_CONFIGS = [
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 32, "BLOCK_O": 128}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 64, "BLOCK_O": 128}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 32, "BLOCK_O": 256}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 32, "BLOCK_O": 128}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 64, "BLOCK_O": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 64, "BLOCK_O": 256}, num_warps=4, num_stages=2),
    ]
    _deform_conv_tuned = triton.autotune(_DEFORM_CONFIGS, key=["channels", "out_channels", "pixels", "KERNEL_H"])(
        _deform_conv_kernel)


def triton_deform_conv2d(input: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                         bias: torch.Tensor | None, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                         dilation_h: int, dilation_w: int, use_mask: bool) -> torch.Tensor:
    """torchvision::deform_conv2d's forward (its CUDA kernel's arguments) for one weight group and one offset group."""
    batch, channels, height, width = input.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = offset.shape[-2:]
    pixels = out_h * out_w
    out = torch.empty(batch, out_channels, out_h, out_w, device=input.device, dtype=input.dtype)
    if out.numel() == 0:
        return out
    # Channels-last input and (taps, in, out) weights: one pass over each, so that every gather and weight read in
    # the kernel is contiguous along the dimension the threads run over.
    input = input.permute(0, 2, 3, 1).contiguous()
    weight = weight.permute(2, 3, 1, 0).contiguous()
    offset = offset.contiguous()
    mask = mask.contiguous() if use_mask and mask is not None else offset  # never read without use_mask
    arguments = (input, offset, mask, weight, out, channels, height, width, out_channels, out_w, pixels, stride_h,
                 stride_w, pad_h, pad_w, dilation_h, dilation_w)
    constants = {"KERNEL_H": kernel_h, "KERNEL_W": kernel_w, "HAS_MASK": use_mask,
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
    if bias is not None and bias.numel():
        out += bias.view(1, out_channels, 1, 1).to(out.dtype)
    return out


def flex_window_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor,
                          mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Swin window attention, softmax(q k^T * scale + bias + mask) v per window, through `flex_attention`.

    `query`, `key`, `value` are (sequences, windows, heads, tokens, head_dim), the windows of all sequences in the
    order of the model's; `bias` (heads, tokens, tokens) is the relative-position bias, `mask` (per image, tokens,
    tokens) the shifted-window mask of one image's windows, or None. A sequence's windows become one sequence per
    head, and a block-diagonal block mask keeps every query to its own window, so the kernel reads the bias and mask
    by index per score instead of a (windows x heads x tokens x tokens) mask from memory, as the fused SDPA call
    does. A sequence may be an image's windows or any run of the batch's (window w of the batch takes the mask's
    window w modulo its count). Returns (sequences, windows, heads, tokens, head_dim).
    Call it compiled (`torch.compile`), as flex_attention is meant to run.
    """
    from torch.nn.attention.flex_attention import flex_attention

    sequences, windows, heads, tokens, head_dim = query.shape
    length = windows * tokens

    def as_sequence(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.permute(0, 2, 1, 3, 4).reshape(sequences, heads, length, head_dim)

    bias = bias.to(query.dtype)
    shift = mask.to(query.dtype) if mask is not None else None

    def score_mod(score, sequence, head, q_index, kv_index):
        q_token, kv_token = q_index % tokens, kv_index % tokens
        score = score + bias[head, q_token, kv_token]
        if shift is not None:
            score = score + shift[(sequence * windows + q_index // tokens) % shift.shape[0], q_token, kv_token]
        return score

    attended = flex_attention(as_sequence(query), as_sequence(key), as_sequence(value), score_mod=score_mod,
                              block_mask=_window_blocks(windows, tokens, query.device), scale=scale)
    return attended.view(sequences, heads, windows, tokens, head_dim).permute(0, 2, 1, 3, 4)


@functools.lru_cache(maxsize=64)
def _window_blocks(windows: int, tokens: int, device: torch.device):
    """The block mask of `windows` windows of `tokens` tokens each, laid end to end (each attends within itself)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_window(image, head, q_index, kv_index):
        return q_index // tokens == kv_index // tokens

    return create_block_mask(same_window, None, None, windows * tokens, windows * tokens, device=device)


FP8_MAX = 448.0  # the largest float8_e4m3fn value


def fp8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear layer's (out, in) weight as float8_e4m3fn with one float32 scale per output channel, (1, out)."""
    quantized, scale = _fp8_rows(weight)
    return quantized, scale.t().contiguous()


def _fp8_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`matrix` (rows, columns) as float8_e4m3fn, each row scaled to the format's range, and the float32 scales."""
    scale = matrix.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    # row-major whatever `matrix`'s layout: CUDA's _scaled_mm takes no other first operand
    return (matrix.float() / scale).to(torch.float8_e4m3fn).contiguous(), scale


def fp8_linear(x: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` with both operands in FP8 (e4m3) and a scale per row of `x` and per output
    channel, computed here for `x` (dynamic), accumulated in float32, returned in `x`'s dtype. Hopper's tensor cores
    run FP8 at twice their fp16 rate; the rows' scaling is elementwise work that inductor fuses when compiled.

    The product comes out in bfloat16, the one output type that torch's CUDA kernel for row-wise scales has long
    taken (some versions refuse float16 and float32 there), and the bias is added after the cast, in `x`'s dtype."""
    quantized, scale = _fp8_rows(x.reshape(-1, x.shape[-1]))
    out = torch._scaled_mm(quantized, weight_fp8.t(), scale_a=scale, scale_b=weight_scale,
                           out_dtype=torch.bfloat16).to(x.dtype)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], weight_fp8.shape[0])

"""Kernel candidates for the model's window attention and linear layers, measured by scripts/bench_kernels.py
against the kernels the service runs, kept outside the runtime until a measurement of the whole model shows they
pay.

Window attention through `flex_attention`: see `flex_window_attention`; the service's Triton kernel with each
window's keys and values read once: see `window_attention_keys_once`. The backbone's linear layers in FP8: see
`fp8_linear`.
"""

from __future__ import annotations

import functools

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch's CUDA wheels bring triton
    triton = None


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


if triton is not None:

    from serve_app.model.window_attention_triton import (
        attend_one_block,
        attend_two_blocks,
        key_block_scores,
        key_value_block,
        launch_window_attention,
    )

    @triton.jit
    def _keys_once_kernel(qkv_ptr, bias_ptr, mask_ptr, masked_ptr, out_ptr, tokens, channels, mask_windows, scale,
                          HEAD_DIM: tl.constexpr, HAS_MASK: tl.constexpr, SKIP_UNMASKED: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_N2: tl.constexpr, ADJACENT_BLOCKS: tl.constexpr):
        # the service kernel's arguments and pieces; keys in one block or two (BLOCK_N2), every mask row read
        # (masked unused), one program per window and head (ADJACENT_BLOCKS unused)
        window = tl.program_id(0).to(tl.int64)
        head = tl.program_id(1)
        offs_d = tl.arange(0, HEAD_DIM)
        row = 3 * channels
        rows = qkv_ptr + window * tokens * row + head * HEAD_DIM + offs_d[None, :]
        offs_n = tl.arange(0, BLOCK_N)
        key, value, n_ok = key_value_block(rows, offs_n, tokens, channels)
        if BLOCK_N2 > 0:  # the keys past the first block, read once too
            offs_n2 = BLOCK_N + tl.arange(0, BLOCK_N2)
            key2, value2, n2_ok = key_value_block(rows, offs_n2, tokens, channels)
        bias_rows = bias_ptr + head * tokens * tokens
        mask_rows = mask_ptr + (window % mask_windows) * tokens * tokens
        out_rows = out_ptr + window * tokens * channels + head * HEAD_DIM + offs_d[None, :]
        for start in range(0, tokens, BLOCK_M):
            offs_m = start + tl.arange(0, BLOCK_M)
            m_ok = offs_m < tokens
            query = tl.load(rows + offs_m[:, None] * row, mask=m_ok[:, None], other=0.0)
            scores = key_block_scores(query, key, bias_rows, mask_rows, offs_m, m_ok, offs_n, n_ok, tokens, scale, 1,
                                      HAS_MASK, PRECISION)
            if BLOCK_N2 > 0:
                scores2 = key_block_scores(query, key2, bias_rows, mask_rows, offs_m, m_ok, offs_n2, n2_ok, tokens,
                                           scale, 1, HAS_MASK, PRECISION)
                attended = attend_two_blocks(scores, value, scores2, value2, PRECISION)
            else:
                attended = attend_one_block(scores, value, PRECISION)
            tl.store(out_rows + offs_m[:, None] * channels, attended.to(out_ptr.dtype.element_ty), mask=m_ok[:, None])

    _KEYS_ONCE_CONFIGS = [triton.Config({"BLOCK_M": block}, num_warps=warps, num_stages=1)
                          for block, warps in ((32, 4), (16, 4), (64, 8), (32, 8))]
    _keys_once_tuned = triton.autotune(_KEYS_ONCE_CONFIGS, key=["tokens", "channels", "HAS_MASK", "BLOCK_N"])(
        _keys_once_kernel)


def window_attention_keys_once(qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, heads: int,
                               scale: float, *, split_keys: bool = False) -> torch.Tensor:
    """What `serve_app.model.window_attention_triton.triton_window_attention` computes (the same arguments), with
    one program per window and head that reads the window's keys and values once and walks its blocks of queries,
    and the shifted-window mask read in the model's precision: the service's kernel reads them again for every
    block of queries, its programs being (window, head, block of queries). `split_keys` as the service kernel's
    (keys in blocks of 128 and 16 for 144 tokens; off: one padded block)."""
    mask = mask.to(qkv.dtype) if mask is not None else None
    return launch_window_attention(_keys_once_tuned, _keys_once_kernel, _KEYS_ONCE_CONFIGS[0],
                                   lambda meta: (qkv.shape[0], heads), qkv, bias.to(qkv.dtype), mask, heads, scale,
                                   split_keys=split_keys, skip_unmasked=False)

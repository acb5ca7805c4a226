"""Swin window attention as one Triton kernel that reads the projections where the qkv layer wrote them.

The fused forward in `serve_app.model.attention` hands `scaled_dot_product_attention` the bias and the
shifted-window mask as one (windows x heads x tokens x tokens) mask: built in memory on every forward (120 MB in fp16
for BiRefNet's first stage at 1024x1024, per image), then read back for every image of the batch; its query, key and
value are copied out of the qkv layer's output into heads-first tensors, and its output copied back before the
projection. Here each program takes one window, one head and a block of its queries: it reads the query, key and
value rows straight from the qkv layer's (windows, tokens, 3 x channels) output, adds the head's bias (heads x
tokens x tokens, a few hundred kB that stay in cache) and the window's mask row by index, and writes its rows of the
(windows, tokens, channels) output that the projection reads. One window's keys fit in one block, or in two of
powers of two (BiRefNet's 12x12 windows: 128 and 16 keys, with no padded scores: `key_blocks`), so the softmax needs
no online rescaling. Scores and the softmax are float32; the products run on the tensor cores in the model's
precision, as the fused kernels' do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch's CUDA wheels bring triton; a CPU-only install may not
    triton = None

# Keys of one window in one block: windows larger than this take the fused scaled_dot_product_attention forward.
MAX_TOKENS = 512


def triton_window_attention_available(tokens: int, head_dim: int, dtype: torch.dtype) -> bool:
    """Whether `triton_window_attention` computes windows of `tokens` tokens with heads of `head_dim` channels."""
    # tl.dot takes power-of-two sizes of at least 16 along the head's channels.
    return (triton is not None and 0 < tokens <= MAX_TOKENS and 16 <= head_dim <= 256
            and head_dim & (head_dim - 1) == 0 and dtype in (torch.float16, torch.bfloat16, torch.float32))


def key_blocks(tokens: int) -> tuple[int, int]:
    """The sizes of the blocks a window's keys are computed in: (first, second), second 0 for one block.

    Triton's blocks are powers of two. 144 keys (12x12 windows) in one block of 256 compute 112 padded scores of
    every 256; in blocks of 128 and 16 they compute none. Two blocks are taken only where they compute less than one.
    """
    whole = max(16, 1 << (tokens - 1).bit_length())
    first = max(16, 1 << (tokens.bit_length() - 1))
    rest = tokens - first
    second = max(16, 1 << (rest - 1).bit_length()) if rest > 0 else 0
    return (first, second) if second and first + second < whole else (whole, 0)


if triton is not None:

    @triton.jit
    def key_value_block(rows, offs_n, tokens, channels):
        """One block of a window's keys and values (zeros past the window's tokens) and which of them are real."""
        n_ok = offs_n < tokens
        key = tl.load(rows + channels + offs_n[:, None] * (3 * channels), mask=n_ok[:, None], other=0.0)
        value = tl.load(rows + 2 * channels + offs_n[:, None] * (3 * channels), mask=n_ok[:, None], other=0.0)
        return key, value, n_ok

    @triton.jit
    def key_block_scores(query, key, bias_rows, mask_rows, offs_m, m_ok, offs_n, n_ok, tokens, scale, masked,
                         HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
        """q k^T * scale + bias (+ mask) for one block of a window's keys, -inf where the block runs past them."""
        scores = tl.dot(query, tl.trans(key), input_precision=PRECISION) * scale
        pairs = offs_m[:, None] * tokens + offs_n[None, :]
        both = m_ok[:, None] & n_ok[None, :]
        scores += tl.load(bias_rows + pairs, mask=both, other=0.0).to(tl.float32)
        if HAS_MASK:
            if masked != 0:  # 0 only for a window whose mask rows are all zeros (skip_unmasked)
                scores += tl.load(mask_rows + pairs, mask=both, other=0.0).to(tl.float32)
        return tl.where(n_ok[None, :], scores, float("-inf"))

    @triton.jit
    def attend_one_block(scores, value, PRECISION: tl.constexpr):
        """softmax(scores) v, in float32."""
        weights = tl.exp(scores - tl.max(scores, 1)[:, None])
        attended = tl.dot(weights.to(value.dtype), value, input_precision=PRECISION)
        return attended / tl.sum(weights, 1)[:, None]

    @triton.jit
    def attend_two_blocks(scores, value, scores2, value2, PRECISION: tl.constexpr):
        """One softmax over both blocks' scores, times their values, in float32."""
        top = tl.maximum(tl.max(scores, 1), tl.max(scores2, 1))
        weights = tl.exp(scores - top[:, None])
        weights2 = tl.exp(scores2 - top[:, None])
        attended = tl.dot(weights.to(value.dtype), value, input_precision=PRECISION)
        attended = tl.dot(weights2.to(value.dtype), value2, acc=attended, input_precision=PRECISION)
        return attended / (tl.sum(weights, 1) + tl.sum(weights2, 1))[:, None]

    @triton.jit
    def _window_attention_kernel(qkv_ptr, bias_ptr, mask_ptr, masked_ptr, out_ptr, tokens, channels, mask_windows,
                                 scale, HEAD_DIM: tl.constexpr, HAS_MASK: tl.constexpr, SKIP_UNMASKED: tl.constexpr,
                                 PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                 BLOCK_N2: tl.constexpr, ADJACENT_BLOCKS: tl.constexpr):
        if ADJACENT_BLOCKS:  # one axis, a window's heads and each head's blocks of queries in turn
            program = tl.program_id(0)
            query_blocks = tl.cdiv(tokens, BLOCK_M)
            heads = channels // HEAD_DIM
            block = program % query_blocks
            head = (program // query_blocks) % heads
            window = (program // (query_blocks * heads)).to(tl.int64)
        else:  # (window, head, block of queries), windows first
            window = tl.program_id(0).to(tl.int64)
            head = tl.program_id(1)
            block = tl.program_id(2)
        offs_m = block * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        m_ok = offs_m < tokens
        row = 3 * channels  # a token's query, key and value, each heads x HEAD_DIM
        rows = qkv_ptr + window * tokens * row + head * HEAD_DIM + offs_d[None, :]
        query = tl.load(rows + offs_m[:, None] * row, mask=m_ok[:, None], other=0.0)
        bias_rows = bias_ptr + head * tokens * tokens
        # the batch's windows are its images' windows in turn; the mask holds one image's
        image_window = window % mask_windows
        mask_rows = mask_ptr + image_window * tokens * tokens
        masked = 1  # read every mask row, unless the window's flag says they are all zeros
        if HAS_MASK and SKIP_UNMASKED:
            masked = tl.load(masked_ptr + image_window).to(tl.int32)
        offs_n = tl.arange(0, BLOCK_N)
        key, value, n_ok = key_value_block(rows, offs_n, tokens, channels)
        scores = key_block_scores(query, key, bias_rows, mask_rows, offs_m, m_ok, offs_n, n_ok, tokens, scale, masked,
                                  HAS_MASK, PRECISION)
        if BLOCK_N2 > 0:  # the keys past the first block, in a second: one softmax over both
            offs_n2 = BLOCK_N + tl.arange(0, BLOCK_N2)
            key2, value2, n2_ok = key_value_block(rows, offs_n2, tokens, channels)
            scores2 = key_block_scores(query, key2, bias_rows, mask_rows, offs_m, m_ok, offs_n2, n2_ok, tokens, scale,
                                       masked, HAS_MASK, PRECISION)
            attended = attend_two_blocks(scores, value, scores2, value2, PRECISION)
        else:
            attended = attend_one_block(scores, value, PRECISION)
        out = out_ptr + window * tokens * channels + offs_m[:, None] * channels + head * HEAD_DIM + offs_d[None, :]
        tl.store(out, attended.to(out_ptr.dtype.element_ty), mask=m_ok[:, None])

    # Tuned once per shape on a GPU, in the warm-up pass that precedes any CUDA graph capture (as the deformable
    # convolution's kernel is), and the timings kept in Triton's cache (compiled.use_compile_cache), which a restart
    # reads; each run writes the whole output. The interpreter (CPU) runs the first alone.
    _ATTENTION_CONFIGS = [
        triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=1),
        triton.Config({"BLOCK_M": 16}, num_warps=4, num_stages=1),
        triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=1),
        triton.Config({"BLOCK_M": 64}, num_warps=8, num_stages=1),
        triton.Config({"BLOCK_M": 32}, num_warps=2, num_stages=1),
    ]
    _window_attention_tuned = triton.autotune(
        _ATTENTION_CONFIGS, key=["tokens", "channels", "HAS_MASK", "SKIP_UNMASKED", "BLOCK_N", "ADJACENT_BLOCKS"],
        cache_results=True)(_window_attention_kernel)


def triton_window_attention(qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, heads: int,
                            scale: float, *, split_keys: bool = True, skip_unmasked: bool = False,
                            adjacent_blocks: bool = True) -> torch.Tensor:
    """softmax(q k^T * scale + bias + mask) v for every window and head, from the qkv layer's output.

    `qkv` is (windows, tokens, 3 x channels), each token's queries, keys and values in turn, each heads x head_dim
    (Swin's layout); `bias` is (heads, tokens, tokens); `mask` is (windows per image, tokens, tokens) or None, the
    windows of each image consecutive in `qkv`. Returns (windows, tokens, channels), each token's heads in turn.
    The same result either way, timed by scripts/bench_kernels.py: `split_keys` (on) computes the keys in
    `key_blocks`, else in one padded block; `skip_unmasked` (off) first finds the windows whose mask rows are all
    zeros (most of Swin's: only the shifted image's edges are split) and skips reading theirs. That pass costs more
    than it saves on BiRefNet's later stages, with 9 to 36 windows an image. `adjacent_blocks` (on) launches
    the programs of one window's heads and blocks of queries one after another, so that the later blocks of a
    head read its keys and values from the GPU's cache, where the first block's reads left them (FlashAttention
    orders its grid so too); off, the programs of one block of queries run for every window first, and a batch's
    keys and values (hundreds of MB) come from memory once per block of queries.
    """
    windows, tokens, _ = qkv.shape
    if adjacent_blocks:
        def grid(meta: dict) -> tuple[int, ...]:
            return (windows * heads * triton.cdiv(tokens, meta["BLOCK_M"]),)
    else:
        def grid(meta: dict) -> tuple[int, ...]:
            return (windows, heads, triton.cdiv(tokens, meta["BLOCK_M"]))
    return launch_window_attention(_window_attention_tuned, _window_attention_kernel, _ATTENTION_CONFIGS[0], grid,
                                   qkv, bias, mask, heads, scale, split_keys=split_keys, skip_unmasked=skip_unmasked,
                                   adjacent_blocks=adjacent_blocks)


def launch_window_attention(tuned: Any, kernel: Any, first: Any, grid: Callable[[dict], tuple[int, ...]],
                            qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, heads: int,
                            scale: float, *, split_keys: bool, skip_unmasked: bool,
                            adjacent_blocks: bool = False) -> torch.Tensor:
    """Run a window attention kernel with `_window_attention_kernel`'s arguments on `triton_window_attention`'s
    inputs: on a GPU its autotuned form `tuned` over `grid`, in the interpreter (CPU) `kernel` with the `first`
    configuration. Returns the (windows, tokens, channels) output."""
    windows, tokens, width = qkv.shape
    channels = width // 3
    qkv = qkv.contiguous()
    bias = bias.contiguous()
    out = torch.empty(windows, tokens, channels, device=qkv.device, dtype=qkv.dtype)
    if out.numel() == 0:
        return out
    shifted = mask.contiguous() if mask is not None else bias  # never read without HAS_MASK
    mask_windows = mask.shape[0] if mask is not None else 1
    skip = mask is not None and skip_unmasked
    # one pass over the mask here, instead of one per head and block of queries; never read without SKIP_UNMASKED
    masked = shifted.reshape(mask_windows, -1).ne(0).any(dim=1).to(torch.int8) if skip else bias
    block_n, block_n2 = key_blocks(tokens) if split_keys else (max(16, triton.next_power_of_2(tokens)), 0)
    arguments = (qkv, bias, shifted, masked, out, tokens, channels, mask_windows, float(scale))
    constants = {"HEAD_DIM": channels // heads, "HAS_MASK": mask is not None, "SKIP_UNMASKED": skip,
                 "PRECISION": "ieee" if qkv.dtype == torch.float32 else "tf32",
                 "BLOCK_N": block_n, "BLOCK_N2": block_n2, "ADJACENT_BLOCKS": adjacent_blocks}
    if qkv.is_cuda:
        tuned[grid](*arguments, **constants)
    else:
        kernel[grid(first.kwargs)](*arguments, **constants, **first.kwargs, num_warps=first.num_warps,
                                   num_stages=first.num_stages)
    return out


@torch.library.custom_op("serve_app::window_attention", mutates_args=())
def window_attention(qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, heads: int,
                     scale: float) -> torch.Tensor:
    """`triton_window_attention` as an operator: compiled graphs call it as it is, without tracing into Triton."""
    return triton_window_attention(qkv, bias, mask, heads, scale)


@window_attention.register_fake
def _window_attention_shape(qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, heads: int,
                            scale: float) -> torch.Tensor:
    return qkv.new_empty(qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3)

"""Swin window attention as one Triton kernel that reads the projections where the qkv layer wrote them.

The fused forward in `serve_app.model.attention` hands `scaled_dot_product_attention` the bias and the
shifted-window mask as one (windows x heads x tokens x tokens) mask: built in memory on every forward (120 MB in fp16
for BiRefNet's first stage at 1024x1024, per image), then read back for every image of the batch; its query, key and
value are copied out of the qkv layer's output into heads-first tensors, and its output copied back before the
projection. Here each program takes one window, one head and a block of its queries: it reads the query, key and
value rows straight from the qkv layer's (windows, tokens, 3 x channels) output, adds the head's bias (heads x
tokens x tokens, a few hundred kB that stay in cache) and the window's mask row by index, and writes its rows of the
(windows, tokens, channels) output that the projection reads. One window's keys fit in one block (144 tokens for
BiRefNet's 12x12 windows), so the softmax needs no online rescaling. Scores and the softmax are float32; the
products run on the tensor cores in the model's precision, as the fused kernels' do.
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


if triton is not None:

    @triton.jit
    def _window_attention_kernel(qkv_ptr, bias_ptr, mask_ptr, out_ptr, tokens, channels, mask_windows, scale,
                                 HEAD_DIM: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        window = tl.program_id(0).to(tl.int64)
        head = tl.program_id(1)
        offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        m_ok = offs_m < tokens
        n_ok = offs_n < tokens
        row = 3 * channels  # a token's query, key and value, each heads x HEAD_DIM
        rows = qkv_ptr + window * tokens * row + head * HEAD_DIM + offs_d[None, :]
        query = tl.load(rows + offs_m[:, None] * row, mask=m_ok[:, None], other=0.0)
        key = tl.load(rows + channels + offs_n[:, None] * row, mask=n_ok[:, None], other=0.0)
        value = tl.load(rows + 2 * channels + offs_n[:, None] * row, mask=n_ok[:, None], other=0.0)
        scores = tl.dot(query, tl.trans(key), input_precision=PRECISION) * scale
        pairs = offs_m[:, None] * tokens + offs_n[None, :]
        both = m_ok[:, None] & n_ok[None, :]
        scores += tl.load(bias_ptr + head * tokens * tokens + pairs, mask=both, other=0.0).to(tl.float32)
        if HAS_MASK:
            # the batch's windows are its images' windows in turn; the mask holds one image's
            shifted = mask_ptr + (window % mask_windows) * tokens * tokens
            scores += tl.load(shifted + pairs, mask=both, other=0.0).to(tl.float32)
        scores = tl.where(n_ok[None, :], scores, float("-inf"))
        weights = tl.exp(scores - tl.max(scores, 1)[:, None])
        attended = tl.dot(weights.to(value.dtype), value, input_precision=PRECISION) / tl.sum(weights, 1)[:, None]
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
    _window_attention_tuned = triton.autotune(_ATTENTION_CONFIGS, key=["tokens", "channels", "HAS_MASK"],
                                              cache_results=True)(_window_attention_kernel)


def triton_window_attention(qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, heads: int,
                            scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + bias + mask) v for every window and head, from the qkv layer's output.

    `qkv` is (windows, tokens, 3 x channels), each token's queries, keys and values in turn, each heads x head_dim
    (Swin's layout); `bias` is (heads, tokens, tokens); `mask` is (windows per image, tokens, tokens) or None, the
    windows of each image consecutive in `qkv`. Returns (windows, tokens, channels), each token's heads in turn.
    """
    windows, tokens, _ = qkv.shape
    return launch_window_attention(_window_attention_tuned, _window_attention_kernel, _ATTENTION_CONFIGS[0],
                                   lambda meta: (windows, heads, triton.cdiv(tokens, meta["BLOCK_M"])),
                                   qkv, bias, mask, heads, scale)


def launch_window_attention(tuned: Any, kernel: Any, first: Any, grid: Callable[[dict], tuple[int, ...]],
                            qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, heads: int,
                            scale: float) -> torch.Tensor:
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
    arguments = (qkv, bias, shifted, out, tokens, channels, mask_windows, float(scale))
    constants = {"HEAD_DIM": channels // heads, "HAS_MASK": mask is not None,
                 "PRECISION": "ieee" if qkv.dtype == torch.float32 else "tf32",
                 "BLOCK_N": max(16, triton.next_power_of_2(tokens))}
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

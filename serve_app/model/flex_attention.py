"""Swin window attention through `flex_attention`, for compiled executions.

The service's fused forward (serve_app/model/attention.py) hands each image's windows to one
`scaled_dot_product_attention` call with a (windows x heads x tokens x tokens) mask of the relative-position bias
and the shifted-window mask, which the kernel reads from memory for every score. Here runs of windows become one
`flex_attention` sequence per head; a block-diagonal block mask keeps every query to its own window, and the bias and
mask are read by index per score inside the kernel. flex_attention is a compiler template: run eagerly it computes
every score of a sequence, windows apart included, so the layers run the fused forward wherever they are not being
compiled (an eager execution, or a compiled one's eager passes while its buckets load).
"""

from __future__ import annotations

import functools
import types
from math import gcd
from typing import Any

import torch

from serve_app.model.attention import _fused_window_attention, window_attention_layers

# Windows per flex_attention sequence at most: 8 of 144 tokens are 9 of its 128-token blocks, and a block mask of
# that length is cheap enough to build inside every compiled forward.
_WINDOWS_PER_SEQUENCE = 8


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


def flex_window_attention_layers(module: torch.nn.Module, *, eager: bool = False) -> int:
    """Give every Swin window attention layer of `module` the flex_attention forward; how many.

    The forward runs flex_attention where it is compiled, and the service's fused attention where it runs eagerly
    (a compiled execution serves the eager forward until its buckets load): run eagerly, flex_attention computes
    every score of its sequences, windows apart included. With `eager`, flex_attention runs eagerly too (a check
    on small inputs)."""
    layers = window_attention_layers(module)
    for layer in layers:
        layer._flex_eager = eager  # type: ignore[assignment]
        layer.forward = types.MethodType(_flex_forward, layer)
        # A saved compiled bucket finds the bound method by this name on the layer's class.
        type(layer)._flex_forward = _flex_forward  # type: ignore[attr-defined]
    return len(layers)


def _flex_forward(self: Any, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """What serve_app.model.attention's fused forward computes, through flex_window_attention: `x` is (windows,
    tokens, channels), each image's windows consecutive; `mask` is (windows per image, tokens, tokens) or None."""
    if not (self._flex_eager or torch.compiler.is_compiling()):
        return _fused_window_attention(self, x, mask)
    windows, tokens, channels = x.shape
    heads = self.num_heads
    # Runs of windows as flex_attention's sequences, of any count that divides the batch's windows: a run may span
    # two images, since window w of the batch takes the shifted-window mask's window w modulo its count.
    run = gcd(_WINDOWS_PER_SEQUENCE, windows)
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
    bias = bias.view(tokens, tokens, heads).permute(2, 0, 1)  # (heads, tokens, tokens)
    qkv = self.qkv(x).view(windows // run, run, tokens, 3, heads, channels // heads)
    query, key, value = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (sequences, run, heads, tokens, head_dim)
    attended = flex_window_attention(query, key, value, bias, mask, self.scale)
    return self.proj_drop(self.proj(attended.permute(0, 1, 3, 2, 4).reshape(windows, tokens, channels)))

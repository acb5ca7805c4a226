"""Attention masks that PyTorch's fused attention kernels can read.

`scaled_dot_product_attention` runs a fused kernel (memory-efficient, cuDNN, flash) only if the mask's last
dimension is contiguous; otherwise it falls back to the math kernel, which multiplies full score matrices and, in
fp16/bf16, upcasts them to fp32 first. BiRefNet's Swin backbone builds its mask from a permuted relative-position
bias table (last-dimension stride = heads), so all 48 of its attention calls per forward take the math path,
several times slower than a fused kernel with the mask made contiguous. Copying the mask is cheap next to that,
and the model's code stays as published.

The Hub's copy of that code (BiRefNet's repositories and RMBG-2.0's) never calls the fused kernels at all: its
Swin attention is written out as matmul, bias, mask and softmax, and its `SDPA_enabled` branch, off there, drops
the relative-position bias and the shifted-window mask, so it cannot simply be switched on. `fuse_window_attention`
gives each such layer a forward that computes the same attention, bias and mask included, in one
`scaled_dot_product_attention` call, leaving the downloaded file and the weights as they are.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_MASK_POSITION = 3  # scaled_dot_product_attention(query, key, value, attn_mask, ...)


class ContiguousAttentionMasks(TorchFunctionMode):
    """While active, every `scaled_dot_product_attention` call gets its mask with a contiguous last dimension.

    A torch function mode, so it also applies inside `torch.compile` (traced into the graph) and CUDA graph
    capture; every other call passes through untouched.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            if len(args) > _MASK_POSITION:
                args = (*args[:_MASK_POSITION], _readable(args[_MASK_POSITION]), *args[_MASK_POSITION + 1 :])
            elif kwargs.get("attn_mask") is not None:
                kwargs = {**kwargs, "attn_mask": _readable(kwargs["attn_mask"])}
        return func(*args, **kwargs)


def _readable(mask: Any) -> Any:
    if mask is None or mask.dim() == 0 or mask.stride(-1) == 1:
        return mask
    return mask.contiguous()


# What a Swin-style window attention layer holds: it qualifies for the fused forward only with all of them.
_WINDOW_ATTENTION_PARTS = ("qkv", "proj", "proj_drop", "num_heads", "scale", "relative_position_bias_table",
                           "relative_position_index")


def window_attention_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Every Swin-style window attention layer of `module`."""
    return [layer for layer in module.modules() if all(hasattr(layer, part) for part in _WINDOW_ATTENTION_PARTS)]


def fuse_window_attention(module: torch.nn.Module) -> int:
    """Run every window attention layer of `module` through `scaled_dot_product_attention`; returns how many."""
    layers = window_attention_layers(module)
    for layer in layers:
        layer.forward = types.MethodType(_fused_window_attention, layer)
        # A saved compiled model (serve_app/model/compiled.py) pickles this bound method as
        # getattr(layer, "_fused_window_attention"): the name must resolve on the layer's class.
        type(layer)._fused_window_attention = _fused_window_attention  # type: ignore[attr-defined]
    return len(layers)


def _fused_window_attention(self: Any, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias + mask) v per window, as the written-out form computes it (eval mode: no dropout).

    `x` is (windows, tokens, channels) with the windows of each image consecutive; `mask` is (windows per image,
    tokens, tokens) or None. Each image's windows are laid out as heads of one attention call, so the bias and mask,
    shared by every image, broadcast over the batch instead of being copied once per image.
    """
    windows, tokens, channels = x.shape
    heads = self.num_heads
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
    bias = bias.view(tokens, tokens, heads).permute(2, 0, 1)  # (heads, tokens, tokens)
    groups = 1 if mask is None else mask.shape[0]
    attn_mask = bias.unsqueeze(0) if mask is None else bias.unsqueeze(0) + mask.unsqueeze(1)
    attn_mask = attn_mask.reshape(1, groups * heads, tokens, tokens).to(x.dtype)
    qkv = self.qkv(x).view(windows // groups, groups, tokens, 3, heads, channels // heads)
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, windows // groups, groups * heads, tokens, -1).unbind(0)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
    attended = attended.view(windows // groups, groups, heads, tokens, -1).permute(0, 1, 3, 2, 4)
    return self.proj_drop(self.proj(attended.reshape(windows, tokens, channels)))

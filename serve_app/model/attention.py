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
gives each such layer a forward that computes the same attention, bias and mask included, in one kernel, leaving
the downloaded file and the weights as they are: on CUDA by default the Triton kernel of
`serve_app.model.window_attention_triton`, which reads the bias and mask by index instead of a mask tensor built for
every call, and elsewhere one `scaled_dot_product_attention` call.
"""

from __future__ import annotations

import functools
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


WINDOW_ATTENTION_KERNELS = ("triton", "sdpa")


def fuse_window_attention(module: torch.nn.Module, kernel: str = "sdpa") -> int:
    """Run every window attention layer of `module` in one kernel; returns how many.

    `kernel` "sdpa": one `scaled_dot_product_attention` call per layer. "triton": on CUDA, the Triton kernel of
    `serve_app.model.window_attention_triton`, which reads the bias and mask by index and the projections where the
    qkv layer wrote them; elsewhere, and for windows or heads it does not take, the "sdpa" forward.
    """
    if kernel not in WINDOW_ATTENTION_KERNELS:
        raise ValueError(f"unknown window attention kernel {kernel!r}: choose {' or '.join(WINDOW_ATTENTION_KERNELS)}")
    forward = _KERNEL_FORWARDS[kernel]
    if kernel == "triton":
        from serve_app.model import window_attention_triton  # noqa: F401  (registers serve_app::window_attention)
    layers = window_attention_layers(module)
    for layer in layers:
        # A partial, not a bound method: a saved compiled model (serve_app/model/compiled.py) pickles the layers
        # it guards on, and a bound method pickles as a lookup of the function's name on the layer's class, which
        # a process that loads the same remote code from another directory (another module name) never patched.
        layer.forward = functools.partial(forward, layer)
    return len(layers)


def layer_forward_name(layer: torch.nn.Module) -> str | None:
    """The name of the forward given to `layer` itself (`fuse_window_attention`), or None if it runs its class's."""
    forward = layer.__dict__.get("forward")
    if forward is None:
        return None
    return getattr(getattr(forward, "func", forward), "__name__", "?")


def fused_attention_kernel(module: torch.nn.Module) -> str | None:
    """Which kernel `module`'s window attention layers run ("triton", "sdpa"), or None if they keep their own."""
    names = {layer_forward_name(layer) for layer in window_attention_layers(module)}
    kernels = {forward.__name__: kernel for kernel, forward in _KERNEL_FORWARDS.items()}
    found = sorted(kernels[name] for name in names if name in kernels)
    return found[0] if found else None


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


def _triton_window_attention(self: Any, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """What `_fused_window_attention` computes, through the Triton kernel on CUDA (see `fuse_window_attention`)."""
    from serve_app.model.window_attention_triton import triton_window_attention_available

    windows, tokens, channels = x.shape
    heads = self.num_heads
    if not (x.is_cuda and triton_window_attention_available(tokens, channels // heads, x.dtype)):
        return _fused_window_attention(self, x, mask)
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
    # (heads, tokens, tokens), laid out here, where inductor makes it in the kernel that gathers it: the operator
    # would otherwise copy the permuted view on every call, outside the compiled graph
    bias = bias.view(tokens, tokens, heads).permute(2, 0, 1).to(x.dtype).contiguous()
    attended = torch.ops.serve_app.window_attention(self.qkv(x), bias, mask, heads, float(self.scale))
    return self.proj_drop(self.proj(attended))


# The forward each WINDOW_ATTENTION_KERNELS choice gives the layers (and, by its name, which one a layer runs).
_KERNEL_FORWARDS = {"triton": _triton_window_attention, "sdpa": _fused_window_attention}

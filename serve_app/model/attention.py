"""Attention masks that PyTorch's fused attention kernels can read.

`scaled_dot_product_attention` runs a fused kernel (memory-efficient, cuDNN, flash) only if the mask's last
dimension is contiguous; otherwise it falls back to the math kernel, which multiplies full score matrices and, in
fp16/bf16, upcasts them to fp32 first. BiRefNet's Swin backbone builds its mask from a permuted relative-position
bias table (last-dimension stride = heads), so all 48 of its attention calls per forward took the math path:
14.6 ms per call against 2.3 ms with the mask made contiguous (H100, batch 8, docs/benchmarks/README.md).
Copying the mask is cheap next to that, and the model's code stays as published.
"""

from __future__ import annotations

from typing import Any

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

"""Attention masks reach scaled_dot_product_attention in a layout its fused kernels accept.

A Swin-style module builds its mask by permuting a bias table (last-dimension stride = heads, as BiRefNet's
backbone does); PyTorch then silently takes the slow math kernel. The model core hands such masks over contiguous,
in eager and in compiled execution, without changing the answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch.overrides import TorchFunctionMode

from serve_app.model.attention import ContiguousAttentionMasks
from serve_app.model.core import BackgroundRemovalModel

HEADS, TOKENS = 2, 16  # tokens of a 4x4 feature map


class SwinLikeSegmenter(torch.nn.Module):
    """Image -> (B, 1, 4, 4) logits through one window attention whose bias comes from a permuted table."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 8 * HEADS, kernel_size=16, stride=16)  # 64x64 -> 4x4 tokens
        self.bias_table = torch.nn.Parameter(torch.randn(TOKENS, TOKENS, HEADS))
        self.head = torch.nn.Linear(8 * HEADS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, N, C)
        batch = tokens.shape[0]
        q = tokens.view(batch, TOKENS, HEADS, 8).transpose(1, 2)
        bias = self.bias_table.permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N), last-dimension stride HEADS
        out = F.scaled_dot_product_attention(q, q, q, attn_mask=bias)
        logits = self.head(out.transpose(1, 2).reshape(batch, TOKENS, 8 * HEADS))
        return logits.transpose(1, 2).reshape(batch, 1, 4, 4)


class MaskStrides(TorchFunctionMode):
    """Records the last-dimension stride of every mask that reaches scaled_dot_product_attention."""

    def __init__(self) -> None:
        super().__init__()
        self.strides: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            self.strides.append(mask.stride(-1))
        return func(*args, **kwargs)


def model(execution: str, contiguous_masks: bool, cache_dir: Path) -> BackgroundRemovalModel:
    torch.manual_seed(0)
    return BackgroundRemovalModel(SwinLikeSegmenter(), input_size=(64, 64), device=torch.device("cpu"),
                                  precision="fp32", execution=execution, graph_batch_sizes=(2,),
                                  compile_cache_dir=cache_dir, contiguous_attention_masks=contiguous_masks)


def test_the_mask_reaches_attention_contiguous_and_the_masks_do_not_change(tmp_path: Path) -> None:
    images = [np.random.default_rng(i).integers(0, 256, (40 + i, 50, 3), dtype=np.uint8) for i in range(2)]
    spy = MaskStrides()
    with spy:  # outermost: sees each call after the model core's mode has handled it
        plain = model("eager", False, tmp_path).predict(images)
        fixed = model("eager", True, tmp_path).predict(images)
    assert spy.strides == [HEADS, 1]
    for a, b in zip(plain, fixed, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("positional", [False, True])
def test_positional_and_keyword_masks_are_both_made_contiguous(positional: bool) -> None:
    q = torch.randn(3, HEADS, TOKENS, 8)
    mask = torch.randn(TOKENS, TOKENS, HEADS).permute(2, 0, 1)
    spy = MaskStrides()
    with spy, ContiguousAttentionMasks():
        out = (F.scaled_dot_product_attention(q, q, q, mask) if positional
               else F.scaled_dot_product_attention(q, q, q, attn_mask=mask))
    assert spy.strides == [1]
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, attn_mask=mask.contiguous()))


def test_compiled_execution_traces_the_mode_into_one_graph(tmp_path: Path) -> None:
    eager = model("eager", True, tmp_path)
    breaks = sum(counters["graph_break"].values())
    compiled = model("compiled", True, tmp_path / "cache")
    assert compiled.execution == "compiled"  # compiling did not fail over to eager
    assert sum(counters["graph_break"].values()) == breaks  # the mode did not split the graph
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(compiled.forward(batch), eager.forward(batch), rtol=1e-4, atol=1e-4)

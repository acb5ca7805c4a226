"""The window attention's Triton kernel (serve_app/model/window_attention_triton.py) computes what a Swin window
attention layer writes out, here through Triton's interpreter on the CPU, and the setting that puts it in the model
names it."""

from __future__ import annotations

import pytest
import torch

from serve_app.model.attention import fuse_window_attention, fused_attention_kernel
from serve_app.model.window_attention_triton import key_blocks
from serve_app.settings import ModelSettings
from tests.helpers import triton_interpreter_results
from tests.hub_layout.modeling_cutout_net import WindowAttention

TRITON_ATTENTION = """
import json, torch
from serve_app.model.window_attention_triton import (triton_window_attention, triton_window_attention_available,
                                                     window_attention)
from tests.hub_layout.modeling_cutout_net import WindowAttention
generator = torch.Generator().manual_seed(0)
results = {}
cases = {  # name: (images, windows per image, window side, heads, head_dim, shifted, dtype)
    "shifted windows, fp32": (2, 4, 4, 2, 16, True, torch.float32),
    "BiRefNet's 12x12 windows, fp16": (2, 2, 12, 2, 32, True, torch.float16),
    "no mask, 5x5 windows, fp32": (3, 1, 5, 3, 16, False, torch.float32),
}
for name, (images, windows, side, heads, head_dim, shifted, dtype) in cases.items():
    tokens = side * side
    layer = WindowAttention(heads * head_dim, heads, side)
    with torch.no_grad():
        layer.relative_position_bias_table.normal_(0, 1, generator=generator)
    x = torch.randn(images * windows, tokens, heads * head_dim, generator=generator)
    mask = None
    if shifted:  # Swin's mask: 0 within a region of the shifted window, -100 across two
        regions = torch.randint(0, 3, (windows, tokens), generator=generator)
        regions[0] = 1  # a window inside one region, whose mask rows are all zeros (as most of Swin's are)
        mask = (regions[:, :, None] != regions[:, None, :]).float() * -100.0
    with torch.no_grad():
        expected = type(layer).forward(layer.double(), x.double(), None if mask is None else mask.double())
        layer.to(dtype)
        assert triton_window_attention_available(tokens, head_dim, dtype)
        bias = layer.relative_position_bias_table[layer.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, heads).permute(2, 0, 1)
        qkv = layer.qkv(x.to(dtype))
        got = layer.proj(window_attention(qkv, bias, mask, heads, float(layer.scale)))
        # the other ways the kernel computes the same: keys in one padded block, all-zero mask rows skipped, every
        # window of a block of queries launched first
        others = {"one key block": {"split_keys": False}, "zero mask rows skipped": {"skip_unmasked": True},
                  "every window first": {"adjacent_blocks": False}}
        others = {f"{name}, {how}": layer.proj(triton_window_attention(qkv, bias, mask, heads, float(layer.scale),
                                                                       **how_kwargs))
                  for how, how_kwargs in others.items()}
    assert got.dtype == dtype and got.shape == expected.shape, (got.dtype, got.shape)
    for label, output in {name: got, **others}.items():
        results[label] = [float((output.double() - expected).abs().max()), float(expected.abs().max())]
qkv = torch.randn(4, 16, 3 * 32, generator=generator)
torch.library.opcheck(window_attention, (qkv, torch.randn(2, 16, 16), torch.zeros(2, 16, 16), 2, 0.25))
print(json.dumps(results))
"""


def test_the_triton_window_attention_matches_the_written_out_layer() -> None:
    pytest.importorskip("triton")
    results = triton_interpreter_results(TRITON_ATTENTION)
    assert len(results) == 12
    for name, (difference, scale) in results.items():
        # fp16 rounds the inputs, the softmax's weights and the output; float32 computes in float32
        tolerance = 2e-2 * max(scale, 1.0) if "fp16" in name else 1e-4 * max(scale, 1.0)
        assert difference <= tolerance, (name, difference, scale)


def test_a_windows_keys_are_computed_in_blocks_that_pad_the_least() -> None:
    assert key_blocks(144) == (128, 16)  # BiRefNet's 12x12 windows: no padded key, where one block pads 112
    assert key_blocks(160) == (128, 32)
    assert key_blocks(49) == (64, 0)  # 32 + 32 pads as much as 64
    assert key_blocks(200) == (256, 0)
    assert key_blocks(256) == (256, 0)
    assert key_blocks(16) == (16, 0)
    assert key_blocks(4) == (16, 0)  # tl.dot takes blocks of at least 16
    for tokens in range(1, 513):
        first, second = key_blocks(tokens)
        assert first + second >= tokens and first >= 16 and second in (0,) + tuple(2 ** n for n in range(4, 10))


def test_the_triton_forward_off_cuda_is_the_fused_attention() -> None:
    generator = torch.Generator().manual_seed(1)
    layer = WindowAttention(32, 2, 4)
    with torch.no_grad():
        layer.relative_position_bias_table.normal_(0, 1, generator=generator)
    x = torch.randn(4, 16, 32, generator=generator)
    regions = torch.randint(0, 3, (2, 16), generator=generator)
    mask = (regions[:, :, None] != regions[:, None, :]).float() * -100.0
    with torch.no_grad():
        expected = type(layer).forward(layer, x, mask)
        assert fuse_window_attention(layer, "triton") == 1
        assert fused_attention_kernel(layer) == "triton"
        assert torch.allclose(layer(x, mask), expected, rtol=1e-5, atol=1e-5)


def test_the_setting_names_the_kernel_and_refuses_others() -> None:
    assert ModelSettings(model_id="m").window_attention_kernel == "triton"
    assert ModelSettings(model_id="m", window_attention_kernel="sdpa").window_attention_kernel == "sdpa"
    with pytest.raises(ValueError):
        ModelSettings(model_id="m", window_attention_kernel="flex")
    with pytest.raises(ValueError, match="choose triton or sdpa"):
        fuse_window_attention(WindowAttention(32, 2, 4), "flex")
    layer = WindowAttention(32, 2, 4)
    assert fused_attention_kernel(layer) is None
    fuse_window_attention(layer)
    assert fused_attention_kernel(layer) == "sdpa"


"""The Triton kernels on the GPU: the window attention's at BiRefNet's window and head sizes gives what the fused
`scaled_dot_product_attention` forward gives, eagerly and inside a compiled, CUDA-graph-replayed function, and a
restarted process reads the kernels' tunings from the compile cache instead of timing them again. Skipped
without CUDA (tests/unit runs the same kernels through Triton's interpreter).

    .venv/bin/python -m pytest -n 0 -m gpu tests/gpu/test_triton_kernels.py
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from serve_app.model.attention import fuse_window_attention
from serve_app.model.window_attention_triton import triton_window_attention
from tests.hub_layout.modeling_cutout_net import WindowAttention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize(("dim", "heads", "windows", "shifted"), [(192, 6, 16, True), (768, 24, 4, False)])
def test_the_triton_window_attention_gives_the_fused_attention(dim: int, heads: int, windows: int,
                                                               shifted: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    layer = WindowAttention(dim, heads, 12)
    with torch.no_grad():
        layer.relative_position_bias_table.normal_(0, 1, generator=generator)
    layer = layer.cuda().half().eval()
    x = torch.randn(2 * windows, 144, dim, generator=generator).cuda().half()
    regions = torch.randint(0, 3, (windows, 144), generator=generator)
    regions[0] = 1  # a window inside one region, whose mask rows are all zeros (as most of Swin's are)
    mask = ((regions[:, :, None] != regions[:, None, :]).float() * -100.0).cuda() if shifted else None
    sdpa, triton = copy.deepcopy(layer), copy.deepcopy(layer)
    fuse_window_attention(sdpa, "sdpa")
    fuse_window_attention(triton, "triton")
    with torch.inference_mode():
        expected = sdpa(x, mask).float()
        assert torch.allclose(triton(x, mask).float(), expected, atol=2e-2, rtol=2e-2)
        # the kernel's other launch forms, compiled for the GPU rather than interpreted
        qkv = layer.qkv(x)
        bias = layer.relative_position_bias_table[layer.relative_position_index.view(-1)]
        bias = bias.view(144, 144, heads).permute(2, 0, 1).contiguous()
        for how in ({"adjacent_blocks": False}, {"adjacent_blocks": False, "split_keys": False}):
            other = layer.proj(triton_window_attention(qkv, bias, mask, heads, float(layer.scale), **how)).float()
            assert torch.allclose(other, expected, atol=2e-2, rtol=2e-2), how
        compiled = torch.compile(triton, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):  # warm-up, capture, replay
            replayed = compiled(x, mask).float().clone()
        assert torch.allclose(replayed, expected, atol=2e-2, rtol=2e-2)


# One process start: the attention at two shapes, in a model whose compile cache is argv[1]; prints whether each
# shape's tile sizes were timed here (Triton's autotuner records bench_time only when it times them).
_START = """
import json, sys
from pathlib import Path
import torch
from serve_app.model import compiled, window_attention_triton as kernels
compiled.use_compile_cache(Path(sys.argv[1]), torch.device("cuda"))
timed = []
for windows, dim, heads in ((16, 192, 6), (4, 768, 24)):
    kernels._window_attention_tuned.bench_time = None
    qkv = torch.randn(windows, 144, 3 * dim, device="cuda", dtype=torch.half)
    bias = torch.randn(heads, 144, 144, device="cuda", dtype=torch.half)
    kernels.triton_window_attention(qkv, bias, None, heads, 0.125)
    timed.append(kernels._window_attention_tuned.bench_time is not None)
print(json.dumps(timed))
"""


def test_a_restart_reads_the_kernel_tunings_from_the_compile_cache(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_CACHE_DIR"}

    def start() -> list[bool]:
        run = subprocess.run([sys.executable, "-c", _START, str(tmp_path)], capture_output=True, text=True,
                             env=env, timeout=300, check=True)
        return json.loads(run.stdout.strip().splitlines()[-1])

    assert start() == [True, True]  # first start: every shape timed
    assert list(tmp_path.glob("triton/0/**/*.autotune.json"))
    assert start() == [False, False]  # restart: read from the cache


def test_the_deformable_branches_write_batch_norm_and_relu_into_their_concatenation() -> None:
    import torchvision  # noqa: F401  (its operators)

    from serve_app.model import deform_triton  # noqa: F401  (serve_app::deform_bn_relu_concat)

    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 64, 32, 32, device="cuda", generator=generator).half()
    columns: dict[str, list] = {name: [] for name in ("weights", "offsets", "masks", "scales", "shifts")}
    geometry: list[int] = []
    expected = []
    for kernel in (1, 1, 3, 7):  # BiRefNet's ASPP branches, 256 channels each
        pad = kernel // 2
        weight = (torch.randn(256, 64, kernel, kernel, device="cuda", generator=generator) * 0.05).half()
        offset = (torch.randn(2, 2 * kernel * kernel, 32, 32, device="cuda", generator=generator) * 2).half()
        mask = torch.rand(2, kernel * kernel, 32, 32, device="cuda", generator=generator).half() * 2
        scale = torch.rand(256, device="cuda", generator=generator) + 0.5
        shift = torch.randn(256, device="cuda", generator=generator)
        sums = torch.ops.torchvision.deform_conv2d(x.float(), weight.float(), offset.float(), mask.float(),
                                                   torch.zeros(256, device="cuda"), 1, 1, pad, pad, 1, 1, 1, 1, True)
        expected.append(torch.relu(sums * scale[:, None, None] + shift[:, None, None]))
        # channels-last, as the compiled model's convolutions write the offsets and masks it hands over
        offset, mask = (t.contiguous(memory_format=torch.channels_last) for t in (offset, mask))
        for name, value in zip(columns, (weight, offset, mask, scale, shift), strict=True):
            columns[name].append(value)
        geometry += [1, 1, pad, pad, 1, 1]
    pooled = torch.randn(2, 256, 32, 32, device="cuda", generator=generator).half()
    got = torch.ops.serve_app.deform_bn_relu_concat([x] * 4, *columns.values(), geometry, [pooled],
                                                    [0, 1, 2, 3, -1])
    reference = torch.cat([*expected, pooled.float()], 1)
    assert got.shape == reference.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert float((got.float() - reference).abs().max()) <= 2e-2 * float(reference.abs().max())

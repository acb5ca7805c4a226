"""Kernel candidates put into a whole Hub-layout model (scripts/harness/model_kernels.py), on the CPU: the model
loaded from its remote code still answers as it does without them, and the benchmarks say which ran."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from harness.model_kernels import Fp8Linear, cache_dir, flex_window_attention_layers, load_model, parse_kernels
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.loading import load_segmentation_module
from serve_app.settings import ModelSettings
from tests.hub_layout import INPUT_SIZE

ROOT = Path(__file__).resolve().parents[2]


def logits(model: BackgroundRemovalModel, images: int = 3) -> torch.Tensor:
    batch = torch.randn(images, 3, INPUT_SIZE[1], INPUT_SIZE[0], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), warnings.catch_warnings():
        # eager flex_attention computes the whole score matrix: what a check on the CPU wants
        warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
        return model.forward(batch.to(model.dtype)).float()


def settings(model_dir: Path, tmp_path: Path) -> ModelSettings:
    return ModelSettings(model_id=str(model_dir), input_size=INPUT_SIZE, compile_cache_dir=tmp_path / "cache")


def test_flex_attention_layers_answer_as_the_fused_ones(cutout_net_dir: Path, tmp_path: Path) -> None:
    # The network's two blocks: one without a mask, one with the shifted-window mask; 12 windows an image. With 2
    # images flex_attention runs them 8 at a time, the second run spanning both images; with 3, 4 at a time.
    # Run eagerly here (the CPU's compiler has no flex_attention template); the benchmarks run it compiled.
    fused = load_model(settings(cutout_net_dir, tmp_path), ())
    module = load_segmentation_module(str(cutout_net_dir))
    assert flex_window_attention_layers(module, eager=True) == 2
    flex = BackgroundRemovalModel.from_settings(
        settings(cutout_net_dir, tmp_path).model_copy(update={"fused_window_attention": False}), module=module)
    assert flex.describe()["fused_window_attention_layers"] == 0
    for images in (2, 3):
        assert torch.allclose(logits(flex, images), logits(fused, images), rtol=1e-4, atol=1e-4)


def test_flex_attention_runs_compiled_only(cutout_net_dir: Path, tmp_path: Path) -> None:
    # eager flex_attention scores every pair of a sequence's tokens, windows apart included: at BiRefNet's size
    # that is gigabytes a layer, so an eager execution is refused, and an eager pass of a compiled one (while its
    # buckets load) runs the service's fused attention
    with pytest.raises(ValueError, match="attention kernel runs in compiled executions"):
        load_model(settings(cutout_net_dir, tmp_path), ("attention",))
    module = load_segmentation_module(str(cutout_net_dir))
    flex_window_attention_layers(module)
    eager = BackgroundRemovalModel.from_settings(
        settings(cutout_net_dir, tmp_path).model_copy(update={"fused_window_attention": False}), module=module)
    fused = load_model(settings(cutout_net_dir, tmp_path), ())
    assert torch.equal(logits(eager), logits(fused))


def test_fp8_linear_layers_keep_their_weights_in_fp8_and_the_logits_close(cutout_net_dir: Path,
                                                                         tmp_path: Path) -> None:
    plain = load_model(settings(cutout_net_dir, tmp_path), ())
    fp8 = load_model(settings(cutout_net_dir, tmp_path), ("linear",))
    linears = [layer for layer in fp8.module.modules() if isinstance(layer, torch.nn.Linear | Fp8Linear)]
    assert linears and all(isinstance(layer, Fp8Linear) for layer in linears)
    # moved with the model (fp32 here), the weights stay float8 and their scales float32
    assert {layer.weight_fp8.dtype for layer in linears} == {torch.float8_e4m3fn}
    assert {layer.weight_scale.dtype for layer in linears} == {torch.float32}
    expected, got = logits(plain), logits(fp8)
    assert not torch.equal(got, expected)  # the layers did run in FP8
    # e4m3 keeps 3 bits of mantissa: each product is within ~6% of its value, and the network's logits much closer
    assert (got - expected).abs().max() <= 0.05 * expected.abs().max()


def test_a_later_model_without_kernels_gets_the_model_as_loaded(cutout_net_dir: Path, tmp_path: Path) -> None:
    load_model(settings(cutout_net_dir, tmp_path), ("linear",))
    again = load_model(settings(cutout_net_dir, tmp_path), ())
    assert not any(isinstance(layer, Fp8Linear) for layer in again.module.modules())
    assert again.describe()["fused_window_attention_layers"] == 2


def test_each_set_of_kernels_compiles_into_a_cache_of_its_own(tmp_path: Path) -> None:
    assert cache_dir(tmp_path, ()) == tmp_path  # the service's own cache
    # named after the set and a digest of the candidates' code, which the saved buckets' key does not cover
    assert cache_dir(tmp_path, parse_kernels("linear+attention")).name.startswith("kernels-attention+linear-")
    # the deformable convolution is an operator the graph calls, not part of the trace: the set without it
    assert cache_dir(tmp_path, parse_kernels("deform")) == tmp_path
    assert cache_dir(tmp_path, parse_kernels("linear+deform")) == cache_dir(tmp_path, parse_kernels("linear"))
    assert parse_kernels("none") == parse_kernels("") == ()
    with pytest.raises(ValueError, match="unknown kernels.*fp4"):
        parse_kernels("deform+fp4")


def test_the_model_benchmark_says_which_kernels_each_row_ran(cutout_net_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "record.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_model.py"), "--config", str(ROOT / "configs" / "tiny.yaml"),
         "--model-id", str(cutout_net_dir), "--input-size", "64", "--precisions", "fp32", "--device", "cpu",
         "--modes", "eager", "--batch-sizes", "2", "--inputs", "noise", "--iterations", "1",
         "--kernels", "none,linear", "--compile-cache-dir", str(tmp_path / "cache"), "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [row["kernels"] for row in rows] == ["none", "linear"]
    assert rows[0]["max_abs_logit_diff_vs_first"] == 0
    assert 0 < rows[1]["max_abs_logit_diff_vs_first"] < 0.05
    assert {row["deform_conv_kernel"] for row in rows} == {"torchvision"}  # no graph mode, no candidate: its own

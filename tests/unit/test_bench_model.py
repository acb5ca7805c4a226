"""The model-only benchmark on the tiny model (CPU): what its timed batches hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_model.py"
TINY_CONFIG = ROOT / "configs" / "tiny.yaml"


def run_bench(tiny_model_dir: Path, out: Path, *extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(TINY_CONFIG), "--model-id", str(tiny_model_dir),
         "--input-size", "256", "--precisions",
         "fp32", "--device", "cpu", "--batch-sizes", "1,2", "--iterations", "2", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_batch_size_is_timed_on_each_kind_of_input(tiny_model_dir: Path, tmp_path: Path) -> None:
    record = run_bench(tiny_model_dir, tmp_path / "record.json", "--inputs", "noise,photos", "--profile")
    rows = record["results"]
    assert [(row["batch_size"], row["input"]) for row in rows] == [(1, "noise"), (1, "photos"), (2, "noise"),
                                                                   (2, "photos")]
    assert all(row["images_per_s"] > 0 for row in rows)
    # on a CPU the profile ranks ops by their own CPU time; device kernels (none here) are summed by kind
    [profile] = record["profiles"]
    assert profile["batch_size"] == 2 and profile["top_kernels"] and profile["device_ms_by_kind"] == {}


def test_each_row_says_which_attention_settings_ran(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A run of the model as published (--set turning this project's attention fixes off) says so in its record."""
    plain = run_bench(tiny_model_dir, tmp_path / "plain.json", "--set", "contiguous_attention_masks=false",
                      "--set", "attention_precision=fp32")["results"]
    assert {(row["contiguous_attention_masks"], row["attention_precision"]) for row in plain} == {(False, "fp32")}
    default = run_bench(tiny_model_dir, tmp_path / "default.json")["results"]
    assert {(row["contiguous_attention_masks"], row["attention_precision"]) for row in default} == {(True, "model")}


def test_the_model_settings_default_to_the_configs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With no model options, the benchmark measures the config's model, execution and buckets."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    model = config["applications"][0]["args"]["model"]
    model.update(model_id=str(tiny_model_dir), execution="eager", graph_batch_sizes=[1, 3])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "record.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(path), "--precisions", "fp32",
                             "--device", "cpu", "--inputs", "noise", "--iterations", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [(row["batch_size"], row["execution"]) for row in rows] == [(1, "eager"), (3, "eager")]


def refusal(tiny_model_dir: Path, *extra: str) -> str:
    """What the benchmark says on stderr when it refuses these arguments (it must exit non-zero)."""
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY_CONFIG), "--model-id",
                             str(tiny_model_dir), "--device", "cpu", *extra], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    return result.stderr


def test_an_unknown_input_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert "--inputs takes noise and/or photos" in refusal(tiny_model_dir, "--inputs", "noise,zeros")


def test_the_serving_path_is_timed_beside_the_forward_on_photos(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = run_bench(tiny_model_dir, tmp_path / "record.json", "--inputs", "noise,photos", "--serving-path")["results"]
    timed = {(row["batch_size"], row["input"]): row for row in rows}
    assert set(timed) == {(1, "noise"), (1, "photos"), (2, "noise"), (2, "photos")}
    for batch_size in (1, 2):
        path = timed[(batch_size, "photos")]
        # both figures are rounded: ms to 0.1, images/s to 0.01
        images = path["serving_path_images_per_s"] * path["serving_path_ms_per_batch"] / 1000
        assert abs(images - batch_size) < 0.02 * batch_size
        # timed on its own: a figure of its own, beside the forward's (which is faster, a benchmark's finding and not
        # something a loaded CPU test can compare)
        assert path["serving_path_ms_per_batch"] > 0 and path["ms_per_batch"] > 0
        assert "serving_path_ms_per_batch" not in timed[(batch_size, "noise")]


def test_the_serving_path_needs_photos(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert "--serving-path times the benchmark photos" in refusal(tiny_model_dir, "--serving-path", "--inputs", "noise")


def test_lone_requests_are_timed_at_batch_one_with_a_trace(tiny_model_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "lone.json"
    rows = run_bench(tiny_model_dir, tmp_path / "record.json", "--inputs", "photos", "--serving-path",
                     "--lone-trace", str(trace))["results"]
    lone = {row["batch_size"]: row for row in rows}
    # at batch 1 only: every benchmark photo (4 = twice the largest batch), passed and read one at a time
    assert lone[1]["lone_requests"] == 4 and "lone_requests" not in lone[2]
    assert lone[1]["lone_pass_ms_mean"] > 0
    assert 0.3 <= lone[1]["lone_mean_megapixels"] <= 6.0  # the photos' 640x480 to 3000x2000, not the input size
    events = json.loads(trace.read_text())["traceEvents"]
    # the three profiled requests: each resized to the input size on the device
    assert any("upsample_bilinear2d_aa" in event.get("name", "") for event in events)


def test_the_profile_sums_device_kernels_by_kind() -> None:
    from types import SimpleNamespace

    import torch
    from bench_model import kernel_kind, kernel_time_by_kind

    assert kernel_kind("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x32") == "attention"
    assert kernel_kind("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc") == "convolution"
    assert kernel_kind("nvjet_hsh_128x256_64x4_2x1_v_bz_coopB_NNT") == "matmul"
    assert kernel_kind("triton_poi_fused_grid_sampler_2d_mul_7") == "deformable sampling"
    assert kernel_kind("triton_per_fused_native_layer_norm_12") == "normalisation"
    assert kernel_kind("triton_poi_fused_add_gelu_3") == "other fused (Triton)"
    assert kernel_kind("void at::native::elementwise_kernel<128, 2>") == "other"

    def event(name: str, us: float, device: bool = True) -> SimpleNamespace:
        kind = torch.autograd.DeviceType.CUDA if device else torch.autograd.DeviceType.CPU
        return SimpleNamespace(key=name, count=6, device_type=kind, self_device_time_total=us)

    events = [event("nvjet_a", 3000), event("nvjet_b", 1500), event("triton_poi_fused_add_0", 600),
              event("aten::mm", 9000, device=False)]
    assert kernel_time_by_kind(events, "self_device_time_total", iterations=3) == {
        "matmul": {"ms_per_forward": 1.5, "kernels_per_forward": 4.0},
        "other fused (Triton)": {"ms_per_forward": 0.2, "kernels_per_forward": 2.0}}

"""The ONNX export of a BiRefNet-shaped network (scripts/export_onnx.py) on the CPU: torchvision's deform_conv2d
becomes ONNX's DeformConv, and ONNX Runtime answers what PyTorch answers."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from export_onnx import compare, export

from serve_app.model.loading import load_segmentation_module

SIZE = (64, 64)


@pytest.fixture(scope="module")
def exported(cutout_net_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    module = load_segmentation_module(str(cutout_net_dir)).float().eval()
    path = tmp_path_factory.mktemp("onnx") / "cutout_net.onnx"
    return module, path, export(module, path, size=SIZE, batch=2)


def test_deform_conv2d_exports_as_onnx_deform_conv(exported) -> None:
    _, path, record = exported
    graph = onnx.load(str(path)).graph
    operators = {node.op_type for node in graph.node}
    # The translation may sit inside a function the exporter made for it.
    operators |= {node.op_type for function in onnx.load(str(path)).functions for node in function.node}
    assert "DeformConv" in operators and record["opset"] == 19
    assert record["input_shape"] == [2, 3, 64, 64]


def test_onnx_runtime_answers_as_pytorch(exported) -> None:
    module, path, _ = exported
    check = compare(module, path, size=SIZE, batch=2)
    assert check["providers"][0] == "CPUExecutionProvider"
    span = check["logit_range"][1] - check["logit_range"][0]
    assert span > 0.1  # the network's answer varies over the image: a real comparison
    assert check["max_abs_logit_diff"] <= 1e-4 * max(1.0, span), check


def test_the_runtime_benchmark_times_the_file_and_checks_it_against_pytorch(exported) -> None:
    from bench_onnxruntime import against_eager_fp32, measure

    module, path, _ = exported
    record, pixels, logits = measure(path, "cpu", iterations=2, warmup=0)
    assert record["input_shape"] == [2, 3, 64, 64] and record["images_per_s"] > 0
    # every node ran on the provider asked for, so the figure is that provider's
    assert set(record["nodes_by_provider"]) == {"CPUExecutionProvider"}
    assert sum(record["nodes_by_provider"].values()) > 10
    agreement = against_eager_fp32(module, pixels, logits)
    span = agreement["logit_range"][1] - agreement["logit_range"][0]
    assert span > 0.1 and agreement["max_abs_logit_diff"] <= 1e-4 * max(1.0, span), agreement
    assert agreement["min_iou"] > 0.99


def test_the_runtime_benchmark_refuses_a_provider_that_does_not_start(exported) -> None:
    import onnxruntime
    from bench_onnxruntime import PROVIDERS, ProviderUnavailable, measure

    _, path, _ = exported
    missing = next((name for name, provider in PROVIDERS.items()
                    if provider not in onnxruntime.get_available_providers()), None)
    if missing is None:
        pytest.skip("every provider is available here")
    # never a CPU figure under another provider's name
    with pytest.raises(ProviderUnavailable, match=PROVIDERS[missing]):
        measure(path, missing, iterations=1, warmup=0)

"""Models whose code imports timm, kornia, einops and torchvision's deform_conv2d, as BiRefNet's and RMBG-2.0's do,
loaded through the production path: a local directory, and a repository id from a Hugging Face cache, offline."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.loading import load_segmentation_module
from serve_app.model.remote_code import ModelCodeError
from serve_app.settings import ModelSettings
from tests.hub_layout import INPUT_SIZE, populate_hub_cache
from tests.images import red_square

REPO_ID = "acme/cutout-net"
ROOT = Path(__file__).resolve().parents[2]


def test_loads_the_saved_weights_through_remote_code(cutout_net_dir: Path) -> None:
    module = load_segmentation_module(str(cutout_net_dir))
    assert type(module).__name__ == "CutoutNet" and not module.training
    saved = load_file(str(cutout_net_dir / "model.safetensors"))
    loaded = module.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)


def test_the_model_core_predicts_a_mask_per_image_on_cpu(cutout_net_dir: Path) -> None:
    model = BackgroundRemovalModel.from_settings(ModelSettings(model_id=str(cutout_net_dir), input_size=INPUT_SIZE))
    images = [np.asarray(red_square((120, 90), (20, 20, 80, 70))), np.asarray(red_square((50, 70), (5, 5, 40, 60)))]
    masks = model.predict(images)
    assert [mask.shape for mask in masks] == [(90, 120), (70, 50)]
    assert all(mask.dtype == np.uint8 for mask in masks)
    # Random weights: the masks mean nothing, but they are not constant.
    assert all(int(mask.max()) > int(mask.min()) for mask in masks)


def test_fused_window_attention_gives_the_written_out_attention(cutout_net_dir: Path) -> None:
    module = load_segmentation_module(str(cutout_net_dir))
    batch = torch.randn(3, 3, INPUT_SIZE[1], INPUT_SIZE[0], generator=torch.Generator().manual_seed(0))
    attention = [layer for layer in module.modules() if type(layer).__name__ == "WindowAttention"]
    seen = []  # (args, kwargs, output) of each attention layer's call, as written out

    def record(_: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        seen.append((args, kwargs, output))

    hooks = [layer.register_forward_hook(record, with_kwargs=True) for layer in attention]
    with torch.inference_mode():
        written_out_logits = module(batch)[-1]
    for hook in hooks:
        hook.remove()
    model = BackgroundRemovalModel(module, input_size=INPUT_SIZE, device=torch.device("cpu"), precision="fp32")
    assert model.describe()["fused_window_attention_layers"] == len(attention) == 2
    with torch.inference_mode():
        # Each layer on the inputs it saw, the shifted block's mask included, then the whole network.
        for layer, (args, kwargs, expected) in zip(attention, seen, strict=True):
            assert torch.allclose(layer(*args, **kwargs), expected, rtol=1e-5, atol=1e-5)
        assert torch.allclose(model.module(batch)[-1], written_out_logits, rtol=1e-4, atol=1e-4)
        # In half precision too, each layer against its written-out form in the same precision.
        for layer, (args, kwargs, _) in zip(attention, seen, strict=True):
            half = copy.deepcopy(layer).to(torch.bfloat16)
            args = tuple(arg.to(torch.bfloat16) for arg in args)
            kwargs = {key: value if value is None else value.to(torch.bfloat16) for key, value in kwargs.items()}
            expected = type(layer).forward(half, *args, **kwargs).float()
            assert torch.allclose(half(*args, **kwargs).float(), expected, rtol=3e-2, atol=3e-2)


LOAD_BY_ID = """
import json, sys
import torch
from serve_app.model.loading import load_segmentation_module
from serve_app.model.remote_code import ModelCodeError
batch = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
results = {}
for revision in sys.argv[2:]:
    module = load_segmentation_module(sys.argv[1], None if revision == "none" else revision)
    with torch.inference_mode():
        results[revision] = module(batch)[-1].flatten()[:16].tolist()
print(json.dumps(results))
"""


def test_a_repository_id_loads_offline_from_the_hub_cache_with_and_without_a_revision(
        cutout_net_dir: Path, tmp_path: Path) -> None:
    hub_cache = tmp_path / "hub"
    commit = populate_hub_cache(hub_cache, REPO_ID, cutout_net_dir)
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", LOAD_BY_ID, REPO_ID, "none", "main", commit], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    by_revision = json.loads(done.stdout.strip().splitlines()[-1])
    local = load_segmentation_module(str(cutout_net_dir))
    batch = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = local(batch)[-1].flatten()[:16]
    for revision, logits in by_revision.items():
        assert torch.allclose(torch.tensor(logits), expected, rtol=1e-4, atol=1e-5), revision
    # The code ran from the cached snapshot, copied where transformers keeps remote code for that commit.
    assert list((tmp_path / "modules").rglob(f"{commit}/modeling_cutout_net.py"))


def test_an_unknown_revision_fails_in_one_line_before_loading(cutout_net_dir: Path, tmp_path: Path) -> None:
    hub_cache = tmp_path / "hub"
    populate_hub_cache(hub_cache, REPO_ID, cutout_net_dir)
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", LOAD_BY_ID, REPO_ID, "0" * 40], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"cannot read config.json of model {REPO_ID} at revision {'0' * 40}" in done.stderr


@pytest.mark.parametrize("missing", [("kornia",), ("einops", "timm")])
def test_missing_packages_are_named_in_one_line_with_the_install_command(
        cutout_net_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...]) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(cutout_net_dir, model_dir)
    (model_dir / "model.safetensors").write_bytes(b"not weights: the check must come before reading them")
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # how Python marks a module that cannot be imported
    with pytest.raises(ModelCodeError) as raised:
        load_segmentation_module(str(model_dir))
    message = str(raised.value)
    assert "\n" not in message
    assert f"cannot be imported here: {', '.join(missing)}." in message
    assert message.endswith(f"Install them with: {sys.executable} -m pip install --upgrade {' '.join(missing)}")


def broken_copy(source: Path, target: Path, change: str) -> Path:
    shutil.copytree(source, target)
    if change == "no weights":
        (target / "model.safetensors").unlink()
    elif change == "config not json":
        (target / "config.json").write_text('{"auto_map": ')
    elif change == "no auto_map":
        config = json.loads((target / "config.json").read_text())
        del config["auto_map"]
        (target / "config.json").write_text(json.dumps(config))
    elif change == "code not python":
        (code,) = [path for path in target.glob("modeling_*.py")]
        code.write_text(code.read_text() + "\ndef broken(:\n")
    return target


@pytest.mark.parametrize(("change", "words"), [
    ("no weights", ["holds no weights", "model.safetensors"]),
    ("config not json", ["config.json", "is not valid JSON"]),
    ("no auto_map", ["config.json", "names no model code", "auto_map"]),
    ("code not python", ["modeling_", "line", "no valid Python"]),
])
def test_a_broken_model_directory_is_named_in_one_line_before_loading(cutout_net_dir: Path, tmp_path: Path,
                                                                       change: str, words: list[str]) -> None:
    model_dir = broken_copy(cutout_net_dir, tmp_path / "model", change)
    with pytest.raises(ModelCodeError) as raised:
        load_segmentation_module(str(model_dir))
    message = str(raised.value)
    assert "\n" not in message and all(word in message for word in words), message


@pytest.mark.parametrize("model_id", ["./no-such-model", "/no/such/model", "~/no-such-model"])
def test_a_model_directory_that_is_not_there_is_named_as_a_directory(model_id: str) -> None:
    with pytest.raises(ModelCodeError, match=f"there is no model directory {model_id}"):
        load_segmentation_module(model_id)

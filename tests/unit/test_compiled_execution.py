"""The compiled execution path (torch.compile per batch bucket, saved whole on disk) on the tiny model, on CPU.

The same code compiles for CUDA on a GPU host; here it proves the bucket padding, that serving after start-up
never compiles again, and that a restarted process loads the saved buckets, against the eager forward pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from serve_app.model.compiled import use_compile_cache
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.loading import load_segmentation_module
from tests.hub_layout import write_cutout_net
from tests.images import distinct_pictures as photos

INPUT_SIZE = (64, 64)
BUCKETS = (1, 2)


def build(tiny_model_dir: Path, execution: str, cache_dir: Path) -> BackgroundRemovalModel:
    return BackgroundRemovalModel(load_segmentation_module(str(tiny_model_dir)), input_size=INPUT_SIZE,
                                  device=torch.device("cpu"), precision="fp32", model_id="tiny",
                                  execution=execution, graph_batch_sizes=BUCKETS, compile_cache_dir=cache_dir)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def compiled(tiny_model_dir: Path, cache_dir: Path) -> BackgroundRemovalModel:
    return build(tiny_model_dir, "compiled", cache_dir)


def test_start_up_compiles_every_bucket_into_the_cache_dir(compiled: BackgroundRemovalModel, cache_dir: Path) -> None:
    assert compiled.execution == "compiled"
    assert sorted(compiled.compile_warmup) == list(BUCKETS)
    assert not any(warmup["from_cache"] or warmup["precompiled"] for warmup in compiled.compile_warmup.values())
    # Each bucket saved whole, for the next start to load without tracing the model again.
    assert [len(list(cache_dir.glob(f"precompiled/*-batch{size}.bin"))) for size in BUCKETS] == [1] * len(BUCKETS)


def test_the_kernels_tunings_are_kept_in_the_compile_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The project's Triton kernels keep their compiled binaries and tile-size timings where the compiled buckets are
    # (a volume a pod's restart keeps), in the directory inductor uses for its own kernels.
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "unset")
    use_compile_cache(tmp_path / "cache", torch.device("cuda", 1))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "cache").resolve())
    assert os.environ["TRITON_CACHE_DIR"] == str((tmp_path / "cache" / "triton" / "1").resolve())
    # An operator's own TRITON_CACHE_DIR stays.
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "theirs"))
    use_compile_cache(tmp_path / "cache", torch.device("cuda", 0))
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "theirs")


@pytest.fixture(scope="module")
def eager(tiny_model_dir: Path, cache_dir: Path) -> BackgroundRemovalModel:
    return build(tiny_model_dir, "eager", cache_dir)  # eager never reads the cache


@pytest.mark.parametrize("count", [1, 2, 3])  # padded up to a bucket; above the largest, run bucket by bucket
def test_compiled_masks_match_eager(compiled: BackgroundRemovalModel, eager: BackgroundRemovalModel,
                                    count: int) -> None:
    images = photos(count)
    reference = eager.predict(images)
    masks = compiled.predict(images)
    assert [m.shape for m in masks] == [image.shape[:2] for image in images]
    for mask, expected in zip(masks, reference, strict=True):
        assert np.abs(mask.astype(int) - expected.astype(int)).max() <= 1


def test_serving_after_start_up_never_compiles(compiled: BackgroundRemovalModel) -> None:
    before = dict(counters["stats"]), dict(counters["inductor"])
    for count in (1, 2, 3, 1):
        compiled.predict(photos(count))
    assert (dict(counters["stats"]), dict(counters["inductor"])) == before


def test_callers_on_other_threads_share_the_compiled_graphs(compiled: BackgroundRemovalModel,
                                                            eager: BackgroundRemovalModel) -> None:
    # The remover calls from its model thread, the bulk actor from several of Ray's threads: neither may
    # compile again (inference mode is per thread, and a graph is guarded on it) or get other answers.
    images = photos(3)
    reference = eager.predict(images)
    before = dict(counters["stats"]), dict(counters["inductor"])
    with ThreadPoolExecutor(max_workers=3) as callers:
        results = list(callers.map(lambda _: compiled.predict(images), range(6)))
    assert (dict(counters["stats"]), dict(counters["inductor"])) == before
    for masks in results:
        for mask, expected in zip(masks, reference, strict=True):
            assert np.abs(mask.astype(int) - expected.astype(int)).max() <= 1


def test_work_run_on_the_forwards_own_thread_calls_it_inline(compiled: BackgroundRemovalModel,
                                                             eager: BackgroundRemovalModel) -> None:
    # The remover runs all its device work on forward_executor (one thread): a forward called from there that
    # queued itself behind the running task would wait forever.
    images = photos(3)
    before = dict(counters["stats"]), dict(counters["inductor"])
    masks = compiled.forward_executor.submit(compiled.predict, images).result(timeout=120)
    assert (dict(counters["stats"]), dict(counters["inductor"])) == before
    for mask, expected in zip(masks, eager.predict(images), strict=True):
        assert np.abs(mask.astype(int) - expected.astype(int)).max() <= 1
    assert eager.forward_executor is None  # any thread will do: the remover makes its own


RESTART = """
import json, sys, threading
from pathlib import Path
import torch
from serve_app.model import compiled
from tests.unit.test_compiled_execution import build
from tests.images import distinct_pictures
# Another thread count than the process that saved the buckets: Ray gives a bulk model actor 1 CPU, a replica 2.
torch.set_num_threads(torch.get_num_threads() + 1)
# No saved bucket is read until batches of one and two have run: the eager forward serves them meanwhile.
gate, read = threading.Event(), compiled.SavedBuckets.read
compiled.SavedBuckets.read = lambda saved, size: gate.wait(300) and read(saved, size)
model = build(Path(sys.argv[1]), "compiled", Path(sys.argv[2]))
ready = {"warmup": dict(model.compile_warmup), "eager": model.describe()["eager_batch_sizes"]}
before = [mask.tolist() for count in (1, 2) for mask in model.predict(distinct_pictures(count))]
gate.set()
assert model.wait_for_buckets(timeout=300)
print(json.dumps({"execution": model.execution, "warmup": model.compile_warmup, "ready": ready, "before": before,
                  "eager": model.describe()["eager_batch_sizes"],
                  "after": [mask.tolist() for count in (1, 2) for mask in model.predict(distinct_pictures(count))]}))
"""


def test_a_restarted_process_is_served_from_the_cache(compiled: BackgroundRemovalModel, eager: BackgroundRemovalModel,
                                                      tiny_model_dir: Path, cache_dir: Path) -> None:
    output = subprocess.run([sys.executable, "-c", RESTART, str(tiny_model_dir), str(cache_dir)], check=True,
                            capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2]).stdout
    restarted = json.loads(output.splitlines()[-1])
    assert restarted["execution"] == "compiled"
    # Ready before any bucket loaded, every batch size on the eager forward; then each loaded, none compiled.
    assert restarted["ready"] == {"warmup": {}, "eager": list(BUCKETS)}
    assert sorted(int(size) for size in restarted["warmup"]) == list(BUCKETS) and restarted["eager"] == []
    assert all(warmup["precompiled"] and warmup["after_start"] for warmup in restarted["warmup"].values())
    images = [*photos(1), *photos(2)]
    for mask, reference in zip(restarted["before"], [*eager.predict(photos(1)), *eager.predict(photos(2))],
                               strict=True):
        assert np.abs(np.array(mask, dtype=int) - reference.astype(int)).max() <= 1
    for mask, reference in zip(restarted["after"], [*compiled.predict(photos(1)), *compiled.predict(photos(2))],
                               strict=True):
        np.testing.assert_array_equal(np.array(mask, dtype=np.uint8), reference)
    assert [np.array(mask).shape for mask in restarted["after"]] == [image.shape[:2] for image in images]


TAKING_TURNS = """
import json, sys, threading, time
from pathlib import Path
from serve_app.model import compiled
from serve_app.model.cuda_graphs import DEVICE_SETUP_LOCK
from tests.unit.test_compiled_execution import build
# Another model of the process sets up on the device before the first saved bucket is read: none goes in service
# meanwhile.
held, release = threading.Event(), threading.Event()
read = compiled.SavedBuckets.read
compiled.SavedBuckets.read = lambda saved, size: held.wait(300) and read(saved, size)
model = build(Path(sys.argv[1]), "compiled", Path(sys.argv[2]))
def other_model():
    with DEVICE_SETUP_LOCK:
        held.set()
        release.wait(300)
threading.Thread(target=other_model).start()
held.wait(60)
during = {"all_in": model.wait_for_buckets(timeout=3), "eager": model.describe()["eager_batch_sizes"]}
release.set()
print(json.dumps({"during": during, "all_in": model.wait_for_buckets(timeout=300),
                  "eager": model.describe()["eager_batch_sizes"]}))
"""


def test_saved_buckets_wait_while_another_model_sets_up(compiled: BackgroundRemovalModel, tiny_model_dir: Path,
                                                        cache_dir: Path) -> None:
    output = subprocess.run([sys.executable, "-c", TAKING_TURNS, str(tiny_model_dir), str(cache_dir)], check=True,
                            capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2]).stdout
    result = json.loads(output.splitlines()[-1])
    assert result["during"] == {"all_in": False, "eager": list(BUCKETS)}
    assert result["all_in"] and result["eager"] == []


def test_a_saved_bucket_that_cannot_load_is_compiled_again(compiled: BackgroundRemovalModel, tiny_model_dir: Path,
                                                           cache_dir: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "cache"
    shutil.copytree(cache_dir, damaged)
    for saved in damaged.glob("precompiled/*-batch1.bin"):
        saved.write_bytes(saved.read_bytes()[:100])  # as a disk that filled up mid-write would leave it
    # Found after start-up: never compiled behind serving. Its batches keep the eager forward, and its file goes.
    model = build(tiny_model_dir, "compiled", damaged)
    assert model.execution == "compiled" and model.wait_for_buckets(timeout=300)
    assert list(model.compile_warmup) == [2] and model.describe()["eager_batch_sizes"] == [1]
    for mask, reference in zip(model.predict(photos(1)), compiled.predict(photos(1)), strict=True):
        assert np.abs(mask.astype(int) - reference.astype(int)).max() <= 1
    assert not list(damaged.glob("precompiled/*-batch1.bin"))
    # The next start compiles it before turning ready, and saves it whole again; the one after loads both.
    rebuilt = build(tiny_model_dir, "compiled", damaged)
    assert [rebuilt.compile_warmup[size]["precompiled"] for size in BUCKETS] == [False, True]
    for count in (1, 2):
        for mask, reference in zip(rebuilt.predict(photos(count)), compiled.predict(photos(count)), strict=True):
            np.testing.assert_array_equal(mask, reference)
    restarted = build(tiny_model_dir, "compiled", damaged)
    assert restarted.wait_for_buckets(timeout=300)
    assert all(warmup["precompiled"] for warmup in restarted.compile_warmup.values())


def test_a_bucket_of_another_input_size_is_not_loaded(compiled: BackgroundRemovalModel, tiny_model_dir: Path,
                                                      cache_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "cache"
    shutil.copytree(cache_dir, other)
    model = BackgroundRemovalModel(load_segmentation_module(str(tiny_model_dir)), input_size=(32, 32),
                                   device=torch.device("cpu"), precision="fp32", model_id="tiny", execution="compiled",
                                   graph_batch_sizes=(1,), compile_cache_dir=other)
    assert model.execution == "compiled" and not model.compile_warmup[1]["precompiled"]
    assert model.predict(photos(1))[0].shape == photos(1)[0].shape[:2]


def test_compiled_graphs_runs_as_compiled_without_cuda(compiled: BackgroundRemovalModel, tiny_model_dir: Path,
                                                       cache_dir: Path) -> None:
    # No CUDA graphs to capture on a CPU: the compiled buckets serve as they are, from the same cache entries.
    model = build(tiny_model_dir, "compiled_graphs", cache_dir)
    assert model.execution == "compiled" and model.describe()["execution"] == "compiled"
    assert model.wait_for_buckets(timeout=300)
    assert all(warmup["precompiled"] for warmup in model.compile_warmup.values())
    for mask, reference in zip(model.predict(photos(3)), compiled.predict(photos(3)), strict=True):
        np.testing.assert_array_equal(mask, reference)


# One start of a BiRefNet-shaped model (Swin window attention, fused) from argv[1], compile cache argv[2].
FUSED_START = """
import json, sys
from pathlib import Path
import torch
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.loading import load_segmentation_module
model = BackgroundRemovalModel(load_segmentation_module(sys.argv[1]), input_size=(64, 64), device=torch.device("cpu"),
                               precision="fp32", execution="compiled", graph_batch_sizes=(1,),
                               compile_cache_dir=Path(sys.argv[2]))
assert model.wait_for_buckets(timeout=300)
print(json.dumps({"warmup": model.compile_warmup, "eager": model.describe()["eager_batch_sizes"],
                  "fused_layers": model.fused_window_attention_layers}))
"""


def test_saved_buckets_with_fused_attention_load_again_and_each_model_directory_keeps_its_own(tmp_path: Path) -> None:
    # The saved bucket's guards hold the window attention layers with the forward each was given; the same remote
    # code from another directory is another module of other classes, which those guards do not match.
    first = write_cutout_net(tmp_path / "first")
    second = Path(shutil.copytree(first, tmp_path / "second"))
    cache = tmp_path / "cache"

    def start(directory: Path) -> dict:
        output = subprocess.run([sys.executable, "-c", FUSED_START, str(directory), str(cache)], check=True,
                                capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2]).stdout
        return json.loads(output.splitlines()[-1])

    compiled = start(first)
    assert compiled["fused_layers"] > 0 and not compiled["warmup"]["1"]["precompiled"]
    restarted = start(first)
    assert restarted["warmup"]["1"]["precompiled"] and restarted["eager"] == []
    # The copy compiles buckets of its own, rather than serving eager after failing the first's guards, and
    # leaves the first's in place.
    other = start(second)
    assert not other["warmup"]["1"]["precompiled"] and other["eager"] == []
    assert len(list(cache.glob("precompiled/*-batch1.bin"))) == 2


# A BiRefNet-shaped model (argv[1]) compiled with both graph rewrites into a fresh cache (argv[2]), against eager.
REWRITTEN_START = """
import json, sys
from pathlib import Path
import torch
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.graph_rewrites import DeformChannelsLast
from serve_app.model.loading import load_segmentation_module

def start(execution):
    return BackgroundRemovalModel(load_segmentation_module(sys.argv[1]), input_size=(64, 64),
                                  device=torch.device("cpu"), precision="fp32", execution=execution,
                                  graph_batch_sizes=(2,), compile_cache_dir=Path(sys.argv[2]),
                                  graph_rewrites=("conv_before_upsample", "deform_conv_channels_last"))

compiled, eager = start("compiled"), start("eager")
assert compiled.wait_for_buckets(timeout=300)
batch = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    got, expected = compiled.forward(batch), eager.forward(batch)
description = compiled.describe()
print(json.dumps({"difference": float((got.float() - expected.float()).abs().max()),
                  "scale": float(expected.float().abs().max()), "swapped": DeformChannelsLast.applied,
                  "rewrites": [description["conv_before_upsample"], description["deform_conv_channels_last"]],
                  "precompiled": compiled.compile_warmup[2]["precompiled"]}))
"""


def test_the_deformable_convolutions_written_channels_last_give_the_eager_logits(tmp_path: Path) -> None:
    directory = write_cutout_net(tmp_path / "net")

    def start() -> dict:
        output = subprocess.run([sys.executable, "-c", REWRITTEN_START, str(directory), str(tmp_path / "cache")],
                                check=True, capture_output=True, text=True, timeout=600,
                                cwd=Path(__file__).parents[2]).stdout
        return json.loads(output.splitlines()[-1])

    compiled = start()
    assert compiled["swapped"] >= 1 and compiled["rewrites"] == [True, True] and not compiled["precompiled"]
    assert compiled["difference"] <= 1e-4 * max(compiled["scale"], 1.0), compiled
    # a restart loads the saved bucket, which calls the operator the pass swapped in, without tracing again
    restarted = start()
    assert restarted["precompiled"] and restarted["swapped"] == 0
    assert restarted["difference"] <= 1e-4 * max(restarted["scale"], 1.0), restarted

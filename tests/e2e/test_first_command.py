"""The README's first command, `make serve`, on a machine like this one: no GPU, no Hub.

It must end within seconds with one line that names what works here, never wait for a GPU that does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve_app.serve_config import derive_config
from tests.helpers import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[2]
NO_GPU = {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}


def run(command: list[str], env: dict[str, str], timeout_s: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout_s)
    return done, time.monotonic() - started


def test_make_serve_without_a_gpu_stops_within_30_s_naming_the_cpu_command(tmp_path: Path) -> None:
    # The environment this test runs in is the one `make setup` built: take it as set up (-o).
    venv = Path(sys.prefix)
    done, seconds = run(["make", "-s", "-o", f"{venv}/.installed", "serve", f"VENV={venv}"],
                        {**NO_GPU, "HF_HOME": str(tmp_path / "hf")})
    assert done.returncode != 0 and seconds < 30, (seconds, done.stdout[-2000:], done.stderr[-2000:])
    problem = [line for line in done.stderr.splitlines() if "configs/prod.yaml" in line]
    assert problem == ["configs/prod.yaml runs the model on a GPU (its BackgroundRemover asks for num_gpus: 1) "
                       "and this machine has none that PyTorch can see; on a CPU machine run: "
                       "make serve CONFIG=configs/local.yaml"]
    assert "serve] Error 2" in done.stderr, "make went on past the check"


def test_the_cpu_config_without_hub_access_says_so_in_one_line(tmp_path: Path) -> None:
    done, seconds = run([sys.executable, "-m", "serve_app.preflight", "configs/local.yaml"],
                        {**NO_GPU, "HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == 1 and seconds < 30
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("cannot read config.json of model ZhengPeng7/BiRefNet_lite: ")


@pytest.mark.parametrize(("change", "batching", "expected"), [
    ({}, {}, "ready to serve"),
    ({"input_size": [0, 5]}, {}, "args.model.input_size"),
    ({"device": "cuda"}, {}, "sets device: cuda"),
    ({}, {"max_batch_sise": 8}, "user_config.max_batch_sise"),
    ({"revision": "v1"}, {}, "is a local directory"),  # from_pretrained would pin nothing
    ({"execution": "compiled", "compile_options": {"coordinate_descent_tunin": True}}, {},
     "Unexpected optimization option coordinate_descent_tunin"),  # the replica would serve eager without a word
])
def test_the_check_passes_a_cpu_model_directory_and_names_what_is_wrong_otherwise(
        tiny_model_dir: Path, tmp_path: Path, change: dict, batching: dict, expected: str) -> None:
    import yaml

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(derive_config(TINY_CONFIG, model={"model_id": str(tiny_model_dir), **change},
                                                   batching=batching)))
    done, _ = run([sys.executable, "-m", "serve_app.preflight", str(config)], NO_GPU)
    output = (done.stdout + done.stderr).strip()
    assert expected in output and "\n" not in output
    assert (done.returncode == 0) == (expected == "ready to serve")


def test_a_key_file_with_no_key_fails_the_check_instead_of_serving_without_keys(tiny_model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    import yaml

    keys_file = tmp_path / "api_keys"
    keys_file.write_text("# production keys, one per line\n")
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(derive_config(TINY_CONFIG, model={"model_id": str(tiny_model_dir)},
                                                   ingress={"api_keys_file": str(keys_file)})))
    done, _ = run([sys.executable, "-m", "serve_app.preflight", str(config)], NO_GPU)
    assert done.returncode == 1 and f"{keys_file} holds no key" in done.stderr, (done.stdout, done.stderr)


def test_a_second_model_on_cuda_needs_a_gpu_as_the_default_does(tiny_model_dir: Path, tmp_path: Path) -> None:
    import yaml

    raw = derive_config(TINY_CONFIG, model={"model_id": str(tiny_model_dir)})
    args = raw["applications"][0]["args"]
    first = args.pop("model")
    args["models"] = [{**first, "name": "cpu"}, {**first, "name": "gpu", "device": "cuda"}]
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(raw))
    done, _ = run([sys.executable, "-m", "serve_app.preflight", str(config)], NO_GPU)
    assert done.returncode == 2 and "sets device: cuda" in done.stderr, (done.stdout, done.stderr)


def test_a_key_file_only_the_cluster_nodes_have_is_left_to_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(derive_config(TINY_CONFIG, model={"model_id": str(tiny_model_dir)},
                                                   ingress={"api_keys_file": "/etc/serve-app/keys"})))
    cluster = {**NO_GPU, "SERVE_APP_API_KEYS": "k1", "RAY_ADDRESS": "127.0.0.1:6379"}  # named, never reached
    done, _ = run([sys.executable, "-m", "serve_app.preflight", str(config)], cluster)
    assert done.returncode == 0 and "ready to serve" in done.stdout + done.stderr, (done.stdout, done.stderr)
    # served from this machine, the file must be here: every ingress replica would fail to start without it
    done, _ = run([sys.executable, "-m", "serve_app.preflight", str(config)], {**NO_GPU, "SERVE_APP_API_KEYS": "k1"})
    assert done.returncode == 1 and "api_keys_file /etc/serve-app/keys is no file on this machine" in done.stderr


@pytest.mark.parametrize(("text", "words"), [(None, "no such file"), ("", "no applications"),
                                             ("applications: [", "cannot be read as a Serve config")])
def test_a_config_that_is_not_there_or_no_serve_config_is_named_in_one_line(tmp_path: Path, text: str | None,
                                                                            words: str) -> None:
    config = tmp_path / "serve.yaml"
    if text is not None:
        config.write_text(text)
    done, _ = run([sys.executable, "-m", "serve_app.preflight", str(config)], NO_GPU)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 1 and line.startswith(f"{config}: ") and words in line, done.stderr


@pytest.mark.parametrize(("result_dir", "words"), [("s3:/bucket/results", "one slash"),
                                                   ("nosuchfs://bucket/results", "nosuchfs")])
def test_a_result_dir_that_cannot_store_is_named_before_serving(tiny_model_dir: Path, tmp_path: Path,
                                                                result_dir: str, words: str) -> None:
    import yaml

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(derive_config(TINY_CONFIG, model={"model_id": str(tiny_model_dir)},
                                                   ingress={"result_dir": result_dir})))
    done, _ = run([sys.executable, "-m", "serve_app.preflight", str(config)], NO_GPU)
    assert done.returncode == 1 and "args.ingress.result_dir" in done.stderr and words in done.stderr, done.stderr

"""Checks a Serve config before `serve run` starts anything: its settings (the application's `args` and the model
deployment's `user_config`), a GPU, the packages its model needs.

    python -m serve_app.preflight configs/prod.yaml          (make serve runs it first)

Without it, a config that asks for a GPU on a machine with none waits forever for a replica Ray cannot place,
and a missing package ends in a traceback from inside transformers after Ray has started. Here each ends within
seconds in one line that says what to run instead. Exit status: 0 ready, 1 the config or the model's code cannot
work, 2 no GPU for a config that needs one.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import fsspec
import yaml

from serve_app.model.loading import IMPORT_PREFIX
from serve_app.model.remote_code import ModelCodeError, check_model_code
from serve_app.serve_config import app_args, deployment, derive_config, read_config, remover_actor_options
from serve_app.settings import (
    COMPILED_EXECUTIONS,
    ModelSettings,
    load_api_keys,
    parse_app_args,
    parse_batch_settings,
)

CPU_CONFIG = "configs/local.yaml"


def visible_gpus() -> int:
    """GPUs PyTorch can use on this machine (CUDA_VISIBLE_DEVICES applies), as Ray's local node will count them."""
    import torch

    return torch.cuda.device_count()


def gpu_problem(config_path: Path, config: dict, model_device: str, env: dict[str, str]) -> str | None:
    """Why this machine cannot run the config's model replica, or None.

    Skipped when RAY_ADDRESS names a cluster: its GPUs, present or autoscaled, are the cluster's to provide.
    """
    if env.get("RAY_ADDRESS"):
        return None
    wanted = remover_actor_options(config).get("num_gpus", 0)
    if not wanted and model_device != "cuda":
        return None
    if visible_gpus():
        return None
    if not wanted:  # the model's own setting
        return (f"{config_path} runs the model on a GPU (its model sets device: cuda) and this machine has none that "
                "PyTorch can see; set the model's device to auto or cpu")
    instead = ("to run it on the CPU, set the BackgroundRemover's num_gpus to 0 and the model's device to cpu"
               if Path(config_path).resolve() == Path(CPU_CONFIG).resolve()
               else f"on a CPU machine run: make serve CONFIG={CPU_CONFIG}")
    return (f"{config_path} runs the model on a GPU (its BackgroundRemover asks for num_gpus: {wanted}) and this "
            f"machine has none that PyTorch can see; {instead}")


def compile_options_problem(settings: ModelSettings) -> str | None:
    """Why torch.compile refuses a model's `compile_options` (a misspelt key, a value of the wrong type), or None. The
    replica would find out only as it compiles, and serve the eager forward (docs/configuration.md)."""
    if settings.execution not in COMPILED_EXECUTIONS or not settings.compile_options:
        return None
    import torch

    try:  # checks the options at once, compiling nothing
        torch.compile(lambda batch: batch, options=dict(settings.compile_options))  # type: ignore[arg-type]
    except Exception as error:  # noqa: BLE001 - RuntimeError today; any refusal is the answer
        return f"compile_options of model {settings.served_name}: {str(error).splitlines()[0][:300]}"
    return None


def check_result_dir(result_dir: str | None) -> None:
    """ValueError where batch results could not be stored at `result_dir`: a URL missing one of its slashes (which
    fsspec would take as a local folder named `s3:`), or one whose file system's package is not installed."""
    if result_dir is None:
        return
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)", result_dir):
        raise ValueError(f"args.ingress.result_dir {result_dir!r} looks like a URL with one slash: write scheme://...")
    try:
        fsspec.core.url_to_fs(result_dir)
    except (ImportError, ValueError) as error:
        raise ValueError(f"args.ingress.result_dir {result_dir!r}: {' '.join(str(error).split())}") from None


def check(config_path: Path, env: dict[str, str], model: dict | None = None, *,
          serving: bool = True) -> tuple[int, str]:
    """(exit status, the one line to print) for the config at `config_path` (with `model`'s settings replaced).
    Not `serving` (the prebuild): what only the ingress reads (API keys, result_dir) is left out, and the model's
    code is checked only where the build runs here (no RAY_ADDRESS): on a cluster it may be the nodes' alone."""
    try:
        config = derive_config(config_path, model=model) if model else read_config(config_path)
        if not isinstance(config, dict) or not config.get("applications"):
            raise ValueError("no applications: not a Serve config")
    except FileNotFoundError:
        return 1, f"{config_path}: no such file"
    except (OSError, yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as error:
        return 1, f"{config_path}: cannot be read as a Serve config: {' '.join(str(error).split())}"
    try:
        app = parse_app_args(app_args(config))
        # Serve hands user_config to the model replica only once it has loaded its models, minutes in with a
        # compile: a misspelt batching key is caught here instead.
        parse_batch_settings(deployment(config, "BackgroundRemover").get("user_config"))
        keys_file = app.ingress.api_keys_file if serving else None
        if keys_file is not None and not keys_file.is_file():
            if not env.get("RAY_ADDRESS"):  # served from this machine: every ingress replica would fail to start
                raise ValueError(f"args.ingress.api_keys_file {keys_file} is no file on this machine")
            keys_file = None  # on a cluster it may live on the nodes only
        if serving:
            load_api_keys(app.ingress.model_copy(update={"api_keys_file": keys_file}), env)
            check_result_dir(app.ingress.result_dir)
    except (ValueError, OSError) as error:
        return 1, f"{config_path}: {' '.join(str(error).split())}"
    # Any model set to cuda needs the GPU, the default or not: the replica loads them all.
    device = "cuda" if any(settings.device == "cuda" for settings in app.served_models) else app.default.device
    problem = gpu_problem(config_path, config, device, env)
    if problem:
        return 2, problem
    for settings in app.served_models:
        problem = compile_options_problem(settings)
        if problem:
            return 1, f"{config_path}: {problem}"
        if not settings.model_id.startswith(IMPORT_PREFIX) and (serving or not env.get("RAY_ADDRESS")):
            try:
                check_model_code(settings.model_id, settings.revision)
            except ModelCodeError as error:
                return 1, str(error)
    return 0, f"{config_path}: ready to serve {', '.join(settings.model_id for settings in app.served_models)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the Serve config that `serve run` will start")
    status, line = check(parser.parse_args(argv).config, dict(os.environ))
    print(line, file=sys.stderr if status else sys.stdout, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

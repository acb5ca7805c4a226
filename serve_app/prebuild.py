"""Fill the compile cache before deploying, so that no replica pays the cold compile (minutes per bucket).

    python -m serve_app.prebuild --config configs/prod.yaml --set execution=compiled

Builds the model exactly as a replica of that config would, compiling every bucket into `compile_cache_dir`
(run it on the GPU kind you deploy to, with the same torch; the cache is per GPU architecture and version).
Inductor keys CPU kernels on the process's thread count, and Ray gives a replica `OMP_NUM_THREADS = num_cpus`,
so this process runs with the model deployment's `num_cpus` threads too: with any other count a replica would
miss the cache (seen on the tiny model on CPU: 16 threads here, 1 in the replica, every bucket compiled again).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import yaml

from serve_app.bench.service_process import derive_config
from serve_app.settings import parse_app_args


def replica_threads(config: dict) -> int:
    """The intra-op threads Ray gives the model replica: OMP_NUM_THREADS if the config sets it, else num_cpus."""
    deployments = config["applications"][0].get("deployments", [])
    remover = next((d for d in deployments if d.get("name") == "BackgroundRemover"), {})
    actor_options = remover.get("ray_actor_options") or {}
    env_threads = ((actor_options.get("runtime_env") or {}).get("env_vars") or {}).get("OMP_NUM_THREADS")
    if env_threads is not None:
        return int(env_threads)
    return max(math.floor(actor_options.get("num_cpus", 1)), 1)  # Ray's rule, ray._private.utils


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the Serve config you deploy")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override args.model.KEY (YAML value), repeatable; as you will deploy it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    model_overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.overrides)}
    config = derive_config(args.config, model=model_overrides)
    settings = parse_app_args(config["applications"][0].get("args")).model
    if settings.execution != "compiled":
        print(f"nothing to build: execution is {settings.execution!r} (add --set execution=compiled)",
              file=sys.stderr)
        return 2
    threads = replica_threads(config)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    from serve_app.model.core import BackgroundRemovalModel  # after the thread count is set

    started = time.perf_counter()
    model = BackgroundRemovalModel.from_settings(settings)
    report = {"execution": model.execution, "threads": threads, "seconds": round(time.perf_counter() - started, 1),
              "compile_cache_dir": str(os.environ.get("TORCHINDUCTOR_CACHE_DIR")),
              "buckets": {str(size): warmup for size, warmup in model.compile_warmup.items()}}
    print(json.dumps(report), flush=True)
    if model.execution != "compiled":
        print("compiling failed and the model fell back to eager; see the log above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

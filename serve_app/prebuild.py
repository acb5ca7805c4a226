"""Fill the compile cache before deploying, so that no replica pays the cold compile (minutes per bucket).

    python -m serve_app.prebuild --config configs/prod.yaml      (make prebuild; prod.yaml runs compiled_graphs)

Builds the model in a Ray task with the model deployment's `ray_actor_options` (GPU, CPUs, runtime_env), so in
the same kind of process as a replica: inductor's cache keys depend on the process, not only on the model. A
plain process fills entries that a replica (OMP_NUM_THREADS = its num_cpus, set by Ray) never hits, even with its
thread count matched.
Run it where you deploy (same GPU kind, same torch) with the config you deploy.

Each bucket is compiled in its own task, all at once, sharing the replica's GPU (a fraction of it each): a compile
is mostly CPU work, so two buckets of BiRefNet take little longer than one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import ray

from serve_app import local_ray
from serve_app.preflight import check
from serve_app.serve_config import derive_config, parse_overrides, remover_actor_options
from serve_app.settings import COMPILED_EXECUTIONS, ModelSettings, parse_app_args


def bucket_task_options(options: dict, buckets: int) -> dict:
    """A replica's actor options for one of `buckets` tasks that share its GPU."""
    gpus = options.get("num_gpus", 0)
    return {**options, "num_gpus": gpus / buckets} if gpus else dict(options)


def build_model(model_settings: dict) -> dict:
    """What a replica's constructor does to the model; returns what was compiled and whether the cache had it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from serve_app.model.core import BackgroundRemovalModel

    started = time.perf_counter()
    model = BackgroundRemovalModel.from_settings(ModelSettings.model_validate(model_settings))
    model.warm_up_cutout_stream()  # large photos' PNG kernels, into Triton's cache: their first use loads them
    return {"execution": model.execution, "seconds": round(time.perf_counter() - started, 1),
            "buckets": {str(size): warmup for size, warmup in model.compile_warmup.items()}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the Serve config you deploy")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override args.model.KEY (YAML value), repeatable; as you will deploy it")
    parser.add_argument("--address", default=None, help="Ray cluster to run on (default: RAY_ADDRESS, else a "
                                                        "local Ray started for this)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Checked before Ray starts, in one line, as `make serve` checks before `serve run`: the settings, the GPU
    # (where the build runs here), the model's code.
    env = dict(os.environ)
    if args.address == "local":
        env.pop("RAY_ADDRESS", None)
    elif args.address:
        env["RAY_ADDRESS"] = args.address
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    status, line = check(args.config, env, model=overrides, serving=False)
    if status:
        print(f"error: {line}", file=sys.stderr)
        return status
    config = derive_config(args.config, model=overrides)
    app = parse_app_args(config["applications"][0].get("args"))
    compiled = [settings for settings in app.served_models if settings.execution in COMPILED_EXECUTIONS]
    if not compiled:
        print(f"nothing to build: no model's execution is compiled (add --set execution=X, X one of "
              f"{', '.join(COMPILED_EXECUTIONS)})", file=sys.stderr)
        return 2
    # Every bucket of every model in a task of its own, all side by side on the GPU they share.
    jobs = [(settings, size) for settings in compiled for size in settings.graph_batch_sizes]
    options = bucket_task_options(remover_actor_options(config), len(jobs))
    local_ray.init(address=args.address, logging_level=logging.WARNING)
    for settings in compiled:
        print(f"building {settings.served_name} ({settings.model_id}) for buckets {list(settings.graph_batch_sizes)}",
              flush=True)
    print(f"{len(jobs)} tasks, each with {options}; a cold compile takes minutes per bucket", flush=True)
    started = time.perf_counter()
    task = ray.remote(build_model).options(**options)
    reports = ray.get([task.remote(settings.model_copy(update={"graph_batch_sizes": (size,)}).model_dump(mode="json"))
                       for settings, size in jobs])
    failed = 0
    for settings in compiled:
        mine = [report for (owner, _), report in zip(jobs, reports, strict=True) if owner is settings]
        executions = {r["execution"] for r in mine}  # compiled_graphs runs as compiled where there is no CUDA
        report = {"model": settings.served_name,
                  "execution": executions.pop() if len(executions) == 1 else "eager",
                  "seconds": round(time.perf_counter() - started, 1),
                  "buckets": {size: warmup for r in mine for size, warmup in r["buckets"].items()}}
        print(json.dumps(report), flush=True)
        if report["execution"] == "eager":
            print(f"compiling {settings.served_name} failed and it fell back to eager; see the log above",
                  file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Closed-loop HTTP benchmark of the whole service: mixed-size JPEGs in, RGBA PNGs out.

Starts `serve run` on a config (with overrides) or targets a running service, drives it with N concurrent
clients, and writes a JSON record: images/s, p50/p95/p99 latency, GPU batch-size histogram, GPU busy fraction.

    python scripts/bench_service.py --config configs/prod.yaml --levels 1,32 --duration 60 \
        --model-id import:birefnet_random:build --out docs/benchmarks/service.json

prod.yaml runs `execution: compiled_graphs`: on a GPU kind the compile cache has not seen, the first start compiles
for minutes (within --ready-timeout's 900 s). Fill the cache first (`python -m serve_app.prebuild --config
configs/prod.yaml --set model_id=...`, the same model), or measure `--set-model execution=cuda_graphs`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from serve_app.bench.gpu_monitor import GpuBusySampler
from serve_app.bench.http_load import closed_loop
from serve_app.bench.photos import sample_photo_jpegs
from serve_app.bench.service_process import ServeProcess, model_info
from serve_app.serve_config import INGRESS_PROXIES, derive_config, ingress_proxy_env, parse_overrides


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/prod.yaml"))
    parser.add_argument("--url", help="benchmark this running service instead of starting one")
    parser.add_argument("--model-id", help="override args.model.model_id (directory, Hub id or import: path)")
    parser.add_argument("--max-batch-size", type=int)
    parser.add_argument("--batch-wait-s", type=float)
    parser.add_argument("--ingress-replicas", type=int, help="fixed ingress replicas instead of autoscaling")
    parser.add_argument("--remover-replicas", type=int, help="fixed model replicas instead of autoscaling")
    parser.add_argument("--ingress-proxy", choices=INGRESS_PROXIES, default="serve",
                        help="what takes the HTTP port: Serve's proxy actor, or HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1)")
    parser.add_argument("--levels", default="1,32",
                        help="comma-separated levels run in order, each CLIENTS or CLIENTS:QUERY "
                             "(e.g. 32:only_mask=true)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=15.0, help="unmeasured seconds before each level")
    parser.add_argument("--photos", type=int, default=32, help="distinct test photos to cycle through")
    parser.add_argument("--photo-dir", type=Path,
                        help="folder of scikit-image's sample photos the test JPEGs are made from (default: installed)")
    parser.add_argument("--set-model", action="append", default=[], metavar="KEY=VALUE",
                        help="override args.model.KEY (YAML value), repeatable")
    parser.add_argument("--set-ingress", action="append", default=[], metavar="KEY=VALUE",
                        help="override args.ingress.KEY (YAML value), repeatable")
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, help="write the JSON record here")
    return parser.parse_args()


def histogram_delta(before: dict, after: dict) -> dict[str, int]:
    delta = Counter({k: int(v) for k, v in after.items()})
    delta.subtract({k: int(v) for k, v in before.items()})
    return {size: count for size, count in sorted(delta.items(), key=lambda kv: int(kv[0])) if count > 0}


def startup_timeline(serve_run_at: float, ready_after_s: float, replica: dict) -> dict:
    """Where the seconds to /readyz went: until the model replica began to initialise (Ray, Serve, the process),
    its model load (compiled buckets included), warm-up and memory probe, and the rest (the last readiness poll
    included). The model replica runs on this machine, so the wall clocks agree."""
    began_s = replica["init_started_at"] - serve_run_at
    parts = {"until_model_replica_init_s": round(began_s, 1), "model_load_s": replica["model_load_s"],
             "warm_up_s": replica["warm_up_s"], "memory_probe_s": replica.get("memory_probe_s", 0.0)}
    return {**parts, "rest_s": round(ready_after_s - sum(parts.values()), 1)}


def run_levels(base_url: str, photos: list[bytes], args: argparse.Namespace) -> list[dict]:
    levels = []
    for level in args.levels.split(","):
        clients_text, _, query = level.partition(":")
        clients = int(clients_text)
        url = f"{base_url}/v1/remove-background" + (f"?{query}" if query else "")
        before = model_info(base_url)["batch_size_histogram"]
        with GpuBusySampler() as sampler:
            result = asyncio.run(closed_loop(url, photos, clients=clients, duration_s=args.duration,
                                             warmup_s=args.warmup))
        summary = {"query": query, **result.summary()}
        summary["batch_size_histogram"] = histogram_delta(before, model_info(base_url)["batch_size_histogram"])
        summary |= sampler.summary()  # GPU busy fraction, SM clock, power
        print(json.dumps(summary), flush=True)
        levels.append(summary)
    return levels


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    photos = sample_photo_jpegs(args.photos, photo_dir=args.photo_dir)
    print(f"made {len(photos)} test photos in {time.monotonic() - started:.1f} s", flush=True)
    record: dict = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "command": shlex.join([Path(sys.executable).name, *sys.argv])}
    server = None
    workdir = Path(tempfile.mkdtemp(prefix="bench_service_"))
    try:
        if args.url:
            base_url = args.url.rstrip("/")
        else:
            config = derive_config(
                args.config,
                model={**parse_overrides(args.set_model), **({"model_id": args.model_id} if args.model_id else {})},
                ingress=parse_overrides(args.set_ingress),
                batching={k: v for k, v in (("max_batch_size", args.max_batch_size),
                                            ("batch_wait_timeout_s", args.batch_wait_s)) if v is not None},
                remover={"num_replicas": args.remover_replicas, "autoscaling_config": None}
                if args.remover_replicas else None,
                ingress_replicas=args.ingress_replicas,
            )
            record["config"] = config
            record["ingress_proxy"] = args.ingress_proxy
            server = ServeProcess(config, workdir, workdir / "serve.log",
                                  env=ingress_proxy_env(args.ingress_proxy))
            record["ready_after_s"] = round(server.wait_ready(args.ready_timeout), 1)
            print(f"service ready after {record['ready_after_s']} s", flush=True)
            base_url = server.base_url
        record["model"] = model_info(base_url)
        if server is not None and "startup" in record["model"]:
            record["startup"] = startup_timeline(server.started_at, record["ready_after_s"], record["model"]["startup"])
        record["levels"] = run_levels(base_url, photos, args)
        record["model_after"] = model_info(base_url)  # live batch limit, out-of-memory splits, histogram
    finally:
        if server is not None:
            server.stop()
            print(f"serve log: {server.log_path}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Closed-loop HTTP benchmark of the whole service: mixed-size JPEGs in, RGBA PNGs out.

Starts `serve run` on a config (with overrides) or targets a running service, drives it with N concurrent
clients, and writes a JSON record: images/s, p50/p95/p99 latency, GPU batch-size histogram, GPU busy fraction.

    python scripts/bench_service.py --config configs/prod.yaml --model-id /path/to/hub-layout-dir \
        --levels 64,1 --duration 40 --warmup 20 --out service.json

prod.yaml runs `execution: compiled_graphs`: on a GPU kind the compile cache has not seen, the first start compiles
for minutes (within --ready-timeout's 900 s). Fill the cache first (`python -m serve_app.prebuild --config
configs/prod.yaml --set model_id=...`, the same model), or measure `--set-model execution=cuda_graphs`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.gpu_monitor import GpuBusySampler
from harness.http_load import closed_loop
from harness.photos import sample_photo_jpegs
from harness.run_record import run_record
from harness.service_process import ServeProcess, model_info
from serve_app.serve_config import INGRESS_PROXIES, derive_config, haproxy_enabled, parse_overrides, with_ingress_proxy


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/prod.yaml"))
    parser.add_argument("--url", help="benchmark this running service instead of starting one")
    parser.add_argument("--model-id", help="override args.model.model_id (directory, Hub id or import: path)")
    parser.add_argument("--max-batch-size", type=int)
    parser.add_argument("--batch-wait-s", type=float)
    parser.add_argument("--ingress-replicas", type=int, help="fixed ingress replicas instead of autoscaling")
    parser.add_argument("--remover-replicas", type=int, help="fixed model replicas instead of autoscaling")
    parser.add_argument("--ingress-proxy", choices=INGRESS_PROXIES,
                        help="what takes the HTTP port: Serve's proxy actor or HAProxy (default: as the config says)")
    parser.add_argument("--levels", default="1,32",
                        help="comma-separated levels run in order, each CLIENTS or CLIENTS:QUERY "
                             "(e.g. 32:only_mask=true); QUERY|QUERY splits the clients between them "
                             "(64:model=a|model=b: half for each model; @/lite?QUERY: the application routed at /lite)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=15.0, help="unmeasured seconds before each level")
    parser.add_argument("--photos", type=int, default=32, help="distinct test photos to cycle through")
    parser.add_argument("--photo-dir", type=Path,
                        help="folder of scikit-image's sample photos the test JPEGs are made from (default: installed)")
    parser.add_argument("--set-model", action="append", default=[], metavar="KEY=VALUE",
                        help="override args.model.KEY (YAML value), repeatable")
    parser.add_argument("--set-ingress", action="append", default=[], metavar="KEY=VALUE",
                        help="override args.ingress.KEY (YAML value), repeatable")
    parser.add_argument("--photo-size", metavar="WxH", help="every photo this size (e.g. 4000x3000, 12 MP) instead "
                                                            "of mixed sizes from 0.3 to 6 MP")
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    parser.add_argument("--serve-run-at", type=float, help="with --url: when `serve run` started (epoch seconds, "
                                                           "this machine), to record where the start-up went")
    parser.add_argument("--ready-after-s", type=float, help="with --serve-run-at: seconds until /readyz answered 200")
    parser.add_argument("--out", type=Path, help="write the JSON record here")
    return parser.parse_args()


def count_delta(before: dict, after: dict) -> Counter:
    """What counters (name -> count) rose by from `before` to `after`; only the names that rose."""
    delta = Counter({k: int(v) for k, v in after.items()})
    delta.subtract({k: int(v) for k, v in before.items()})
    return Counter({name: count for name, count in delta.items() if count > 0})


def histogram_delta(before: dict, after: dict) -> dict[str, int]:
    return dict(sorted(count_delta(before, after).items(), key=lambda kv: int(kv[0])))


def startup_timeline(serve_run_at: float, ready_after_s: float, replica: dict, load_phases: dict) -> dict:
    """Where the seconds to /readyz went, in order: Ray and Serve until the model replica's process took up the
    deployment's code, from there until the replica's constructor ran (Serve's replica), its imports, the model
    (module, copy to the device, compiled buckets), warm-up and memory probe until Serve could route to it, and the
    rest (the ingress seeing the replica, the last readiness poll). The model replica runs on this machine, so the
    wall clocks agree."""
    parts = {"until_model_replica_s": replica["module_imported_at"] - serve_run_at,
             "replica_until_init_s": replica["init_started_at"] - replica["module_imported_at"],
             "imports_s": replica["imports_s"],
             **{f"model_{name}": seconds for name, seconds in load_phases.items()}}
    parts["model_rest_s"] = replica["model_load_s"] - replica["imports_s"] - sum(load_phases.values())
    parts["until_configured_s"] = replica["configured_at"] - replica["init_started_at"] - replica["model_load_s"]
    parts["rest_s"] = ready_after_s - (replica["configured_at"] - serve_run_at)
    return {name: round(seconds, 1) for name, seconds in parts.items()}


def level_url(base_url: str, part: str) -> str:
    """The route one share of a level's clients sends to: QUERY, or @PREFIX?QUERY for an application that Serve
    routes under PREFIX (another application of the same config)."""
    prefix = ""
    if part.startswith("@"):
        prefix, _, part = part[1:].partition("?")
    return f"{base_url}{prefix}/v1/remove-background" + (f"?{part}" if part else "")


def replica_infos(base_url: str, *, settle_calls: int = 12, max_calls: int = 64) -> dict[str, dict]:
    """The model part of /v1/info of every model replica, by replica id. Each call reaches one replica (Serve
    spreads them), so calls go on until `settle_calls` in a row bring no new replica, `max_calls` at most: with one
    replica per GPU, the chance of missing one of two is 2^-11."""
    seen: dict[str, dict] = {}
    calls_since_new = 0
    for _ in range(max_calls):
        info = model_info(base_url)
        replica = str(info.get("replica", {}).get("id"))
        calls_since_new = 0 if replica not in seen else calls_since_new + 1
        seen[replica] = info
        if calls_since_new >= settle_calls:
            break
    return seen


def histograms_over_replicas(before: dict[str, dict], after: dict[str, dict]) -> dict:
    """What the model replicas ran between two replica_infos: the batch sizes over all of them (the default
    model's), per model, and per replica with the GPUs Ray gave it (each GPU's histogram, with one replica per GPU);
    and the large photos' PNGs asked of the devices, by outcome. A replica that started in between counts from
    zero."""
    total: Counter = Counter()
    device_png: Counter = Counter()  # large photos' PNGs asked of the device, by outcome (the default model's)
    by_model: dict[str, Counter] = {}
    by_replica = {}
    for replica, info in after.items():
        earlier = before.get(replica, {})
        device_png.update(count_delta(earlier.get("device_png", {}), info.get("device_png", {})))
        delta = histogram_delta(earlier.get("batch_size_histogram", {}), info.get("batch_size_histogram", {}))
        total.update(delta)
        by_replica[replica] = {"gpu_ids": info.get("replica", {}).get("gpu_ids", []), "batch_size_histogram": delta}
        for name, model in info.get("models", {}).items():
            earlier_model = earlier.get("models", {}).get(name, {})
            by_model.setdefault(name, Counter()).update(histogram_delta(
                earlier_model.get("batch_size_histogram", {}), model.get("batch_size_histogram", {})))
    return {"batch_size_histogram": histogram_delta({}, total),
            "batch_size_histogram_by_model": {name: histogram_delta({}, counts) for name, counts in by_model.items()},
            "batch_size_histogram_by_replica": by_replica, "device_png": dict(sorted(device_png.items()))}


def run_levels(base_url: str, photos: list[bytes], args: argparse.Namespace) -> list[dict]:
    levels = []
    for level in args.levels.split(","):
        clients_text, _, query = level.partition(":")
        clients = int(clients_text)
        urls = [level_url(base_url, part) for part in query.split("|")]
        with GpuBusySampler() as sampler:
            result = asyncio.run(closed_loop(urls, photos, clients=clients, duration_s=args.duration,
                                             warmup_s=args.warmup, at_window_edges=lambda: replica_infos(base_url)))
        summary = {"query": query, **result.summary()}
        # The passes, and how busy the GPU was, in the measured window, as its throughput and latencies
        opened, closed = result.window_edges
        summary |= histograms_over_replicas(opened, closed)
        summary |= sampler.summary(result.window_clock)  # GPU busy fraction, SM clock, power
        print(json.dumps(summary), flush=True)
        levels.append(summary)
    return levels


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    size_range = None
    if args.photo_size:
        width, _, height = args.photo_size.partition("x")
        size_range = ((int(width), int(height)), (int(width), int(height)))
    photos = sample_photo_jpegs(args.photos, photo_dir=args.photo_dir, size_range=size_range)
    print(f"made {len(photos)} test photos in {time.monotonic() - started:.1f} s", flush=True)
    record: dict = run_record()
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
            if args.ingress_proxy:
                with_ingress_proxy(config, args.ingress_proxy)
            record["config"] = config
            record["ingress_proxy"] = "haproxy" if haproxy_enabled(config, os.environ) else "serve"
            server = ServeProcess(config, workdir, workdir / "serve.log")
            record["ready_after_s"] = round(server.wait_ready(args.ready_timeout), 1)
            print(f"service ready after {record['ready_after_s']} s", flush=True)
            base_url = server.base_url
        record["model"] = model_info(base_url)
        serve_run_at = server.started_at if server is not None else args.serve_run_at
        if serve_run_at and args.ready_after_s is not None:
            record["ready_after_s"] = args.ready_after_s
        if serve_run_at and "ready_after_s" in record:
            record["startup"] = startup_timeline(serve_run_at, record["ready_after_s"], record["model"]["startup"],
                                                 record["model"].get("load_phases", {}))
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

"""Kill the model replica of a running service (SIGKILL) under load; report failures and recovery times as JSON.

steady: N closed-loop clients; counts non-200 answers and times until requests and /readyz succeed again.
bulk:   the bulk client over a folder; checks it finished with every output written and nothing failed.
The service must run on this machine at a loopback URL: the replica is found by its pid in GET /v1/info and
checked to be a BackgroundRemover replica of the Ray instance serving that port before it is killed.

    python scripts/fault_injection.py --url http://127.0.0.1:8000 --mode both --out fault.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from harness.fault import FaultPlan, bulk_with_kill, steady_load_with_kill, wait_healthy
from harness.overload import photo_bodies
from harness.photos import write_photo_folder


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--mode", choices=["steady", "bulk", "both"], default="both")
    parser.add_argument("--clients", type=int, default=8, help="steady: concurrent closed-loop clients")
    parser.add_argument("--kill-after", type=float, default=5.0, help="steady: seconds of load before the kill")
    parser.add_argument("--settle", type=float, default=5.0, help="steady: seconds of load after recovery")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="steady: the load stops by then")
    parser.add_argument("--photos", type=int, default=16, help="steady: distinct photos to cycle through")
    parser.add_argument("--photos-dir", type=Path, help="steady: use these images instead of synthetic JPEGs")
    parser.add_argument("--bulk-input", type=Path, help="bulk: folder of images (default: synthetic photos)")
    parser.add_argument("--bulk-images", type=int, default=200, help="bulk: synthetic photos to make")
    parser.add_argument("--bulk-output", type=Path, help="bulk: output folder, must not exist (default: temp)")
    parser.add_argument("--concurrency", type=int, default=8, help="bulk: requests in flight")
    parser.add_argument("--kill-after-outputs", type=int, default=20, help="bulk: outputs written before the kill")
    parser.add_argument("--bulk-timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, help="write the JSON record here")
    return parser.parse_args()


def run_bulk(args: argparse.Namespace, scratch: Path) -> dict:
    input_dir = args.bulk_input
    if input_dir is None:
        input_dir = scratch / "photos"
        write_photo_folder(str(input_dir), args.bulk_images, workers=2)
    output_dir = args.bulk_output or scratch / "cutouts"
    if output_dir.exists():
        raise SystemExit(f"{output_dir} exists: the check needs a fresh output folder")
    return bulk_with_kill(args.url, input_dir, output_dir, kill_after_outputs=args.kill_after_outputs,
                          concurrency=args.concurrency, timeout_s=args.bulk_timeout)


def main() -> None:
    args = parse_args()
    url = args.url.rstrip("/")
    # bulk mode needs one photo only, to check the service is healthy again
    bodies = photo_bodies(args.photos_dir, args.photos if args.mode != "bulk" else 1)
    record: dict = {}
    with tempfile.TemporaryDirectory(prefix="fault_injection_") as scratch:
        if args.mode in ("steady", "both"):
            plan = FaultPlan(clients=args.clients, kill_after_s=args.kill_after, settle_s=args.settle,
                             max_s=args.max_seconds)
            record["steady"] = asyncio.run(steady_load_with_kill(url, bodies, plan))
            record["steady"]["healthy_again_after_s"] = round(wait_healthy(url, bodies[0]), 1)
        if args.mode in ("bulk", "both"):
            record["bulk"] = run_bulk(args, Path(scratch))
            record["bulk"]["healthy_again_after_s"] = round(wait_healthy(url, bodies[0]), 1)
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    steady, bulk = record.get("steady"), record.get("bulk")
    healthy = (steady is None or steady["failed"] == 0) and (
        bulk is None or (bulk["exit_code"] == 0 and bulk["summary_counts_right"] and not bulk["missing_outputs"]))
    raise SystemExit(0 if healthy else 1)


if __name__ == "__main__":
    main()

"""Open-loop overload of a running service: every answer must be a PNG of the input's size or a 503 with Retry-After.

Measures capacity with a short closed loop (or takes --rate), then sends requests at --rate-factor times it for
--duration seconds whatever the service does, sampling the memory of its Ray processes; prints a JSON record.
Only loopback URLs are accepted, and the service must run on this machine (its processes are found by port).

    python scripts/overload.py --url http://127.0.0.1:8000 --duration 60 --out overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from harness.answers import FAILED
from harness.overload import OverloadPlan, photo_bodies, run_overload


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, help="requests/s; default: --rate-factor x the measured capacity")
    parser.add_argument("--rate-factor", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals")
    parser.add_argument("--burst", type=int, default=0, help="requests sent at once before the steady arrivals")
    parser.add_argument("--repeats", type=int, default=1, help="overload runs at the same rate, each measured")
    parser.add_argument("--max-in-flight", type=int, default=1024, help="arrivals beyond this are not sent")
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request before it counts failed")
    parser.add_argument("--capacity-clients", type=int, default=16)
    parser.add_argument("--capacity-duration", type=float, default=10.0)
    parser.add_argument("--capacity-warmup", type=float, default=3.0)
    parser.add_argument("--photos", type=int, default=16, help="distinct photos to cycle through")
    parser.add_argument("--photos-dir", type=Path, help="use these images instead of synthetic JPEGs")
    parser.add_argument("--out", type=Path, help="write the JSON record here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    plan = OverloadPlan(duration_s=args.duration, rate_per_s=args.rate, rate_factor=args.rate_factor,
                        burst=args.burst, repeats=args.repeats, capacity_clients=args.capacity_clients,
                        capacity_s=args.capacity_duration, capacity_warmup_s=args.capacity_warmup,
                        max_in_flight=args.max_in_flight, max_requests=args.max_requests, timeout_s=args.timeout)
    record = asyncio.run(run_overload(args.url, photo_bodies(args.photos_dir, args.photos), plan))
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    raise SystemExit(1 if any(run["overload"]["outcomes"].get(FAILED) for run in record["runs"]) else 0)


if __name__ == "__main__":
    main()

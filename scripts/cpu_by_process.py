"""CPUs busy per group of processes over a span of seconds: the ingress replicas, the model replica, HAProxy, the
benchmark's own client, Ray's daemons; what a load spends where, on the host it runs on (Linux: /proc).

    python scripts/cpu_by_process.py --seconds 20 --out cpu_12mp.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

# A process belongs to the first group whose key is in its command line (Ray names its workers after their actor).
GROUPS = (("Ingress", "ingress"), ("BackgroundRemover", "model_replica"), ("haproxy", "haproxy"),
          ("bench_service", "client"), ("bench_bulk", "client"), ("ProxyActor", "serve_proxy"),
          ("ServeController", "controller"), ("raylet", "raylet"), ("gcs_server", "gcs"))


def group_of(command: str) -> str:
    for key, name in GROUPS:
        if key in command:
            return name
    return "other:" + command.split(" ")[0][-30:]


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Each process's command line and CPU seconds (user + system) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        found[int(entry)] = (command, (int(fields[11]) + int(fields[12])) / tick)
    return found


def busy_by_group(seconds: float) -> dict[str, float]:
    """CPUs busy per group over `seconds` (groups under 5% of a CPU left out), busiest first."""
    before, started = cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = cpu_seconds(), time.monotonic() - started  # a sleep on a busy host runs over
    groups: defaultdict[str, float] = defaultdict(float)
    for pid, (command, spent) in after.items():
        if command:
            groups[group_of(command)] += spent - before.get(pid, (command, 0.0))[1]
    return {name: round(spent / elapsed, 2) for name, spent in sorted(groups.items(), key=lambda kv: -kv[1])
            if spent > 0.05 * elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, help="write the record as JSON here")
    args = parser.parse_args()
    record = json.dumps({"seconds": args.seconds, "cpus_busy": busy_by_group(args.seconds)})
    print(record)
    if args.out:
        args.out.write_text(record + "\n")


if __name__ == "__main__":
    main()

"""CPUs busy per group of processes over a span of seconds: the ingress replicas, the model replica, HAProxy, the
benchmark's own client, Ray's daemons; what a load spends where, on the host it runs on (Linux: /proc). Also, per
group, the threads by name (the service's pools name theirs: serve_app/threads.py; a number at the end, as in
codec_3, is left out, so that a pool counts as one), the busiest first.

    python scripts/cpu_by_process.py --seconds 20 --out cpu_12mp.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def _spent(stat: str) -> float:
    """User + system CPU seconds from a /proc .../stat line."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[tuple[int, int], tuple[str, str, float]]:
    """Each thread's process command line, thread name and CPU seconds (user + system) so far, by (pid, tid)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            tasks = os.listdir(f"/proc/{entry}/task")
        except OSError:  # gone meanwhile
            continue
        for task in tasks:
            try:
                folder = Path(f"/proc/{entry}/task/{task}")
                found[int(entry), int(task)] = (command, (folder / "comm").read_text().strip(),
                                                _spent((folder / "stat").read_text()))
            except (OSError, IndexError):  # gone meanwhile
                continue
    return found


def thread_kind(name: str) -> str:
    """A thread's name without its number in a pool (codec_3: codec)."""
    return re.sub(r"_\d+$", "", name)


def busy_by_group(seconds: float) -> dict[str, float]:
    """CPUs busy per group over `seconds` (groups under 5% of a CPU left out), busiest first."""
    return busy_by_group_and_thread(seconds)[0]


def busy_by_group_and_thread(seconds: float) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """busy_by_group's figures, and within each of those groups the CPUs busy per thread kind (kinds under 5% of a
    CPU left out)."""
    before, started = cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = cpu_seconds(), time.monotonic() - started  # a sleep on a busy host runs over
    groups: defaultdict[str, float] = defaultdict(float)
    kinds: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key, (command, name, spent) in after.items():
        if command:
            used = spent - before.get(key, (command, name, 0.0))[2]
            groups[group_of(command)] += used
            kinds[group_of(command)][thread_kind(name)] += used
    busy = _busiest(groups, elapsed)
    return busy, {group: _busiest(kinds[group], elapsed) for group in busy}


def _busiest(spent: dict[str, float], elapsed: float) -> dict[str, float]:
    return {name: round(seconds / elapsed, 2) for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1])
            if seconds > 0.05 * elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, help="write the record as JSON here")
    args = parser.parse_args()
    groups, threads = busy_by_group_and_thread(args.seconds)
    record = json.dumps({"seconds": args.seconds, "cpus_busy": groups, "threads_busy": threads})
    print(record)
    if args.out:
        args.out.write_text(record + "\n")


if __name__ == "__main__":
    main()

"""The CPUs busy per group of processes: a process is counted in the group its command line names, and its threads
by the names the service's pools give them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cpu_by_process import busy_by_group, busy_by_group_and_thread, group_of, thread_kind

from serve_app.threads import named_pool

SPIN = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"


def test_processes_are_grouped_by_what_runs_in_them() -> None:
    assert group_of("ray::ServeReplica:background-removal:Ingress") == "ingress"
    assert group_of("ray::ServeReplica:background-removal:BackgroundRemover") == "model_replica"
    assert group_of("/usr/sbin/haproxy -f /tmp/haproxy.cfg") == "haproxy"
    assert group_of("python3 scripts/bench_service.py --url http://127.0.0.1:8000") == "client"
    assert group_of("/usr/bin/sleep 10") == "other:/usr/bin/sleep"


def test_a_busy_process_counts_in_its_group() -> None:
    # a process spinning on one CPU, named as the benchmark client would be
    spinner = subprocess.Popen([sys.executable, "-c", SPIN, "bench_service"])
    try:
        busy = busy_by_group(1.5)
    finally:
        spinner.wait(timeout=30)
    assert 0.1 <= busy.get("client", 0.0) <= 1.1, busy  # one CPU at most; less on a busy host


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_busy_named_pool_thread_counts_by_its_name_in_its_process_group() -> None:
    pool = named_pool(1, "spinner")
    try:
        spinning = pool.submit(spin, 2.0)
        _, threads = busy_by_group_and_thread(1.0)
        spinning.result(timeout=30)
    finally:
        pool.shutdown()
    ours = group_of(Path(f"/proc/{os.getpid()}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    assert 0.1 <= threads[ours].get("spinner", 0.0) <= 1.1, threads  # the pool's own name, without its _0
    assert thread_kind("codec_12") == "codec" and thread_kind("ray::IDLE") == "ray::IDLE"

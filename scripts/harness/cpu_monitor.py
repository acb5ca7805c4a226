"""Sample the host's CPU utilisation once a second in the background: how many CPUs were busy, second by second."""

from __future__ import annotations

import os
import threading
from pathlib import Path

try:
    import psutil
except ImportError:  # a benchmark-only dependency; /proc/stat says the same on Linux
    psutil = None


def parse_proc_stat(text: str) -> tuple[float, float]:
    """(busy, total) CPU time of all CPUs, in clock ticks, from /proc/stat's aggregate `cpu` line.

    Idle and I/O wait count as not busy; guest time is left out because user time already includes it.
    """
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [float(value) for value in fields[1:9]]  # user nice system idle iowait irq softirq steal
            total = sum(ticks)
            return total - ticks[3] - ticks[4], total
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def read_cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds (or ticks) of all CPUs since boot."""
    if psutil is not None:
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        total = sum(getattr(times, name, 0.0) for name in
                    ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"))
        return total - idle, total
    return parse_proc_stat(Path("/proc/stat").read_text())


def busy_cpus(before: tuple[float, float], after: tuple[float, float], cpus: int) -> float | None:
    """How many CPUs were busy on average between two read_cpu_times() readings (None if no time passed)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total * cpus if total > 0 else None


class CpuBusySampler:
    """Busy CPUs of the host (all of its CPUs, every process) per interval while the context is open."""

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.cpus = os.cpu_count() or 1
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        previous = read_cpu_times()
        while not self._stop.wait(self.interval_s):
            current = read_cpu_times()
            busy = busy_cpus(previous, current, self.cpus)
            if busy is not None:
                self.samples.append(busy)
            previous = current

    def __enter__(self) -> CpuBusySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict:
        """What a benchmark record keeps: the mean, and the busy CPUs of each interval to one decimal."""
        mean = sum(self.samples) / len(self.samples) if self.samples else None
        return {"cpus": self.cpus, "sample_interval_s": self.interval_s,
                "cpu_busy_mean": round(mean, 2) if mean is not None else None,
                "cpu_busy_fraction_mean": round(mean / self.cpus, 3) if mean is not None else None,
                "cpu_busy_per_sample": [round(value, 1) for value in self.samples]}

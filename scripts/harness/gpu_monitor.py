"""Sample the GPU with nvidia-smi in the background: how busy it was, and at what clock and power, over a run."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterable

_FIELDS = ("utilization.gpu", "clocks.sm", "power.draw")


def parse_samples(stdout: str) -> list[tuple[float | None, ...]]:
    """(utilisation %, SM clock MHz, power W) per GPU from nvidia-smi's csv,noheader,nounits lines; a field it
    could not read ([N/A]) is None, and a line that is no sample at all is left out."""
    rows: list[tuple[float | None, ...]] = []
    for line in stdout.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(_FIELDS):
            continue
        values = tuple(_number(field) for field in fields)
        if any(value is not None for value in values):
            rows.append(values)
    return rows


def _number(field: str) -> float | None:
    try:
        return float(field)
    except ValueError:
        return None


class GpuBusySampler:
    """Averages of nvidia-smi's utilization.gpu (percent of time a kernel ran), SM clock and power draw over the
    sampling window (over all GPUs of the machine). A lower clock under sustained load, against a short run's,
    is one reason two measurements of the same work differ."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.samples: list[list[tuple[float | None, ...]]] = []  # per sample: parse_samples' rows, one per GPU
        self.times: list[float] = []  # per sample: time.perf_counter() when it was taken
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            result = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(_FIELDS)}", "--format=csv,noheader,nounits"],
                                    capture_output=True, text=True, timeout=10)
            rows = parse_samples(result.stdout)
            if rows:
                self.add(rows)

    def add(self, rows: list[tuple[float | None, ...]], at: float | None = None) -> None:
        """One sample: parse_samples' rows, one per GPU, taken at `at` (time.perf_counter(); default now)."""
        self.samples.append(rows)
        self.times.append(time.perf_counter() if at is None else at)

    def __enter__(self) -> GpuBusySampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=15)

    def _within(self, window: tuple[float, float] | None) -> list[list[tuple[float | None, ...]]]:
        if window is None:
            return self.samples
        return [sample for sample, at in zip(self.samples, self.times, strict=True) if window[0] <= at <= window[1]]

    @staticmethod
    def _mean(samples: list[list[tuple[float | None, ...]]], index: int) -> float | None:
        """The field's mean over the samples of its mean over the GPUs."""
        return _mean_of([_mean_of(row[index] for row in sample) for sample in samples])

    def busy_fraction(self, window: tuple[float, float] | None = None) -> float | None:
        mean = self._mean(self._within(window), 0)
        return round(mean / 100.0, 3) if mean is not None else None

    def summary(self, window: tuple[float, float] | None = None) -> dict[str, float | None]:
        """What a benchmark record keeps of the samples taken within `window` (time.perf_counter() values; None:
        all of them): a load's measured window, not its warm-up and drain."""
        samples = self._within(window)
        clock, power = self._mean(samples, 1), self._mean(samples, 2)
        same_gpus = len({len(sample) for sample in samples}) == 1
        # zip(*samples): each GPU's rows over the window
        by_gpu = [_mean_of(row[0] for row in rows) for rows in zip(*samples, strict=True)] if same_gpus else []
        return {"gpu_busy_fraction": self.busy_fraction(window),
                # each GPU's own: on a host with several, one starved GPU hides in the mean
                "gpu_busy_fraction_by_gpu": [round(mean / 100.0, 3) if mean is not None else None for mean in by_gpu],
                "gpu_sm_clock_mhz": round(clock) if clock is not None else None,
                "gpu_power_w": round(power, 1) if power is not None else None}


def _mean_of(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None

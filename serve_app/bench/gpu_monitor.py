"""Sample GPU utilisation with nvidia-smi in the background, for the 'GPU busy fraction' of a run."""

from __future__ import annotations

import shutil
import subprocess
import threading


class GpuBusySampler:
    """Average of nvidia-smi's utilization.gpu (percent of time a kernel ran) over the sampling window."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            result = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                    capture_output=True, text=True, timeout=10)
            values = [float(v) for v in result.stdout.split() if v.strip().replace(".", "").isdigit()]
            if values:
                self.samples.append(sum(values) / len(values))

    def __enter__(self) -> GpuBusySampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=15)

    def busy_fraction(self) -> float | None:
        return round(sum(self.samples) / len(self.samples) / 100.0, 3) if self.samples else None

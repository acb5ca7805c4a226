"""Per-request stage timings, sent back as a standard `Server-Timing` header."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Collects (stage, milliseconds) pairs: `with timer.stage("decode"): ...`."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages.append((name, (time.perf_counter() - started) * 1000))

    def record(self, name: str, milliseconds: float) -> None:
        """A duration measured elsewhere (the model replica's queue and batch times)."""
        self.stages.append((name, milliseconds))

    def header(self) -> str:
        """`decode;dur=12.3, model;dur=48.0, encode;dur=30.2` (browsers' dev tools show it too)."""
        return ", ".join(f"{name};dur={ms:.1f}" for name, ms in self.stages)


def parse_server_timing(header: str) -> dict[str, float]:
    """The inverse of StageTimer.header, for benchmark clients."""
    stages = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name and duration:
            stages[name] = float(duration)
    return stages

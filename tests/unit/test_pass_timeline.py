"""The pass timeline: device time per forward, and idle time before passes that were already queued (stalls)."""

from __future__ import annotations

from serve_app.model.timeline import PassTimeline, PassTiming


class At:
    """A completed CUDA event at `ms` on the device's clock."""

    def __init__(self, ms: float):
        self.ms = ms

    def elapsed_time(self, end_event: At) -> float:
        return end_event.ms - self.ms


def timed(start: float, end: float, behind: float | None = None) -> PassTiming:
    """A pass from `start` to `end`, queued behind one that ended at `behind` (None: nothing was running)."""
    return PassTiming(At(start), At(end), At(behind) if behind is not None else None)


def test_idle_time_counts_as_a_stall_only_before_a_pass_that_was_already_waiting() -> None:
    timeline = PassTimeline()
    timeline.record(timed(0, 120))                # the first pass: nothing before it
    timeline.record(timed(124, 244, behind=120))  # queued behind it, started 4 ms after it ended: a stall
    timeline.record(timed(244, 364, behind=244))  # back to back
    timeline.record(timed(5000, 5018))            # the device had nothing to do for seconds: not a stall
    assert timeline.summary() == {"passes": 4, "forward_ms_mean": 94.5, "queued_passes": 2, "stall_ms_mean": 2.0}


def test_the_summary_covers_the_last_passes_only_and_is_empty_before_any() -> None:
    timeline = PassTimeline(window=2)
    assert timeline.summary() == {"passes": 0, "forward_ms_mean": None, "queued_passes": 0, "stall_ms_mean": None}
    for start in (0, 100, 200):
        timeline.record(timed(start, start + 10 * (start // 100 + 1)))
    assert timeline.summary()["passes"] == 2 and timeline.summary()["forward_ms_mean"] == 25.0


def test_clear_forgets_the_passes_so_far() -> None:
    timeline = PassTimeline()
    timeline.record(timed(0, 50))
    timeline.clear()
    timeline.record(timed(60, 80))
    assert timeline.summary()["passes"] == 1 and timeline.summary()["forward_ms_mean"] == 20.0

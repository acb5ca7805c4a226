"""When the bulk tool's outputs appeared: first output, overall rate and the steady-state rate of one run.

The bulk tool writes every output under a temporary name and renames it when complete (serve_app/bulk/layout.py),
and a rename keeps the file's modification time, so each output's mtime is the moment its last byte was written:
a completion time read back from the folder after the run, with no hook in the tool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from serve_app.bulk.layout import is_temporary

STEADY_LOW_QUANTILE = 0.1  # before it: Ray and the model starting, the pipeline filling
STEADY_HIGH_QUANTILE = 0.9  # after it: the pipeline draining, the last slow images


def output_completion_times(output_root: Path, suffix: str, started_at: float) -> list[float]:
    """Seconds after `started_at` (a time.time() value) at which each finished `suffix` output was written."""
    return sorted(path.stat().st_mtime - started_at for path in output_root.rglob(f"*{suffix}")
                  if path.is_file() and not is_temporary(path.name))


def _rank(quantile: float, count: int) -> int:
    """Index of the quantile in `count` sorted values (nearest rank)."""
    return math.floor(quantile * (count - 1) + 0.5)


def steady_state(completion_s: Sequence[float], low: float = STEADY_LOW_QUANTILE,
                 high: float = STEADY_HIGH_QUANTILE) -> dict:
    """First and last completion, and the rate between the `low` and `high` quantiles of completion times.

    The steady rate counts the completions after the one at the low quantile up to the one at the high quantile
    and divides by the time between those two, so start-up and draining do not dilute it. It is None when
    fewer than two images completed or they all completed at once.
    """
    times = sorted(completion_s)
    record: dict = {"completed": len(times), "first_output_s": None, "last_output_s": None, "p10_s": None,
                    "p50_s": None, "p90_s": None, "steady_images": 0, "steady_span_s": None,
                    "steady_images_per_s": None}
    if not times:
        return record
    lo, hi = _rank(low, len(times)), _rank(high, len(times))
    span = times[hi] - times[lo]
    record |= {"first_output_s": round(times[0], 3), "last_output_s": round(times[-1], 3),
               "p10_s": round(times[lo], 3), "p50_s": round(times[_rank(0.5, len(times))], 3),
               "p90_s": round(times[hi], 3), "steady_images": hi - lo, "steady_span_s": round(span, 3)}
    if hi > lo and span > 0:
        record["steady_images_per_s"] = round((hi - lo) / span, 3)
    return record

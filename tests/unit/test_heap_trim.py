"""Freed image buffers go back to the system when the ingress trims its heaps (serve_app/heap_trim.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# In a fresh interpreter: the heaps of this test process (its other tests) would change what glibc does.
BURST = """
import json, os
import numpy as np
from serve_app.heap_trim import release_free_memory

MiB = 1 << 20
def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB

np.ones(8 * MiB, np.uint8)  # freed at once: glibc now serves 8 MiB from its heaps instead of fresh mappings
# A burst of photos (192 MiB of touched pages) among small allocations that outlive it, as a server's do: the
# freed buffers are then inside the heap, not at its top, where glibc would trim them by itself.
burst, survivors = [], []
for _ in range(24):
    burst.append(np.ones(8 * MiB, np.uint8))
    survivors.append(np.ones(4096, np.uint8))
during = resident_mib()
del burst
kept = resident_mib()
trimmed = release_free_memory()
print(json.dumps({"during": during, "kept": kept, "after": resident_mib(), "trimmed": trimmed}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_buffers_freed_after_a_burst_are_kept_for_reuse_until_trimmed() -> None:
    run = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True, timeout=60, check=True)
    rss = json.loads(run.stdout)
    assert rss["trimmed"]
    assert rss["kept"] > rss["during"] - 64, rss  # glibc kept them for reuse: no fresh pages for the next burst
    assert rss["after"] < rss["kept"] - 128, rss  # and the trim gave them back

"""scripts/profile_threads.py reads py-spy's raw records into each thread kind's running time, its share of the GIL
and its top frames: the figures that tell a GIL-bound replica from a CPU-bound one."""

from __future__ import annotations

from profile_threads import parse_raw, summarise

# py-spy 0.4's raw lines (`record --threads --format raw`) for a process with two codec threads, a masks thread
# and an unnamed one; the GIL record holds only the samples of the thread holding the GIL.
RUNNING = """\
thread (880): codec_1;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);spin (demo.py:3) 90
thread (879): codec_0;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);spin (demo.py:3) 80
thread (879): codec_0;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);pack (demo.py:9) 20
thread (881): masks_0;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);wait (demo.py:5) 10
thread (0x7f00aa): ;<module> (demo.py:12) 5
"""
GIL = """\
thread (880): codec_1;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);spin (demo.py:3) 45
thread (879): codec_0;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);spin (demo.py:3) 40
thread (879): codec_0;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);pack (demo.py:9) 10
"""


def test_a_pools_threads_add_up_and_the_gil_share_is_of_the_whole_process() -> None:
    summary = summarise(parse_raw(RUNNING), parse_raw(GIL), samples=100)
    codec, masks = summary["threads"]["codec"], summary["threads"]["masks"]
    assert codec["running"] == 1.9 and codec["holding_gil"] == 0.95  # two threads, one GIL between them
    assert codec["top_frames"] == [("spin (demo.py:3)", 170), ("pack (demo.py:9)", 20)]
    assert codec["top_frames_holding_gil"][0] == ("spin (demo.py:3)", 85)
    assert masks["running"] == 0.1 and masks["holding_gil"] == 0.0
    assert summary["threads"]["unnamed"]["running"] == 0.05
    assert summary["gil_held_share"] == 0.95
    assert list(summary["threads"])[0] == "codec"  # the busiest first


def test_lines_that_are_not_samples_are_skipped() -> None:
    assert parse_raw("py-spy> Sampling process 100 times a second\n\n") == {}

"""The bulk benchmark's arithmetic: steady-state rate from completion times, alpha comparison, busy CPUs."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from harness.bulk_compare import (
    alpha_difference,
    compare_with_folder,
    pick_evenly,
    png_alpha,
    worst_difference,
)
from harness.bulk_timing import output_completion_times, steady_state
from harness.cpu_monitor import busy_cpus, parse_proc_stat
from harness.photos import write_sample_photo_folder


def test_steady_rate_leaves_out_the_slow_start_and_the_tail() -> None:
    # 20 s of start-up, then two images a second for 40 s, then a straggler long after.
    times = [20.0 + 0.5 * i for i in range(81)] + [120.0]
    record = steady_state(list(reversed(times)))  # the order of the files does not matter
    assert record["completed"] == 82
    assert record["first_output_s"] == pytest.approx(20.0)
    assert record["last_output_s"] == pytest.approx(120.0)
    assert record["steady_images_per_s"] == pytest.approx(2.0, rel=1e-3)
    assert record["steady_images"] == pytest.approx(record["steady_span_s"] * 2)
    overall = record["completed"] / record["last_output_s"]
    assert overall < 1.0 < record["steady_images_per_s"]


def test_steady_window_spans_the_10th_to_the_90th_percentile() -> None:
    record = steady_state([float(i) for i in range(11)])  # 0..10 s, one image a second
    assert (record["p10_s"], record["p50_s"], record["p90_s"]) == (1.0, 5.0, 9.0)
    assert record["steady_images"] == 8 and record["steady_images_per_s"] == pytest.approx(1.0)


@pytest.mark.parametrize("times", [[], [3.0], [5.0, 5.0, 5.0]])
def test_no_steady_rate_without_two_distinct_completions(times: list[float]) -> None:
    record = steady_state(times)
    assert record["completed"] == len(times)
    assert record["steady_images_per_s"] is None


def test_completion_times_come_from_finished_outputs_only(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    written = {"a/x.png": 1005.0, "y.png": 1002.0, "a/.partial-" + "0" * 32: 1001.0, "_summary.json": 1009.0}
    for name, mtime in written.items():
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (mtime, mtime))
    assert output_completion_times(tmp_path, ".png", started_at=1000.0) == pytest.approx([2.0, 5.0])


def test_identical_alphas_do_not_differ() -> None:
    alpha = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert alpha_difference(alpha, alpha.copy()) == {"max_abs_diff": 0, "mean_abs_diff": 0.0,
                                                     "fraction_over_tolerance": 0.0}


def test_alpha_difference_counts_only_pixels_beyond_the_tolerance() -> None:
    reference = np.full((10, 10), 128, dtype=np.uint8)
    candidate = reference.copy()
    candidate[0, :5] = 130  # within the tolerance of 2
    candidate[1, 0] = 131  # beyond it
    candidate[2, 0] = 0  # far beyond it, below the reference: no uint8 wrap-around
    result = alpha_difference(candidate, reference)
    assert result["max_abs_diff"] == 128
    assert result["fraction_over_tolerance"] == pytest.approx(0.02)
    assert result["mean_abs_diff"] == pytest.approx((5 * 2 + 3 + 128) / 100, abs=1e-3)
    with pytest.raises(ValueError, match="shapes differ"):
        alpha_difference(candidate, reference[:5])


def test_worst_difference_takes_each_measure_over_the_compared_photos() -> None:
    rows = [{"input": "a", "max_abs_diff": 3, "mean_abs_diff": 0.1, "fraction_over_tolerance": 0.0},
            {"input": "b", "max_abs_diff": 1, "mean_abs_diff": 0.4, "fraction_over_tolerance": 0.02},
            {"input": "c", "error": "HTTP 503"}]
    assert worst_difference(rows) == {"compared": 2, "errors": 1, "max_abs_diff": 3, "mean_abs_diff": 0.4,
                                      "fraction_over_tolerance": 0.02}
    assert worst_difference([])["max_abs_diff"] is None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_alpha_reads_the_transparency_or_the_mask() -> None:
    alpha = np.tile(np.arange(0, 256, 32, dtype=np.uint8), (4, 1))
    rgba = np.dstack([np.full((4, 8, 3), 200, np.uint8), alpha])
    assert np.array_equal(png_alpha(_png(Image.fromarray(rgba, "RGBA"))), alpha)
    assert np.array_equal(png_alpha(_png(Image.fromarray(alpha, "L"))), alpha)
    with pytest.raises(ValueError, match="no alpha"):
        png_alpha(_png(Image.new("RGB", (4, 4))))


def test_outputs_are_compared_with_another_runs_by_relative_path(tmp_path) -> None:
    for run, level in (("offline", 100), ("client", 103)):
        (tmp_path / run / "a").mkdir(parents=True)
        pixels = np.zeros((4, 6, 4), np.uint8)
        pixels[..., 3] = level
        Image.fromarray(pixels, "RGBA").save(tmp_path / run / "a" / "one.png")
    report = compare_with_folder(tmp_path / "client", tmp_path / "offline", ["a/one.jpg", "a/two.jpg"])
    one, two = report["photos"]
    assert one == {"input": "a/one.jpg", "max_abs_diff": 3, "mean_abs_diff": 3.0, "fraction_over_tolerance": 1.0}
    assert "no output" in two["error"]
    assert report["worst"]["compared"] == 1 and report["worst"]["errors"] == 1


def test_pick_evenly_spreads_over_the_list() -> None:
    items = [f"p{i}" for i in range(10)]
    assert pick_evenly(items, 5) == ["p0", "p2", "p4", "p6", "p8"]
    assert pick_evenly(items[:3], 16) == ["p0", "p1", "p2"]


def test_busy_cpus_from_two_proc_stat_readings() -> None:
    before = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n")
    after = parse_proc_stat("cpu  250 0 100 1000 50 0 0 0 0 0\ncpu0 125 0 50 500 25 0 0 0 0 0\n")
    assert before == (150.0, 1000.0)
    assert busy_cpus(before, after, cpus=4) == pytest.approx(4 * 200 / 400)
    assert busy_cpus(after, after, cpus=4) is None


def _folder(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_photo_folder_is_the_same_with_any_workers_and_is_reused(tmp_path) -> None:
    assert write_sample_photo_folder(tmp_path / "one", 3, workers=1, per_folder=2)
    assert write_sample_photo_folder(tmp_path / "two", 3, workers=2, per_folder=2)
    one = _folder(tmp_path / "one")
    assert list(one) == ["batch_000/photo_00000.jpg", "batch_000/photo_00001.jpg", "batch_001/photo_00002.jpg"]
    assert one == _folder(tmp_path / "two")
    assert len(set(one.values())) == 3
    assert not write_sample_photo_folder(tmp_path / "one", 3, workers=1, per_folder=2)
    (tmp_path / "one" / "batch_001" / "photo_00002.jpg").unlink()  # an interrupted run: written again
    assert write_sample_photo_folder(tmp_path / "one", 3, workers=1, per_folder=2)
    assert _folder(tmp_path / "one") == one
    with pytest.raises(FileExistsError, match="other than"):
        write_sample_photo_folder(tmp_path / "one", 2, workers=1, per_folder=2)


def test_a_bulk_run_stands_only_when_whole_and_its_masks_agree() -> None:
    from bench_bulk import checks

    def run(completed: int, exit_code: int = 0) -> dict:
        return {"timing": {"completed": completed}, "exit_code": exit_code}

    def compared(mean: float, errors: int = 0) -> dict:
        return {"worst": {"compared": 16 - errors, "errors": errors, "mean_abs_diff": mean}}

    assert all(checks(3000, run(3000), compared(0.4)).values())
    assert not checks(3000, run(1800), None)["every_photo_written"]  # killed part-way: its steady rate is no figure
    assert not checks(3000, run(3000, exit_code=1), None)["tool_exit_0"]
    assert not checks(3000, run(3000), compared(2.5))["masks_within_bound"]
    assert not checks(3000, run(3000), compared(0.1, errors=16))["masks_compared_without_errors"]

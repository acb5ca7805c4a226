"""Reading nvidia-smi's samples: utilisation, SM clock and power per GPU, unreadable lines left out."""

from __future__ import annotations

from harness.gpu_monitor import GpuBusySampler, parse_samples


def test_each_gpu_line_gives_its_utilisation_clock_and_power() -> None:
    assert parse_samples("98, 1980, 650.12\n0, 345, 74.5\n") == [(98.0, 1980.0, 650.12), (0.0, 345.0, 74.5)]


def test_unreadable_fields_are_none_and_lines_that_are_no_sample_are_left_out() -> None:
    assert parse_samples("97, [N/A], 600.0\n\n100, 1755, 699.9\nNo devices were found\n") == [
        (97.0, None, 600.0), (100.0, 1755.0, 699.9)]


def test_the_summary_averages_the_window() -> None:
    sampler = GpuBusySampler()
    sampler.samples = [(100.0, 1980.0, 700.0), (90.0, 1800.0, 650.0)]
    assert sampler.summary() == {"gpu_busy_fraction": 0.95, "gpu_sm_clock_mhz": 1890, "gpu_power_w": 675.0}
    sampler.samples.append((80.0, None, None))  # a GPU that reports no clock or power still counts as busy
    assert sampler.summary() == {"gpu_busy_fraction": 0.9, "gpu_sm_clock_mhz": 1890, "gpu_power_w": 675.0}
    assert GpuBusySampler().summary() == {"gpu_busy_fraction": None, "gpu_sm_clock_mhz": None, "gpu_power_w": None}

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
    sampler.add([(100.0, 1980.0, 700.0)])
    sampler.add([(90.0, 1800.0, 650.0)])
    assert sampler.summary() == {"gpu_busy_fraction": 0.95, "gpu_busy_fraction_by_gpu": [0.95],
                                 "gpu_sm_clock_mhz": 1890, "gpu_power_w": 675.0}
    sampler.add([(80.0, None, None)])  # a GPU that reports no clock or power still counts as busy
    assert sampler.summary() == {"gpu_busy_fraction": 0.9, "gpu_busy_fraction_by_gpu": [0.9],
                                 "gpu_sm_clock_mhz": 1890, "gpu_power_w": 675.0}
    assert GpuBusySampler().summary() == {"gpu_busy_fraction": None, "gpu_busy_fraction_by_gpu": [],
                                          "gpu_sm_clock_mhz": None, "gpu_power_w": None}


def test_each_gpu_of_a_host_keeps_its_own_busy_fraction() -> None:
    sampler = GpuBusySampler()
    sampler.add(parse_samples("100, 1980, 700\n20, 1980, 300\n"))
    sampler.add(parse_samples("90, 1980, 690\n40, 1980, 320\n"))
    summary = sampler.summary()
    assert summary["gpu_busy_fraction"] == 0.625  # the mean hides that the second GPU starves
    assert summary["gpu_busy_fraction_by_gpu"] == [0.95, 0.3]


def test_the_summary_keeps_to_a_window_when_given_one() -> None:
    # a load's warm-up and drain leave the GPU idler than its measured window
    sampler = GpuBusySampler()
    for at, busy in [(1.0, 10.0), (2.0, 100.0), (3.0, 90.0), (4.0, 0.0)]:
        sampler.add([(busy, 1980.0, 600.0)], at=at)
    assert sampler.summary((1.5, 3.5))["gpu_busy_fraction"] == 0.95
    assert sampler.summary()["gpu_busy_fraction"] == 0.5

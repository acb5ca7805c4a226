"""The service benchmark's batch-size histograms with several model replicas (one per GPU): /v1/info answers from
one replica per call, so each replica's histogram is taken from its own answers, never one replica's count minus
another's."""

from __future__ import annotations

from bench_service import histograms_over_replicas


def info(replica: str, gpu: str, default: dict, lite: dict | None = None, device_png: dict | None = None) -> dict:
    models = {"default": {"batch_size_histogram": default}}
    if lite is not None:
        models["lite"] = {"batch_size_histogram": lite}
    return {"replica": {"id": replica, "node_id": "n", "gpu_ids": [gpu]}, "batch_size_histogram": default,
            "models": models, "device_png": device_png or {}}


def test_each_gpu_gets_its_own_histogram_and_the_total_is_their_sum() -> None:
    before = {"a": info("a", "0", {"8": 10}), "b": info("b", "1", {"8": 500, "1": 3})}
    after = {"a": info("a", "0", {"8": 110, "4": 2}), "b": info("b", "1", {"8": 590, "1": 3})}
    result = histograms_over_replicas(before, after)
    assert result["batch_size_histogram_by_replica"] == {
        "a": {"gpu_ids": ["0"], "batch_size_histogram": {"4": 2, "8": 100}},
        "b": {"gpu_ids": ["1"], "batch_size_histogram": {"8": 90}},
    }
    assert result["batch_size_histogram"] == {"4": 2, "8": 190}
    assert result["batch_size_histogram_by_model"] == {"default": {"4": 2, "8": 190}}


def test_a_replica_that_started_during_the_run_counts_from_zero_and_models_add_up() -> None:
    before = {"a": info("a", "0", {"8": 10}, lite={"8": 1})}
    after = {"a": info("a", "0", {"8": 20}, lite={"8": 4}), "c": info("c", "1", {"2": 5}, lite={"8": 6})}
    result = histograms_over_replicas(before, after)
    assert result["batch_size_histogram"] == {"2": 5, "8": 10}
    assert result["batch_size_histogram_by_model"] == {"default": {"2": 5, "8": 10}, "lite": {"8": 9}}
    assert result["batch_size_histogram_by_replica"]["c"]["batch_size_histogram"] == {"2": 5}


def test_the_pngs_asked_of_the_devices_are_counted_over_the_replicas_by_outcome() -> None:
    before = {"a": info("a", "0", {}, device_png={"written": 4, "device_busy": 1})}
    after = {"a": info("a", "0", {}, device_png={"written": 10, "device_busy": 1}),
             "c": info("c", "1", {}, device_png={"device_busy": 3, "not_written": 2})}
    assert histograms_over_replicas(before, after)["device_png"] == {"device_busy": 3, "not_written": 2, "written": 6}

"""The application in-process on a local Ray: batching under concurrency and live reconfiguration."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import alpha_of, distinct_boxes, post_all
from tests.images import assert_mask_matches, encode, expected_alpha, red_square
from tests.integration.deployment import EDGE_MARGIN, deploy, info


def histogram_total(histogram: dict[str, int]) -> int:
    return sum(int(size) * count for size, count in histogram.items())


def send_distinct_objects(base_url: str, count: int) -> None:
    """POST `count` pictures at once, each with its object elsewhere, and check every caller's own mask."""
    boxes = distinct_boxes(count)
    responses = post_all(f"{base_url}/v1/remove-background", [encode(red_square(box=box)) for box in boxes])
    for box, response in zip(boxes, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_mask_matches(alpha_of(response), expected_alpha(box=box), EDGE_MARGIN)


def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_mask(base_url: str,
                                                                            tiny_model_dir: Path) -> None:
    deploy(tiny_model_dir, {"max_batch_size": 16, "batch_wait_timeout_s": 0.25})
    before = info(base_url)["batch_size_histogram"]
    send_distinct_objects(base_url, 32)
    after = info(base_url)["batch_size_histogram"]
    assert histogram_total(after) - histogram_total(before) == 32
    assert max(int(size) for size in after) > 1, f"no batch larger than 1: {after}"
    assert max(int(size) for size in after) <= 16


def test_reconfigure_changes_max_batch_size_without_restart(base_url: str, tiny_model_dir: Path) -> None:
    deploy(tiny_model_dir, {"max_batch_size": 16, "batch_wait_timeout_s": 0.25})
    first = info(base_url)
    deploy(tiny_model_dir, {"max_batch_size": 2, "batch_wait_timeout_s": 0.25})
    second = info(base_url)
    assert second["startup"] == first["startup"], "the replica was restarted, not reconfigured"
    assert second["batching"] == {"max_batch_size": 2, "batch_wait_timeout_s": 0.25, "live_max_batch_size": 2,
                                  "fitting_batch_size": None}  # no limit from memory on CPU

    send_distinct_objects(base_url, 32)
    after = info(base_url)["batch_size_histogram"]
    new_batches = {int(size): count - int(first["batch_size_histogram"].get(size, 0))
                   for size, count in after.items()}
    grown = {size for size, count in new_batches.items() if count > 0}
    assert grown and max(grown) == 2, f"batches after reconfigure: {new_batches}"

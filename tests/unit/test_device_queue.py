"""The device queue: waiting groups merge into the next forward pass, each caller gets its own masks."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve_app.deployments.device_queue import DeviceQueue


class Done:
    def __init__(self, masks):
        self.masks = masks

    def result(self):
        return self.masks


class GatedPredict:
    """A fake device whose first submission waits for `release`, so that work can pile up behind it; `blocked` is
    set once that submission waits."""

    def __init__(self, fail_on_size: int | None = None):
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.sizes: list[int] = []
        self.fail_on_size = fail_on_size

    def __call__(self, images):
        if not self.sizes:
            self.blocked.set()
            self.release.wait(timeout=10)
        self.sizes.append(len(images))
        if len(images) == self.fail_on_size:
            raise RuntimeError("device failure")
        return Done([image[..., 0] for image in images])


async def until(condition, timeout_s: float = 10.0) -> None:
    """Return once `condition()` holds (checked between the event loop's turns); fail after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


def images_tagged(*tags: int) -> list[np.ndarray]:
    return [np.full((2, 3, 3), tag, np.uint8) for tag in tags]


async def run_groups(queue: DeviceQueue, predict: GatedPredict, groups: list[list[int]]):
    first = asyncio.create_task(queue.run(images_tagged(*groups[0])))
    await until(predict.blocked.is_set)  # the first pass is running and blocked
    rest = [asyncio.create_task(queue.run(images_tagged(*tags))) for tags in groups[1:]]
    await until(lambda: queue.backlog() == sum(map(len, groups)))  # every group is waiting behind it
    predict.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_waiting_groups_merge_up_to_the_max_and_results_go_to_their_callers() -> None:
    predict = GatedPredict()
    queue = DeviceQueue(predict, ThreadPoolExecutor(1), max_batch_size=5)
    groups = [[1], [2, 3], [4, 5, 6], [7, 8, 9, 10]]
    results = asyncio.run(run_groups(queue, predict, groups))
    assert predict.sizes == [1, 5, 4]
    for tags, (masks, batch) in zip(groups, results, strict=True):
        assert [int(mask[0, 0]) for mask in masks] == tags
        assert batch.size == {1: 1, 2: 5, 3: 5, 4: 4}[len(tags)]


def test_a_group_that_does_not_fit_is_split_so_that_batches_fill() -> None:
    predict = GatedPredict()
    queue = DeviceQueue(predict, ThreadPoolExecutor(1), max_batch_size=4)
    groups = [[1], [2, 3, 4], [5, 6, 7], [8]]
    results = asyncio.run(run_groups(queue, predict, groups))
    assert predict.sizes == [1, 4, 3]  # [2, 3, 4, 5], then [6, 7, 8]: no pass short while images wait
    for tags, (masks, _) in zip(groups, results, strict=True):
        assert [int(mask[0, 0]) for mask in masks] == tags  # a split group still gets all its masks, in order


def test_a_failed_pass_fails_only_its_callers() -> None:
    predict = GatedPredict(fail_on_size=3)
    queue = DeviceQueue(predict, ThreadPoolExecutor(1), max_batch_size=3)
    results = asyncio.run(run_groups(queue, predict, [[1], [2, 3, 4], [5, 6]]))
    assert isinstance(results[1], RuntimeError)
    assert [int(mask[0, 0]) for mask in results[2][0]] == [5, 6]
    assert predict.sizes == [1, 3, 2]


def test_cancelled_callers_cost_no_device_time() -> None:
    async def scenario(queue: DeviceQueue, predict: GatedPredict) -> None:
        first = asyncio.create_task(queue.run(images_tagged(1)))
        await until(predict.blocked.is_set)
        gone = asyncio.create_task(queue.run(images_tagged(2, 3)))
        kept = asyncio.create_task(queue.run(images_tagged(4)))
        await until(lambda: queue.backlog() == 4)
        gone.cancel()
        predict.release.set()
        await first
        masks, _ = await kept
        assert [int(mask[0, 0]) for mask in masks] == [4]
        with pytest.raises(asyncio.CancelledError):
            await gone

    predict = GatedPredict()
    asyncio.run(scenario(DeviceQueue(predict, ThreadPoolExecutor(1), max_batch_size=8), predict))
    assert predict.sizes == [1, 1]


def test_next_batch_is_submitted_before_waiting_for_the_current_one() -> None:
    log: list[tuple[str, int]] = []

    class Logged(Done):
        def result(self):
            log.append(("result", int(self.masks[0][0, 0])))
            return self.masks

    predict = GatedPredict()

    def submit(images):
        done = predict(images)
        log.append(("submit", int(images[0][0, 0, 0])))
        return Logged(done.masks)

    results = asyncio.run(run_groups(DeviceQueue(submit, ThreadPoolExecutor(1), max_batch_size=8), predict,
                                     [[1], [2, 3]]))
    assert [len(masks) for masks, _ in results] == [1, 2]
    assert log == [("submit", 1), ("submit", 2), ("result", 1), ("result", 2)]


def test_backlog_counts_the_images_running_and_waiting_until_their_masks_are_back() -> None:
    predict = GatedPredict()
    queue = DeviceQueue(predict, ThreadPoolExecutor(1), max_batch_size=2)

    async def scenario() -> list[int]:
        seen = [queue.backlog()]
        first = asyncio.create_task(queue.run(images_tagged(1, 2)))
        await until(predict.blocked.is_set)  # the first pass is running, blocked
        rest = asyncio.create_task(queue.run(images_tagged(3, 4, 5)))
        await until(lambda: queue.backlog() == 5)  # the second group counts as soon as it waits
        seen.append(queue.backlog())
        predict.release.set()
        await asyncio.gather(first, rest)
        seen.append(queue.backlog())
        return seen

    assert asyncio.run(scenario()) == [0, 5, 0]


def test_a_lone_image_is_prepared_run_and_read_back_in_one_trip_to_the_executor() -> None:
    executor = ThreadPoolExecutor(1)
    threads: list[str] = []

    def prepare(tag: int) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return images_tagged(tag)[0]

    def submit(images):
        threads.append(threading.current_thread().name)
        return Done([image[..., 0] for image in images])

    trips = 0
    original_submit = executor.submit

    def counting_submit(*args, **kwargs):
        nonlocal trips
        trips += 1
        return original_submit(*args, **kwargs)

    executor.submit = counting_submit
    queue = DeviceQueue(submit, executor, max_batch_size=8)
    assert queue.idle()
    mask, batch, prepare_s = asyncio.run(queue.run_alone(7, prepare))
    assert (mask == 7).all() and mask.shape == (2, 3)
    assert batch.size == 1 and prepare_s >= 0
    assert trips == 1 and len(set(threads)) == 1 and threads[0] != threading.current_thread().name
    assert queue.idle() and queue.backlog() == 0


def test_images_arriving_during_a_lone_pass_queue_behind_it_and_get_their_own_masks() -> None:
    predict = GatedPredict()
    queue = DeviceQueue(predict, ThreadPoolExecutor(1), max_batch_size=8)

    async def scenario():
        alone = asyncio.create_task(queue.run_alone(images_tagged(1)[0]))
        await until(predict.blocked.is_set)  # the lone pass is running, blocked
        assert not queue.idle() and queue.backlog() == 1
        rest = asyncio.create_task(queue.run(images_tagged(2, 3)))
        await until(lambda: queue.backlog() == 3)  # queued behind the lone pass
        predict.release.set()
        return await alone, await rest

    (mask, _, _), (masks, _) = asyncio.run(scenario())
    assert (mask == 1).all() and [int(m[0, 0]) for m in masks] == [2, 3]
    assert predict.sizes == [1, 2]


def test_a_lone_pass_stays_in_the_backlog_until_the_device_is_done_even_if_its_caller_leaves() -> None:
    predict = GatedPredict()
    queue = DeviceQueue(predict, ThreadPoolExecutor(1), max_batch_size=8)

    async def scenario() -> list[int]:
        alone = asyncio.create_task(queue.run_alone(images_tagged(1)[0]))
        await until(predict.blocked.is_set)
        alone.cancel()
        await until(alone.done)
        seen = [queue.backlog()]  # the caller is gone, the pass is not
        predict.release.set()
        await until(queue.idle)
        seen.append(queue.backlog())
        return seen

    assert asyncio.run(scenario()) == [1, 0]


def test_a_lone_image_whose_preparation_fails_counts_no_pass_and_leaves_the_device_idle() -> None:
    counted: list[int] = []
    queue = DeviceQueue(GatedPredict(), ThreadPoolExecutor(1), max_batch_size=8, on_batch=counted.append)

    def undecodable(_image):
        raise ValueError("cannot decode")

    async def scenario() -> None:
        with pytest.raises(ValueError, match="cannot decode"):
            await queue.run_alone(b"not a jpeg", undecodable)
        await until(queue.idle)

    asyncio.run(scenario())
    assert counted == [] and queue.idle()
    predict = GatedPredict()
    predict.release.set()
    queue = DeviceQueue(predict, ThreadPoolExecutor(1), max_batch_size=8, on_batch=counted.append)
    asyncio.run(queue.run_alone(images_tagged(1)[0]))
    assert counted == [1]

"""The model replica's passes: the wait @serve.batch is given follows the device, and a pass submitted while
another runs is queued on the device before that one's masks are back."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve_app.deployments.batching import UPLOAD_LEAD_S, DeviceClock, DevicePasses


class HeldMasks:
    """A pass on a fake device: its masks are the images' first channels, once `release` is set."""

    def __init__(self, images, release: threading.Event):
        self.images, self.release = images, release

    def result(self):
        assert self.release.wait(timeout=10), "the pass was never released"
        return [image[..., 0] for image in self.images]


class FakeDevice:
    """Submissions return at once (as on CUDA); each pass's masks come back when the test releases it."""

    def __init__(self, fail_on_size: int | None = None):
        self.releases: list[threading.Event] = []
        self.submitted: list[int] = []
        self.submitted_images: list[list] = []
        self.fail_on_size = fail_on_size

    def __call__(self, images):
        if len(images) == self.fail_on_size:
            raise RuntimeError("device failure")
        self.submitted.append(len(images))
        self.submitted_images.append(list(images))
        self.releases.append(threading.Event())
        return HeldMasks(images, self.releases[-1])


def tagged(*tags: int) -> list[np.ndarray]:
    return [np.full((2, 3, 3), tag, np.uint8) for tag in tags]


async def until(condition, timeout_s: float = 10.0) -> None:
    """Return once `condition()` holds (checked between the event loop's turns); fail after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


def passes(device: FakeDevice, counted: list[int] | None = None) -> DevicePasses:
    model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
    return DevicePasses(device, model_thread, on_batch=None if counted is None else counted.append)


def test_each_caller_gets_the_masks_of_its_own_images_and_every_pass_is_counted() -> None:
    async def scenario() -> None:
        device, counted = FakeDevice(), []
        runner = passes(device, counted)
        first = asyncio.create_task(runner.run(tagged(1, 2)))
        await until(lambda: len(device.submitted) == 1)
        second = asyncio.create_task(runner.run(tagged(3)))
        device.releases[0].set()
        await until(lambda: len(device.submitted) == 2)
        device.releases[1].set()
        (masks_1, batch_1), (masks_2, batch_2) = await first, await second
        assert [int(mask[0, 0]) for mask in masks_1] == [1, 2] and batch_1.size == 2
        assert [int(mask[0, 0]) for mask in masks_2] == [3] and batch_2.size == 1
        assert counted == [2, 1]
        assert runner.in_flight == 0

    asyncio.run(scenario())


def test_a_pass_is_queued_on_the_device_while_the_one_before_still_runs() -> None:
    """The device goes from one pass to the next without waiting for the first one's masks to be read. A pass
    that finds the device idle is submitted and read back in one trip to the model thread, so the pass after it
    is submitted once it is done; from then on each pass is queued behind the running one."""
    async def scenario() -> None:
        device = FakeDevice()
        runner = passes(device)
        alone = asyncio.create_task(runner.run(tagged(1)))
        await until(lambda: len(device.submitted) == 1)
        second = asyncio.create_task(runner.run(tagged(2)))
        await asyncio.sleep(0.05)
        assert len(device.submitted) == 1  # behind the lone pass's trip
        device.releases[0].set()
        await alone
        await until(lambda: len(device.submitted) == 2)
        third = asyncio.create_task(runner.run(tagged(3)))
        await until(lambda: len(device.submitted) == 3)  # while the second pass's masks are still held
        assert not second.done() and runner.in_flight == 2
        device.releases[1].set()
        assert [int(mask[0, 0]) for mask in (await second)[0]] == [2]
        assert not third.done()
        device.releases[2].set()
        assert [int(mask[0, 0]) for mask in (await third)[0]] == [3]

    asyncio.run(scenario())


def test_the_wait_is_the_minimum_on_an_idle_device_and_until_the_device_frees_while_it_is_busy() -> None:
    async def scenario() -> None:
        device = FakeDevice()
        runner = passes(device)
        assert runner.wait_s(0.0) == 0.0 and runner.wait_s(0.02) == 0.02  # idle, and nothing learned yet
        learn = asyncio.create_task(runner.run(tagged(*range(8))))
        await until(lambda: len(device.submitted) == 1)
        await asyncio.sleep(0.2)  # the device works on the pass of 8 for at least 0.2 s
        device.releases[0].set()
        await learn
        pass_of_8 = runner.pass_s(8)
        assert pass_of_8 >= 0.2
        assert runner.wait_s(0.0) == 0.0  # idle again

        started = time.perf_counter()
        running = asyncio.create_task(runner.run(tagged(*range(8))))
        await until(lambda: len(device.submitted) == 2)
        wait = runner.wait_s(0.0)
        elapsed = time.perf_counter() - started
        # Until the running pass is expected to end, less the next one's upload.
        assert pass_of_8 - elapsed - UPLOAD_LEAD_S - 0.05 <= wait <= pass_of_8 - UPLOAD_LEAD_S
        assert runner.wait_s(10.0) == 10.0  # never below the configured wait
        device.releases[1].set()
        await running

    asyncio.run(scenario())


def test_a_pass_queued_behind_another_counts_from_the_end_of_that_one() -> None:
    async def scenario() -> None:
        device = FakeDevice()
        runner = passes(device)
        warm = asyncio.create_task(runner.run(tagged(1)))
        await until(lambda: len(device.submitted) == 1)
        await asyncio.sleep(0.1)
        device.releases[0].set()
        await warm
        pass_of_1 = runner.pass_s(1)
        first = asyncio.create_task(runner.run(tagged(1)))
        second = asyncio.create_task(runner.run(tagged(2)))
        # the second pass is counted in flight before its submission reaches the device
        await until(lambda: runner.in_flight == 2 and len(device.submitted) == 2)
        # Two passes of one in flight: the device takes a third after both.
        assert runner.wait_s(0.0) > 1.5 * pass_of_1 - UPLOAD_LEAD_S - 0.05
        device.releases[1].set()
        await until(lambda: len(device.submitted) == 3)
        device.releases[2].set()
        await asyncio.gather(first, second)

    asyncio.run(scenario())


def test_an_unseen_batch_size_is_expected_to_take_as_long_as_the_next_larger_one_seen() -> None:
    """Passes are padded up to a bucket: a pass of 5 takes what a pass of 8 takes."""
    async def scenario() -> None:
        runner = passes(FakeDevice())
        assert runner.pass_s(5) == 0.0
        runner._learn(1, 0.02)
        runner._learn(8, 0.12)
        assert runner.pass_s(5) == 0.12
        assert runner.pass_s(16) == 0.12  # larger than any seen: the largest seen
        runner._learn(8, 0.22)
        assert 0.12 < runner.pass_s(8) < 0.22  # a new pass moves the estimate, one outlier does not replace it

    asyncio.run(scenario())


def test_a_pass_far_faster_than_expected_resets_the_estimate_and_small_differences_move_it_a_fraction() -> None:
    # The first pass of a size (or one split for memory) can take seconds where the rest take 80 ms: the batches
    # after it must not gather for seconds. A pass a little shorter than expected (timed behind one whose end was
    # seen late) must not pull the estimate down at once: passes then form before the device can take them.
    runner = passes(FakeDevice())
    runner._learn(8, 2.0)
    runner._learn(8, 0.08)
    assert runner.pass_s(8) == 0.08
    runner._learn(8, 0.05)
    assert 0.07 < runner.pass_s(8) < 0.08
    runner._learn(8, 5.0)  # one very slow pass moves it by a fifth of at most the estimate itself
    assert runner.pass_s(8) < 0.1


def test_a_pass_formed_ahead_of_the_device_is_counted_in_the_wait_of_the_next() -> None:
    async def scenario() -> None:
        device = FakeDevice()
        runner = passes(device)
        runner._learn(8, 0.2)
        first = asyncio.create_task(runner.run(tagged(*range(8))))
        second = asyncio.create_task(runner.run(tagged(*range(8))))
        await until(lambda: runner.in_flight == 2)
        two_ahead = runner.wait_s(0.0)
        # A third pass formed while two are on the device waits for the gate: the next one gathers after it too.
        third = asyncio.create_task(runner.run(tagged(*range(8))))
        await asyncio.sleep(0.01)
        assert runner.in_flight == 2 and len(device.submitted) == 1
        assert runner.wait_s(0.0) > two_ahead + 0.2 - 0.05
        device.releases[0].set()
        await until(lambda: len(device.submitted) == 3)  # the formed pass takes the freed place
        device.releases[1].set()
        device.releases[2].set()
        await asyncio.gather(first, second, third)
        assert runner.in_flight == 0 and runner.wait_s(0.0) == 0.0

    asyncio.run(scenario())


def test_a_call_joining_while_a_pass_gathers_sets_the_wait_of_the_pass_after_it() -> None:
    # Serve reads the timeout when a pass starts gathering, right after the one before formed: a call that joins
    # while a pass gathers sets it for the next, which can go to the device only after the gathering one.
    async def scenario() -> None:
        device = FakeDevice()
        runner = passes(device)
        runner._learn(1, 0.02)
        runner._learn(8, 0.2)
        running = asyncio.create_task(runner.run(tagged(1)))
        await until(lambda: len(device.submitted) == 1)
        nothing_gathering = runner.wait_s(0.0)
        runner.gathering = 3
        assert runner.wait_s(0.0) > nothing_gathering + 0.2 - 0.05
        runner.gathering = 0
        device.releases[0].set()
        await running
        runner.gathering = 2  # on an idle device the pass gathering goes at once, and so may the next
        assert runner.wait_s(0.0) == 0.0

    asyncio.run(scenario())


def test_another_models_pass_waits_behind_two_of_this_ones_at_most() -> None:
    # Passes reach the runner as soon as Serve forms them; one model with many formed must not keep another
    # model's lone call waiting behind all of them.
    async def scenario() -> None:
        device, clock = FakeDevice(), DeviceClock()
        first = DevicePasses(device, ThreadPoolExecutor(1), clock=clock)
        second = DevicePasses(device, ThreadPoolExecutor(1), clock=clock)
        ahead = [asyncio.create_task(first.run(tagged(1))) for _ in range(2)]
        await until(lambda: clock.in_flight == 2)
        behind = [asyncio.create_task(first.run(tagged(1))) for _ in range(3)]
        await asyncio.sleep(0.01)
        other = asyncio.create_task(second.run(tagged(9)))
        await asyncio.sleep(0.01)
        device.releases[0].set()  # the first model's first pass ends: the other model's takes its place
        await until(lambda: len(device.submitted) == 3)
        await asyncio.sleep(0.01)
        assert len(device.submitted) == 3  # the first model's third pass waits for one of these two to end
        assert [9] in [[int(image[0, 0, 0]) for image in images] for images in device.submitted_images]
        for index in range(1, 6):
            await until(lambda index=index: len(device.releases) > index)
            device.releases[index].set()
        await asyncio.gather(*ahead, *behind, other)
        assert clock.in_flight == 0 and first.formed == 0 and second.formed == 0

    asyncio.run(scenario())


def test_images_no_longer_wanted_when_the_device_takes_the_pass_get_no_device_time() -> None:
    async def scenario() -> None:
        device = FakeDevice()
        runner = passes(device)
        running = asyncio.create_task(runner.run(tagged(1, 2, 3), wanted=lambda: [True, False, True]))
        await until(lambda: len(device.submitted) == 1)
        assert device.submitted == [2]
        device.releases[0].set()
        masks, batch = await running
        assert [None if mask is None else int(mask[0, 0]) for mask in masks] == [1, None, 3] and batch.size == 2
        masks, batch = await runner.run(tagged(4, 5), wanted=lambda: [False, False])
        assert masks == [None, None] and device.submitted == [2]  # nobody wanted it: not run
        assert runner.in_flight == 0 and runner.wait_s(0.0) == 0.0

    asyncio.run(scenario())


def test_a_failed_pass_fails_its_callers_and_leaves_the_device_idle() -> None:
    async def scenario() -> None:
        device = FakeDevice(fail_on_size=3)
        runner = passes(device)
        with pytest.raises(RuntimeError, match="device failure"):
            await runner.run(tagged(1, 2, 3))
        assert runner.in_flight == 0 and runner.wait_s(0.0) == 0.0
        ok = asyncio.create_task(runner.run(tagged(4)))
        await until(lambda: len(device.submitted) == 1)
        device.releases[0].set()
        assert [int(mask[0, 0]) for mask in (await ok)[0]] == [4]

    asyncio.run(scenario())

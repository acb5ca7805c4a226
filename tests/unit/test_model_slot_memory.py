"""A model replica's batch limit against device memory: an image that runs out of memory in a pass of its own is
answered 503 alone, and the lower limit a split set climbs back after passes that fit."""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np
import pytest

from serve_app.deployments import model_slots
from serve_app.deployments.batching import DeviceClock
from serve_app.deployments.model_slots import ModelSlot
from serve_app.model.batch_memory import FailedImage
from serve_app.protocol import ModelNotReady, OutOfDeviceMemory
from serve_app.settings import BatchSettings, ModelSettings


class Masks:
    def __init__(self, results: list):
        self.results = results

    def result(self) -> list:
        return self.results


class FakeModel:
    """Masks of ones, except for images equal to 0, which ran out of memory even alone."""

    forward_executor = None
    on_out_of_memory = None
    device_broken = False

    def check_device(self) -> None:
        if self.device_broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def estimate_foreground(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise OutOfDeviceMemory("clean edges of a 8000x6000 image: CUDA out of memory")

    def submit(self, images: list) -> Masks | FailedImage:
        if len(images) == 1 and images[0] == 0:
            return FailedImage(MemoryError("CUDA out of memory"))
        if -1 in images:  # an image the model cannot take, in whatever pass it is
            raise ValueError("the model cannot take this image's shape")
        return Masks([np.ones((2, 2), np.uint8) for _ in images])


class Metrics:
    def batch(self, model: str, size: int) -> None: ...
    def split(self, model: str) -> None: ...


def slot(max_batch_size: int = 8) -> ModelSlot:
    return ModelSlot(ModelSettings(model_id="/models/m"), FakeModel(), DeviceClock(),
                     BatchSettings(max_batch_size=max_batch_size), Metrics(), {})


class Batched:
    """Serve's batch queue (which needs a replica around it) stood in for by the slot's own pass, one call each."""

    def __init__(self, one: ModelSlot):
        self.one = one

    def set_batch_wait_timeout_s(self, seconds: float) -> None: ...

    async def __call__(self, image: object) -> tuple:
        [result] = await self.one._run_batch([image])
        return result


def test_an_image_out_of_memory_alone_is_answered_503_and_its_neighbours_their_masks() -> None:
    async def run() -> list:
        one = slot()
        one._batched = Batched(one)
        return await asyncio.gather(one.masks(1), one.masks(0), return_exceptions=True)

    good, failed = asyncio.run(run())
    assert isinstance(failed, ModelNotReady) and "ran out of memory on this image even alone" in str(failed)
    assert failed.retry_after_s == model_slots.OUT_OF_MEMORY_RETRY_AFTER_S
    assert good[0].shape == (2, 2)


class Together:
    """Serve's batch queue forming one pass of `size` calls, which all get that pass's outcome (its exception too)."""

    def __init__(self, one: ModelSlot, size: int):
        self.one, self.size = one, size
        self.waiting: list[tuple[object, asyncio.Future]] = []

    def set_batch_wait_timeout_s(self, seconds: float) -> None: ...

    async def __call__(self, call: object) -> tuple:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((call, future))
        if len(self.waiting) == self.size:
            calls, futures = zip(*self.waiting, strict=True)
            self.waiting = []
            try:
                for waiting, result in zip(futures, await self.one._run_batch(list(calls)), strict=True):
                    waiting.set_result(result)
            except Exception as error:
                for waiting in futures:
                    waiting.set_exception(error)
        return await future


def test_an_image_the_model_cannot_take_fails_alone_not_its_batch_mates() -> None:
    async def run() -> list:
        one = slot()
        one._batched = Together(one, 3)
        return await asyncio.gather(one.masks(1), one.masks(-1), one.masks(2), return_exceptions=True)

    first, failed, third = asyncio.run(run())
    assert isinstance(failed, ValueError) and "cannot take this image" in str(failed)
    assert first[0].shape == (2, 2) and third[0].shape == (2, 2)


def test_on_a_broken_device_the_pass_fails_whole_with_one_error_for_the_device_guard() -> None:
    # the guard knows the pass that broke the device by the one exception all its calls share
    async def run() -> list:
        one = slot()
        one.model.device_broken = True
        one._batched = Together(one, 3)
        return await asyncio.gather(one.masks(1), one.masks(-1), one.masks(2), return_exceptions=True)

    outcomes = asyncio.run(run())
    assert all(outcome is outcomes[0] for outcome in outcomes) and isinstance(outcomes[0], ValueError)


def test_clean_edges_out_of_memory_are_a_503_with_retry_after_not_a_500() -> None:
    async def run() -> None:
        one = slot()
        one.thread = concurrent.futures.ThreadPoolExecutor(1)
        await one.foreground(np.zeros((6000, 8000, 3), np.uint8), np.zeros((6000, 8000), np.uint8))

    with pytest.raises(ModelNotReady, match="clean edges.*without refine") as raised:
        asyncio.run(run())
    assert raised.value.retry_after_s == model_slots.OUT_OF_MEMORY_RETRY_AFTER_S


@pytest.mark.parametrize(("probed", "after_split", "back_to"), [(None, 4, None), (4, 2, 4)])
def test_a_split_lowers_the_limit_and_passes_that_fit_raise_it_back(probed: int | None, after_split: int,
                                                                     back_to: int | None) -> None:
    # back to the probe's limit where it found one, else to none at all (the configured maximum)
    one = slot(max_batch_size=8)
    one.fitting_batch = one._probed_fit = probed
    one._lower_batch_limit(probed or 8)
    assert one.fitting_batch == after_split
    for _ in range(model_slots.PASSES_BEFORE_RAISING_THE_LIMIT - 1):
        one._count_batch(after_split)
    assert one.fitting_batch == after_split  # not yet
    for _ in range(model_slots.PASSES_BEFORE_RAISING_THE_LIMIT * 3):
        one._count_batch(after_split)
    assert one.fitting_batch == back_to


class NeverForms:
    """Serve's batch queue holding a call that never makes it into a pass (its caller gives up first)."""

    def set_batch_wait_timeout_s(self, seconds: float) -> None: ...

    async def __call__(self, call: object) -> tuple:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_calls_count_as_gathering_until_their_pass_forms_or_they_give_up() -> None:
    # The wait later calls set counts the calls waiting for a pass: a count left behind would make every later pass
    # gather for a device that is free.
    async def run() -> None:
        one = slot()
        one._batched = Batched(one)
        await asyncio.gather(one.masks(1), one.masks(1))
        assert one.passes.gathering == 0
        one._batched = NeverForms()
        waiting = asyncio.create_task(one.masks(1))
        await asyncio.sleep(0.01)
        assert one.passes.gathering == 1 and one.passes.wait_s(0.0) == 0.0  # nothing learned: no time ahead
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert one.passes.gathering == 0

    asyncio.run(run())


class Detached:
    """Serve's batch queue as it runs a formed pass: in a task of its own, which a caller giving up does not cancel."""

    def __init__(self, one: ModelSlot):
        self.one = one
        self.passes: list[asyncio.Task] = []

    def set_batch_wait_timeout_s(self, seconds: float) -> None: ...

    async def __call__(self, call: object) -> tuple:
        self.passes.append(asyncio.ensure_future(self.one._run_batch([call])))
        [result] = await asyncio.shield(self.passes[-1])
        return result


def test_a_caller_that_gives_up_while_its_pass_waits_for_the_device_costs_no_device_time() -> None:
    # The ingress cancels the model call when the request's deadline passes: its image must not take a place in a
    # pass the device runs later.
    async def run() -> list:
        submitted: list[int] = []
        one = slot()
        submit = one.model.submit
        one.passes._submit = lambda images: (submitted.append(len(images)), submit(images))[1]
        one._batched = Detached(one)
        gate = one.passes._clock.gate
        for _ in range(2):
            await gate.acquire()  # the device busy with two passes of another model
        waiting = asyncio.create_task(one.masks(1))
        await asyncio.sleep(0.01)
        assert one.passes.formed == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.release()
        gate.release()
        await asyncio.gather(*one._batched.passes)
        assert one.passes.formed == 0 and one.passes.gathering == 0
        return submitted

    assert asyncio.run(run()) == []

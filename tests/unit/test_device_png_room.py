"""A large photo's PNG is written on the device only while the device has room for it: with a full pass of any
model waiting, the device limits throughput and the ingress's CPUs encode that PNG instead."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np

from serve_app.deployments.batching import DeviceClock
from serve_app.deployments.model_slots import DEVICE_PNG_THREADS, ModelSlot
from serve_app.deployments.remover import DEVICE_PNGS_IN_HAND, BackgroundRemover
from serve_app.settings import BatchSettings, ModelSettings
from tests.unit.test_model_slot_memory import Metrics

PIXELS = np.zeros((4, 6, 3), np.uint8)
MASK = np.full((4, 6), 255, np.uint8)


class PngModel:
    """Writes a stand-in stream for every cut-out asked of it, or fails as told."""

    forward_executor = None
    on_out_of_memory = None

    def __init__(self, answer: bytes | None | Exception = b"zlib stream"):
        self.answer, self.asked = answer, 0

    def describe(self) -> dict:
        return {}

    def submit(self, images: list) -> None:
        raise AssertionError("no pass runs here: the passes waiting are set as a replica's batching counts them")

    def cutout_stream(self, pixels: np.ndarray, mask: np.ndarray) -> bytes | None:
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def slot(name: str, model: PngModel, max_batch_size: int = 8) -> ModelSlot:
    return ModelSlot(ModelSettings(model_id=f"/models/{name}"), model, DeviceClock(),
                     BatchSettings(max_batch_size=max_batch_size), Metrics(), {})


def ask(asking: ModelSlot, *others: ModelSlot) -> bytes | None:
    replica = SimpleNamespace(_slots=SimpleNamespace(loaded={one.name: one for one in (asking, *others)}))
    return asyncio.run(BackgroundRemover.func_or_class._cutout_stream(replica, asking, PIXELS, MASK))


def test_the_device_writes_the_png_while_less_than_a_full_pass_waits() -> None:
    model = PngModel()
    one = slot("a", model)
    one.passes.gathering = 7  # the next pass will not be full: the device keeps up with what feeds it
    assert ask(one) == b"zlib stream"
    assert model.asked == 1 and one.device_pngs == {"written": 1}


def test_with_a_full_pass_gathering_or_one_formed_the_ingress_encodes_the_png() -> None:
    model = PngModel()
    one = slot("a", model, max_batch_size=4)
    one.passes.gathering = 4
    assert ask(one) is None
    one.passes.gathering, one.passes.formed = 1, 1  # a pass waits behind the ones on the device
    assert ask(one) is None
    assert model.asked == 0 and one.device_pngs == {"device_busy": 2}


def test_another_models_full_pass_takes_the_device_too() -> None:
    model = PngModel()
    one, other = slot("a", model), slot("b", PngModel(), max_batch_size=2)
    other.passes.gathering = 2
    assert ask(one, other) is None
    other.passes.gathering = 1
    assert ask(one, other) == b"zlib stream"
    assert one.device_pngs == {"device_busy": 1, "written": 1} and not other.device_pngs


def test_a_png_the_device_cannot_write_is_left_to_the_ingress_and_counted() -> None:
    for answer in (None, RuntimeError("Triton could not compile")):
        one = slot("a", PngModel(answer))
        assert ask(one) is None
        assert one.device_pngs == {"not_written": 1}


class SlowPngModel(PngModel):
    """Writes each stream only when the test lets it, so that several PNGs are in hand at once; counts how many
    it writes at once."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.writing = self.most_at_once = 0
        self._lock = threading.Lock()

    def cutout_stream(self, pixels: np.ndarray, mask: np.ndarray) -> bytes | None:  # a stand-in stream: bytes
        with self._lock:
            self.writing += 1
            self.most_at_once = max(self.most_at_once, self.writing)
        self.go.wait(timeout=10)
        with self._lock:
            self.writing -= 1
        return super().cutout_stream(pixels, mask)


def test_the_coder_writes_on_its_threads_at_once_holds_one_more_and_leaves_the_rest_to_the_ingress() -> None:
    model = SlowPngModel()
    one = slot("a", model)
    replica = SimpleNamespace(_slots=SimpleNamespace(loaded={one.name: one}))
    asked = DEVICE_PNGS_IN_HAND + 3

    async def all_at_once() -> list[bytes | None]:
        calls = [asyncio.ensure_future(BackgroundRemover.func_or_class._cutout_stream(replica, one, PIXELS, MASK))
                 for _ in range(asked)]
        await asyncio.sleep(0.05)
        assert one.describe()["device_pngs_in_hand"] == DEVICE_PNGS_IN_HAND  # those on its threads and the next
        assert model.writing == DEVICE_PNG_THREADS
        assert one.device_pngs == {"coder_busy": 3}  # the others answered at once
        assert sum(call.done() for call in calls) == 3
        model.go.set()
        return await asyncio.gather(*calls)

    answers = asyncio.run(all_at_once())
    assert answers.count(b"zlib stream") == DEVICE_PNGS_IN_HAND and answers.count(None) == 3
    assert model.most_at_once == DEVICE_PNG_THREADS
    # Counted back before the answers came: the count's callback is the first on the thread's future.
    assert one.device_pngs == {"written": DEVICE_PNGS_IN_HAND, "coder_busy": 3} and one.pngs_in_hand == 0
    assert ask(one) == b"zlib stream"  # the coder is free again


def test_a_png_whose_caller_gave_up_stays_in_hand_until_the_coder_is_done_with_it() -> None:
    model = SlowPngModel()
    one = slot("a", model)

    async def give_up_then_ask() -> bytes | None:
        given_up = asyncio.ensure_future(one.cutout_stream(PIXELS, MASK))
        await asyncio.sleep(0.05)
        given_up.cancel()  # its deadline passed: the coder still writes it
        await asyncio.sleep(0.05)
        assert one.pngs_in_hand == 1
        model.go.set()
        for _ in range(100):
            if not one.pngs_in_hand:
                break
            await asyncio.sleep(0.01)
        return await one.cutout_stream(PIXELS, MASK)

    assert asyncio.run(give_up_then_ask()) == b"zlib stream"
    assert one.pngs_in_hand == 0 and model.asked == 2

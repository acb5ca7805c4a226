"""The replica's set of models: a cold model loads on its first request while the loaded ones keep serving, its
requests wait for it (or are refused after load_wait_s), and room is made by unloading the idle non-resident one
used longest ago, never a resident or busy one."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serve_app.deployments.model_slots import ModelLoadFailed, ModelLoading, ModelSlots, NoRoomForModel
from serve_app.settings import ModelSettings


class FakeSlot:
    def __init__(self, settings: ModelSettings):
        self.settings = settings
        self.name = settings.served_name
        self.in_use = 0
        self.last_used = 0.0
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()

    def describe(self) -> dict:
        return {"name": self.name, "loaded": True}


class Loader:
    """Loads instantly, except the models named in `held`, which load once their event is set."""

    def __init__(self, *held: str):
        self.held = {name: threading.Event() for name in held}
        self.loads: list[str] = []

    def __call__(self, settings: ModelSettings) -> FakeSlot:
        self.loads.append(settings.served_name)
        if settings.served_name in self.held:
            assert self.held[settings.served_name].wait(10), "never released"
        return FakeSlot(settings)


def models(*specs: tuple[str, bool]) -> list[ModelSettings]:
    return [ModelSettings(name=name, model_id=f"/models/{name}", resident=resident) for name, resident in specs]


def test_resident_models_load_up_front_and_the_first_is_the_default() -> None:
    loader = Loader()
    slots = ModelSlots(models(("a", True), ("b", False), ("c", True)), loader, max_loaded=None, load_wait_s=1)
    slots.load_residents()
    assert loader.loads == ["a", "c"] and slots.default.name == "a"
    described = slots.describe()
    assert described["b"] == {"name": "b", "model_id": "/models/b", "loaded": False, "loading": False,
                              "resident": False, "input_size": [1024, 1024]}


async def acquire(slots: ModelSlots, name: str | None) -> FakeSlot:
    """The slot `use` hands out, let go at once."""
    async with slots.use(name) as slot:
        return slot


async def hold(slots: ModelSlots, name: str, release: asyncio.Event) -> FakeSlot:
    """The slot `use` hands out, held in use until `release`."""
    async with slots.use(name) as slot:
        await release.wait()
        return slot


def test_a_cold_model_loads_while_the_loaded_one_answers_and_its_callers_wait() -> None:
    async def scenario() -> None:
        loader = Loader("b")
        slots = ModelSlots(models(("a", True), ("b", False)), loader, max_loaded=None, load_wait_s=10)
        slots.load_residents()
        waiting = [asyncio.create_task(acquire(slots, "b")) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in waiting)
        assert (await asyncio.wait_for(acquire(slots, "a"), 1)).name == "a"  # not blocked by the load
        assert (await asyncio.wait_for(acquire(slots, None), 1)).name == "a"
        assert slots.describe()["b"]["loading"]
        loader.held["b"].set()
        acquired = await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert {slot.name for slot in acquired} == {"b"} and len({id(slot) for slot in acquired}) == 1
        assert loader.loads.count("b") == 1  # one load for all its callers

    asyncio.run(scenario())


def test_a_load_that_outlasts_the_wait_is_refused_and_goes_on() -> None:
    async def scenario() -> None:
        loader = Loader("b")
        slots = ModelSlots(models(("a", True), ("b", False)), loader, max_loaded=None, load_wait_s=0.05)
        slots.load_residents()
        with pytest.raises(ModelLoading, match="still loading"):
            await acquire(slots, "b")
        loader.held["b"].set()
        for _ in range(100):  # the load finishes in the background
            if "b" in slots.loaded:
                break
            await asyncio.sleep(0.02)
        assert (await acquire(slots, "b")).name == "b" and loader.loads.count("b") == 1

    asyncio.run(scenario())


def test_room_is_made_from_the_idle_non_resident_used_longest_ago() -> None:
    async def scenario() -> None:
        loader = Loader()
        slots = ModelSlots(models(("a", True), ("b", False), ("c", False), ("d", False)), loader, max_loaded=3,
                           load_wait_s=5)
        slots.load_residents()
        b = await acquire(slots, "b")
        c = await acquire(slots, "c")
        b.last_used, c.last_used = 10.0, 20.0  # b idle longest
        await acquire(slots, "d")
        assert set(slots.loaded) == {"a", "c", "d"} and b.closed.wait(5) and not c.closed.is_set()
        # Busy or resident models are never unloaded: with every candidate in use there is no room.
        release = asyncio.Event()
        holders = [asyncio.create_task(hold(slots, name, release)) for name in ("c", "d")]
        await asyncio.sleep(0.05)
        with pytest.raises(NoRoomForModel):
            await acquire(slots, "b")
        release.set()
        await asyncio.gather(*holders)
        assert slots.loaded["c"].in_use == slots.loaded["d"].in_use == 0

    asyncio.run(scenario())


def test_a_model_that_just_loaded_is_not_unloaded_before_its_callers_use_it() -> None:
    async def scenario() -> None:
        loader = Loader("b")
        slots = ModelSlots(models(("a", True), ("b", False), ("c", False)), loader, max_loaded=2, load_wait_s=10)
        slots.load_residents()
        waiting = asyncio.create_task(acquire(slots, "b"))
        await asyncio.sleep(0.05)
        loader.held["b"].set()
        # The load ends; before b's caller runs again, a request for c needs room, and b is the only candidate.
        while "b" not in slots.loaded:
            await asyncio.sleep(0)
        with pytest.raises(NoRoomForModel):
            await acquire(slots, "c")
        b = await waiting
        assert not b.closed.is_set() and "b" in slots.loaded

    asyncio.run(scenario())


def test_a_failed_load_is_refused_for_a_pause_then_tried_again() -> None:
    async def scenario() -> None:
        attempts = []

        def flaky(settings: ModelSettings) -> FakeSlot:
            attempts.append(settings.served_name)
            if len(attempts) == 1:
                raise RuntimeError("out of memory")
            return FakeSlot(settings)

        slots = ModelSlots(models(("b", False)), flaky, max_loaded=None, load_wait_s=1)
        for _ in range(2):  # the failure, then the pause after it: no second load yet
            with pytest.raises(ModelLoadFailed, match="out of memory"):
                await acquire(slots, "b")
        assert attempts == ["b"] and "out of memory" in slots.describe()["b"]["load_failed"]
        await asyncio.sleep(slots.retry_after_s())
        assert (await acquire(slots, "b")).name == "b" and attempts == ["b", "b"]

    asyncio.run(scenario())

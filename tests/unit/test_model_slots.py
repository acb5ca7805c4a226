"""The replica's set of models: a cold model loads on its first request while the loaded ones keep serving, its
requests wait for it (or are refused after load_wait_s), and room is made by unloading the idle non-resident one
used longest ago, never a resident or busy one."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serve_app.deployments.model_slots import ModelLoading, ModelSlots, NoRoomForModel
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


def test_a_cold_model_loads_while_the_loaded_one_answers_and_its_callers_wait() -> None:
    async def scenario() -> None:
        loader = Loader("b")
        slots = ModelSlots(models(("a", True), ("b", False)), loader, max_loaded=None, load_wait_s=10)
        slots.load_residents()
        waiting = [asyncio.create_task(slots.acquire("b")) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in waiting)
        assert (await asyncio.wait_for(slots.acquire("a"), 1)).name == "a"  # not blocked by the load
        assert (await asyncio.wait_for(slots.acquire(None), 1)).name == "a"
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
            await slots.acquire("b")
        loader.held["b"].set()
        for _ in range(100):  # the load finishes in the background
            if "b" in slots.loaded:
                break
            await asyncio.sleep(0.02)
        assert (await slots.acquire("b")).name == "b" and loader.loads.count("b") == 1


    asyncio.run(scenario())

def test_room_is_made_from_the_idle_non_resident_used_longest_ago() -> None:
    async def scenario() -> None:
        loader = Loader()
        slots = ModelSlots(models(("a", True), ("b", False), ("c", False), ("d", False)), loader, max_loaded=3,
                           load_wait_s=5)
        slots.load_residents()
        b = await slots.acquire("b")
        c = await slots.acquire("c")
        b.last_used, c.last_used = 10.0, 20.0  # b idle longest
        await slots.acquire("d")
        assert set(slots.loaded) == {"a", "c", "d"} and b.closed.wait(5) and not c.closed.is_set()
        # Busy or resident models are never unloaded: with every candidate in use there is no room.
        slots.loaded["c"].in_use = slots.loaded["d"].in_use = 1
        with pytest.raises(NoRoomForModel):
            await slots.acquire("b")


    asyncio.run(scenario())

def test_a_failed_load_fails_its_callers_and_the_next_request_tries_again() -> None:
    async def scenario() -> None:
        attempts = []

        def flaky(settings: ModelSettings) -> FakeSlot:
            attempts.append(settings.served_name)
            if len(attempts) == 1:
                raise RuntimeError("out of memory")
            return FakeSlot(settings)

        slots = ModelSlots(models(("b", False)), flaky, max_loaded=None, load_wait_s=5)
        with pytest.raises(RuntimeError, match="out of memory"):
            await slots.acquire("b")
        assert (await slots.acquire("b")).name == "b" and attempts == ["b", "b"]


    asyncio.run(scenario())

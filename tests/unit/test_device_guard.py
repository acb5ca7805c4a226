"""A model replica whose GPU stops working answers 503 (not retried) and gets itself replaced; others retry once."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from ray.exceptions import RayActorError

from serve_app.deployments.device_guard import DeviceFailed, DeviceGuard
from serve_app.deployments.ingress import Ingress
from serve_app.errors import ModelUnavailable
from serve_app.protocol import DeviceDecodeFailed


class Device:
    def __init__(self, works: bool):
        self.works, self.checks, self.exits = works, 0, 0

    async def check(self) -> None:
        self.checks += 1
        if not self.works:
            raise RuntimeError("CUDA error: device-side assert triggered")

    def exit(self) -> None:
        self.exits += 1


def test_a_failed_batch_on_a_working_device_keeps_its_own_error() -> None:
    device = Device(works=True)
    guard = DeviceGuard(device.check, device.exit)
    error = ValueError("bad array")
    assert asyncio.run(guard.classify(error)) is error
    assert device.exits == 0
    guard.check_health()


def test_a_jpeg_the_replica_cannot_decode_is_the_files_failure_without_a_look_at_the_device() -> None:
    device = Device(works=False)  # even a broken device: the file failed before any pass
    guard = DeviceGuard(device.check, device.exit)
    error = DeviceDecodeFailed("torchvision cannot decode this JPEG")
    assert asyncio.run(guard.classify(error)) is error
    assert (device.checks, device.exits) == (0, 0)


def test_a_broken_device_fails_the_batch_with_device_failed_exits_once_and_fails_health() -> None:
    device = Device(works=False)
    guard = DeviceGuard(device.check, device.exit)
    failure = RuntimeError("CUDA error: an illegal memory access")  # Serve gives every call of the batch this one
    first = asyncio.run(guard.classify(failure))
    second = asyncio.run(guard.classify(failure))
    assert isinstance(first, DeviceFailed) and isinstance(second, DeviceFailed)
    assert "device-side assert" in str(first)
    assert (device.checks, device.exits) == (1, 1)
    with pytest.raises(DeviceFailed):
        guard.check_health()


def test_passes_queued_behind_the_failing_one_are_held_and_retried_not_failed() -> None:
    # Batches failing together (the one that broke the device, and those queued behind it that found it broken)
    # ask the device once; only the first batch's calls get the 503, the others' are held until the exit and the
    # ingress retries them on the new replica.
    device = Device(works=False)
    guard = DeviceGuard(device.check, device.exit)
    breaking, queued = RuntimeError("CUDA error: an illegal memory access"), RuntimeError("CUDA error")

    async def both() -> list:
        calls = [asyncio.ensure_future(guard.classify(error)) for error in (breaking, breaking, queued, queued)]
        await asyncio.sleep(0.2)
        return [call.result() if call.done() else "held" for call in calls]

    outcomes = asyncio.run(both())
    assert [type(outcome).__name__ if outcome != "held" else outcome for outcome in outcomes] == [
        "DeviceFailed", "DeviceFailed", "held", "held"]
    assert (device.checks, device.exits) == (1, 1)


def test_calls_arriving_after_the_break_are_held_until_the_exit_not_failed() -> None:
    device = Device(works=False)
    guard = DeviceGuard(device.check, device.exit)
    arrived_before = time.perf_counter()
    asyncio.run(guard.classify(RuntimeError("CUDA error: device-side assert triggered")))
    arrived_after = time.perf_counter()
    assert not guard.broke_before(arrived_before), "a call of the failing batch must get its 503"
    assert guard.broke_before(arrived_after)

    async def held() -> None:  # held until the process exits (an actor error, retried), never answered here
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(guard.hold_until_exit(), timeout=0.2)
    asyncio.run(held())


class Remover:
    """A deployment handle whose calls fail as listed, then succeed."""

    def __init__(self, *failures: Exception):
        self.failures, self.calls = list(failures), 0
        self.remove_background = SimpleNamespace(remote=self._remote)

    async def _remote(self, *_args: object) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "mask"


def call(remover: Remover) -> str:
    ingress = SimpleNamespace(remover=remover, settings=SimpleNamespace(retry_after_s=1))
    return asyncio.run(Ingress.func_or_class._call_remover(ingress, "remove_background", "image"))


def test_ingress_answers_503_with_retry_after_and_does_not_retry_a_device_failure() -> None:
    remover = Remover(DeviceFailed("broken"))
    with pytest.raises(ModelUnavailable) as raised:
        call(remover)
    assert raised.value.status == 503 and raised.value.headers == {"Retry-After": "1"}
    assert remover.calls == 1  # the image may be what broke the device


def test_ingress_retries_once_when_the_replica_died() -> None:
    assert call(Remover(RayActorError())) == "mask"
    remover = Remover(RayActorError(), RayActorError())
    with pytest.raises(ModelUnavailable):
        call(remover)
    assert remover.calls == 2


def test_ingress_passes_a_failed_device_decode_on_unretried_for_its_fallback_to_pixels() -> None:
    remover = Remover(DeviceDecodeFailed("torchvision cannot decode this JPEG"))
    with pytest.raises(DeviceDecodeFailed):
        call(remover)
    assert remover.calls == 1

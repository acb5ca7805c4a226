"""What the model replica does when its GPU stops working: answer 503, and get itself replaced at once.

After a sticky CUDA error (illegal memory access, device-side assert, Xid, a lost device) every later call on the
device fails, so a replica in that state can only fail requests until Serve's next health check (10 s period)
replaces it, and under load dozens of requests fail before the replacement answers (docs/reliability.md). When a
batch fails, the guard asks the device whether it still works; if not, the batch's requests get `DeviceFailed` (the
ingress answers 503 with Retry-After and does not retry them: one of them may be what broke the device), and the
process exits, so that Serve replaces it now and the calls still queued here fail with an actor error, which the
ingress retries once on the new replica. Calls that arrive in the half second before the exit cannot have broken the
device, so they are held until it (rather than answered 503) and retried the same way, and so are the calls of
passes that were queued behind the failing one and failed only because the device already had (Serve gives every
call of a batch the one exception its pass raised, which tells the failing batch's calls from theirs).
A JPEG the replica cannot decode (`DeviceDecodeFailed`) is the file's failure, found before its pass: it goes back
as it is, without a look at the device. No torch here: the ingress imports `DeviceFailed` to recognise it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from serve_app.protocol import DeviceDecodeFailed

logger = logging.getLogger("ray.serve")


class DeviceFailed(RuntimeError):
    """The model replica's device no longer works; the replica is being replaced."""


class DeviceGuard:
    """Tells a failed batch caused by a broken device from an ordinary one, and reacts once."""

    def __init__(self, check_device: Callable[[], Awaitable[None]], on_broken: Callable[[], None]):
        self._check_device = check_device  # raises if the device cannot compute
        self._on_broken = on_broken
        self.broken_reason: str | None = None
        self.broken_at: float | None = None  # time.perf_counter() when the broken device was found
        self._breaking_error: Exception | None = None  # the failure that found it: its batch's calls get the 503
        self._checking = asyncio.Lock()  # batches failing together ask the device once

    async def classify(self, error: Exception) -> Exception:
        """The exception to give a failed call: its own `error` while the device works; DeviceFailed for the calls
        of the batch whose failure found the device broken (they share that one exception). A call whose pass
        failed after that, on the device another pass broke, is held until the exit and retried elsewhere."""
        if isinstance(error, DeviceDecodeFailed):  # refused before its pass: the file's failure, not the device's
            return error
        async with self._checking:
            if self.broken_reason is None:
                try:
                    await self._check_device()
                except Exception as check_error:
                    self.broken_reason = f"{type(check_error).__name__}: {check_error}"
                    self.broken_at = time.perf_counter()
                    self._breaking_error = error
                    logger.critical("the device stopped working (%s) after a batch failed with %r; exiting so "
                                    "that Serve replaces this replica", self.broken_reason, error)
                    self._on_broken()
                else:
                    return error
        if error is not self._breaking_error:
            await self.hold_until_exit()
        return DeviceFailed(f"the GPU of this model replica failed ({self.broken_reason}); it is being replaced")

    def broke_before(self, arrived: float) -> bool:
        """Whether the device was already found broken when a call that arrived at `arrived` came in."""
        return self.broken_at is not None and self.broken_at <= arrived

    async def hold_until_exit(self) -> NoReturn:
        """Never returns: the process exits (on_broken), the caller gets an actor error and retries elsewhere."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def check_health(self) -> None:
        if self.broken_reason is not None:
            raise DeviceFailed(self.broken_reason)

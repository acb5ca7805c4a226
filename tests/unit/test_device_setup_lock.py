"""The device set-up lock (serve_app/model/cuda_graphs.py): a set-up holds it alone and re-entrantly; side work
(a JPEG's decode, a cut-out's PNG, freeing cached memory) shares it on any number of threads, never waits, and is
refused while a set-up holds it or waits for it; a set-up waits for the side work in progress only."""

from __future__ import annotations

import threading
import time

from serve_app.model.cuda_graphs import DeviceSetupLock


def in_thread(function) -> object:  # type: ignore[no-untyped-def]
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join(10)
    return result[0]


def test_side_work_shares_it_on_several_threads_and_a_holder_is_refused_meanwhile() -> None:
    lock = DeviceSetupLock()
    assert lock.try_shared()
    assert in_thread(lock.try_shared)  # another thread's decode beside this thread's PNG
    assert not in_thread(lambda: lock.acquire(blocking=False))
    lock.release_shared()
    lock.release_shared()
    assert in_thread(lambda: lock.acquire(blocking=False))


def test_side_work_is_refused_while_a_setup_holds_it_but_not_in_the_setups_own_thread() -> None:
    lock = DeviceSetupLock()
    with lock:
        with lock:  # re-entrant: a load takes it, and the compiled forward it builds takes it again
            assert not in_thread(lock.try_shared)
            assert lock.try_shared()  # the set-up's own warm-up
            lock.release_shared()
    assert in_thread(lock.try_shared)


def test_a_setup_waits_for_side_work_in_progress_and_none_starts_while_it_waits() -> None:
    lock = DeviceSetupLock()
    assert lock.try_shared()
    acquired = threading.Event()

    def set_up() -> None:
        with lock:
            acquired.set()
    loader = threading.Thread(target=set_up)
    loader.start()
    time.sleep(0.2)
    assert not acquired.is_set()  # the decode in progress finishes first
    assert not in_thread(lock.try_shared)  # no new one starts in front of the waiting set-up
    lock.release_shared()
    assert acquired.wait(10)
    loader.join(10)
    assert lock.try_shared()


def test_only_the_holder_releases_it() -> None:
    lock = DeviceSetupLock()
    lock.acquire()

    def release_elsewhere() -> object:
        try:
            lock.release()
        except RuntimeError as error:
            return error
        return None
    assert isinstance(in_thread(release_elsewhere), RuntimeError)
    lock.release()
    assert in_thread(lambda: lock.acquire(blocking=False))

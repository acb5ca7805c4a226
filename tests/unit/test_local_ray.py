"""A command-line tool's Ray start is tried once more when Ray's local node timed out before it registered (a busy
machine), and only then."""

from __future__ import annotations

import pytest

from serve_app import local_ray

TIMEOUT = Exception("The current node timed out during startup. This could happen because some of the raylet "
                    "failed to startup or the GCS has become overloaded.")


class FakeRay:
    def __init__(self, *failures: Exception):
        self.failures, self.starts, self.shutdowns = list(failures), [], 0

    def init(self, **options: object) -> None:
        self.starts.append(options)
        if self.failures:
            raise self.failures.pop(0)

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_node_that_timed_out_starting_is_started_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRay(TIMEOUT)
    monkeypatch.setattr(local_ray, "ray", fake)
    local_ray.init(address="local", logging_level=30)
    assert fake.starts == [{"address": "local", "logging_level": 30}] * 2 and fake.shutdowns == 1


def test_a_second_timeout_and_any_other_failure_are_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_ray, "ray", FakeRay(TIMEOUT, TIMEOUT))
    with pytest.raises(Exception, match="timed out during startup"):
        local_ray.init(address="local")
    fake = FakeRay(ConnectionError("could not reach the cluster at 127.0.0.1:6379"))
    monkeypatch.setattr(local_ray, "ray", fake)
    with pytest.raises(ConnectionError):
        local_ray.init(address="127.0.0.1:6379")
    assert len(fake.starts) == 1

"""The model replica's start-up record: a live change of batch settings is no new start."""

from __future__ import annotations

import time
from types import SimpleNamespace

from serve_app.deployments.remover import BackgroundRemover


def test_configured_at_is_the_first_configuration_whatever_changes_before_the_first_request() -> None:
    replica = SimpleNamespace(_slots=SimpleNamespace(loaded={}), _serving=False, _startup={}, _defaults=None)
    reconfigure = BackgroundRemover.func_or_class.reconfigure
    reconfigure(replica, {"max_batch_size": 16, "batch_wait_timeout_s": 0.25})
    first = replica._startup["configured_at"]
    time.sleep(0.01)
    reconfigure(replica, {"max_batch_size": 2, "batch_wait_timeout_s": 0.25})  # no request came in between
    assert replica._startup["configured_at"] == first
    assert replica._defaults.max_batch_size == 2

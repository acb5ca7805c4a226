"""One in-process Ray for the whole integration tier; see deployment.py for how the app is deployed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray
from ray import serve

from tests.integration.deployment import PORT


@pytest.fixture(scope="package")
def base_url() -> Iterator[str]:
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield f"http://127.0.0.1:{PORT}"
    serve.shutdown()
    ray.shutdown()

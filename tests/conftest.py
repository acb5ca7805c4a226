"""Fixtures shared by every tier: the tiny model directory, written once per test run. Also how the suite is split
between pytest-xdist workers (pyproject.toml runs two): most of its time is spent waiting on Ray and `serve run`
start-ups, shutdowns and timed load, which two workers overlap."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import service_process
from serve_app.tiny_model import write_tiny_model
from tests.helpers import environment

# The e2e and integration packages each share one Ray between their modules (the `service` and `base_url`
# fixtures, package-scoped): their modules run on one worker, so that it starts once. These e2e modules start
# Rays of their own instead, and run on either worker, as does every other module, each whole on one worker for
# its module-scoped fixtures.
OWN_RAY_MODULES = {"tests/e2e/test_graceful_stop.py", "tests/e2e/test_haproxy_ingress.py", "tests/e2e/test_models.py",
                   "tests/e2e/test_prebuild.py"}
SHARED_RAY_PACKAGES = {"tests/e2e", "tests/integration"}


def xdist_scope(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    package = module.rpartition("/")[0]
    return package if package in SHARED_RAY_PACKAGES and module not in OWN_RAY_MODULES else module


def pytest_configure(config: pytest.Config) -> None:
    # Each worker hands out ports from its own slice of the range, so that a port handed out on one worker never
    # lies in a range of replica ports another worker handed out for a service behind HAProxy.
    worker, workers = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and workers:
        span = (service_process._HIGHEST_PORT - service_process._LOWEST_PORT) // int(workers)
        service_process._LOWEST_PORT += int(worker.removeprefix("gw")) * span
        service_process._HIGHEST_PORT = service_process._LOWEST_PORT + span


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """--dist loadscope with the scopes of xdist_scope (pytest-xdist's loadgroup marks no longer take effect
    with pytest 9, which derives node ids from the collection tree)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRayScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return SharedRayScheduling(config, log)


@pytest.fixture(scope="package")  # once per test package: each tier writes its own copy
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="package")  # once per test package, like the tiny model
def s3_bucket() -> Iterator[str]:
    """s3://BUCKET on an S3-compatible server (moto's) on loopback, reached the way a user's deployment reaches S3:
    the endpoint and the credentials in the standard AWS environment variables, nothing in any config."""
    from moto.server import ThreadedMotoServer

    port = service_process.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        with environment(env):
            from fsspec.core import url_to_fs

            fs, _ = url_to_fs("s3://serve-app-tests", skip_instance_cache=True)
            fs.mkdir("serve-app-tests")
            yield "s3://serve-app-tests"
    finally:
        server.stop()

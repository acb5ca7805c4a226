"""The real `serve run` as a subprocess on the tiny model, plus a loopback image server for URL routes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.service_process import free_port
from serve_app.serve_config import derive_config
from tests.helpers import TINY_CONFIG, serve_directory, serve_running
from tests.images import encode, red_square

CONFIG = TINY_CONFIG


@pytest.fixture(scope="package")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT serving red.png, red.jpg and not_an_image.png."""
    root = tmp_path_factory.mktemp("images")
    (root / "red.png").write_bytes(encode(red_square()))
    (root / "red.jpg").write_bytes(encode(red_square(), "JPEG", quality=95))
    (root / "not_an_image.png").write_bytes(b"<html>this is not a picture</html>")
    with serve_directory(root) as base_url:
        yield base_url


@pytest.fixture(scope="package")  # torn down before other tiers start a Ray of their own
def service(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `serve run` on a copy of configs/tiny.yaml pointing at the tiny model."""
    workdir = tmp_path_factory.mktemp("serve")
    config = derive_config(CONFIG, model={"model_id": str(tiny_model_dir)},
                           ingress={"result_dir": str(workdir / "results"), "model_names": ["birefnet-general"]},
                           port=free_port())
    with serve_running(config, workdir) as process:
        yield process.base_url

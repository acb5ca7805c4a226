"""The real remote-code path: model directories and Hub caches made by the tests, loaded by from_pretrained."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hub_layout import write_cutout_net


@pytest.fixture(scope="package")
def cutout_net_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cutout_net(tmp_path_factory.mktemp("cutout_net"))

"""The batch result store: atomic writes, safe names, expiry."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from serve_app.errors import NotFound
from serve_app.result_store import ResultStore


def test_saved_result_is_found_by_its_name(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, ttl_s=60)
    name = store.save(b"png-bytes", "png")
    assert store.path(name).read_bytes() == b"png-bytes"
    assert [p.name for p in tmp_path.iterdir()] == [name], "no temporary file is left behind"


@pytest.mark.parametrize("name", ["../etc/passwd", "x.png", "0" * 32 + ".exe", "", "0" * 32 + ".png/.."])
def test_names_we_never_issue_are_not_found(tmp_path: Path, name: str) -> None:
    with pytest.raises(NotFound):
        ResultStore(tmp_path, ttl_s=60).path(name)


def test_expired_results_are_gone(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, ttl_s=60)
    old, fresh = store.save(b"old", "png"), store.save(b"new", "webp")
    past = time.time() - 120
    os.utime(tmp_path / old, (past, past))
    with pytest.raises(NotFound, match="expired"):
        store.path(old)
    assert store.delete_expired() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh]

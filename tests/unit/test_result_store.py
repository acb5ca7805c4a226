"""The batch result store, in a folder and on S3: whole results only, safe names, expiry."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from fsspec.core import url_to_fs

from serve_app.errors import NotFound
from serve_app.result_store import ResultStore
from serve_app.settings import default_result_dir


@pytest.fixture(params=["folder", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "results")
    return f"{request.getfixturevalue('s3_bucket')}/results-{uuid.uuid4().hex[:8]}"


def listing(location: str) -> list[str]:
    fs, root = url_to_fs(location)
    fs.invalidate_cache()
    return sorted(path.rpartition("/")[2] for path in fs.find(root))


def test_saved_result_is_found_by_its_name_and_nothing_else_is_left(location: str) -> None:
    store = ResultStore(location, ttl_s=60)
    name = store.save(b"png-bytes", "png")
    assert store.load(name) == b"png-bytes"
    assert listing(location) == [name], "no temporary object is left behind"
    # Another replica reaching the same location serves it too.
    assert ResultStore(location, ttl_s=60).load(name) == b"png-bytes"


@pytest.mark.parametrize("name", ["../etc/passwd", "x.png", "0" * 32 + ".exe", "", "0" * 32 + ".png/.."])
def test_names_we_never_issue_are_not_found(tmp_path: Path, name: str) -> None:
    with pytest.raises(NotFound):
        ResultStore(str(tmp_path), ttl_s=60).load(name)


def test_a_missing_result_is_not_found(location: str) -> None:
    with pytest.raises(NotFound, match="kept 60 s"):
        ResultStore(location, ttl_s=60).load("0" * 32 + ".png")


def test_expired_results_are_gone(location: str) -> None:
    store = ResultStore(location, ttl_s=2)
    old = store.save(b"old", "png")
    if location.startswith("s3://"):
        time.sleep(2.5)  # an object's time is the server's, set when it was stored
    else:
        past = time.time() - 120
        os.utime(Path(location) / old, (past, past))
    fresh = store.save(b"new", "webp")
    with pytest.raises(NotFound, match="expired"):
        store.load(old)
    assert store.delete_expired() == 1
    assert listing(location) == [fresh]


def test_the_expiry_leaves_everything_it_did_not_write_alone(tmp_path: Path) -> None:
    # result_dir may be a shared folder: old files of others there, or below it, are not results to expire.
    location = tmp_path / "shared"
    store = ResultStore(str(location), ttl_s=60)
    own = store.save(b"old result", "png")
    stray = location / f".partial-{uuid.uuid4().hex}"  # a temporary a killed replica left
    stray.write_bytes(b"half")
    others = [location / "notes.txt", location / "team" / "important.png", location / ("f" * 32 + ".png.bak")]
    for path in others:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"not a result")
    past = time.time() - 3600
    for path in [location / own, stray, *others]:
        os.utime(path, (past, past))
    assert store.delete_expired() == 2
    assert all(path.exists() for path in others)
    assert not (location / own).exists() and not stray.exists()


def test_the_default_folder_is_this_users_alone(tmp_path: Path) -> None:
    folder = tmp_path / f"serve_app_results-{os.getuid()}"
    store = ResultStore(str(folder), ttl_s=60, private=True)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert store.load(store.save(b"cut-out", "png")) == b"cut-out"
    assert default_result_dir().endswith(f"serve_app_results-{os.getuid()}")


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_default_folder_another_user_made_first_is_refused(tmp_path: Path) -> None:
    # In the shared temporary folder anyone can create the name first, and would then read or replace the results.
    folder = tmp_path / "serve_app_results-0"
    folder.mkdir()
    os.chown(folder, 12345, 12345)
    with pytest.raises(PermissionError, match="belongs to another user"):
        ResultStore(str(folder), ttl_s=60, private=True)


def test_a_default_folder_that_is_a_link_or_was_open_to_others_is_made_private_or_refused(tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    opened.mkdir(mode=0o755)
    ResultStore(str(opened), ttl_s=60, private=True)
    assert opened.stat().st_mode & 0o777 == 0o700
    link = tmp_path / "link"
    link.symlink_to(opened)
    with pytest.raises(PermissionError, match="is a link"):
        ResultStore(str(link), ttl_s=60, private=True)

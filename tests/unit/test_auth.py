"""API keys: header parsing, constant-time matching, loading from a file and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.auth import key_matches
from serve_app.settings import API_KEYS_ENV, IngressSettings, load_api_keys

KEYS = ("alpha-key", "beta-key")


@pytest.mark.parametrize(
    ("header", "ok"),
    [("Bearer alpha-key", True), ("bearer beta-key", True), ("Bearer gamma-key", False), ("alpha-key", False),
     ("Basic alpha-key", False), ("Bearer ", False), (None, False), ("Bearer alpha-key-and-more", False)],
)
def test_key_matches(header: str | None, ok: bool) -> None:
    assert key_matches(header, KEYS) is ok


def test_keys_come_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nfile-key-1\n\n  file-key-2  \n")
    monkeypatch.setenv(API_KEYS_ENV, "env-key, ,env-key-2")
    keys = load_api_keys(IngressSettings(api_keys_file=keys_file))
    assert set(keys) == {"file-key-1", "file-key-2", "env-key", "env-key-2"}


def test_no_keys_means_no_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    assert load_api_keys(IngressSettings()) == ()

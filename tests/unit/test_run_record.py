"""Every benchmark record says what code ran where: the commit (and whether the tree had changes), the CPU, the
package versions and the command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.run_record import run_record

ROOT = Path(__file__).resolve().parents[2]


def test_a_record_names_the_commit_the_host_and_the_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_CODE_COMMIT", raising=False)
    record = run_record(extra=1)
    assert record["extra"] == 1 and record["command"] and record["date"].endswith("+00:00")
    assert record["host"]["cpus"] >= 1 and record["host"]["cpu"] not in ("", "x86_64")
    assert {"torch", "ray", "serve_app"} <= set(record["versions"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (a copy of the tree carried elsewhere has none: "code" is None)
        assert record["code"]["commit"] == head.stdout.strip() and isinstance(record["code"]["changed"], bool)
    else:
        assert record["code"] is None


def test_a_copy_of_the_tree_names_the_commit_it_was_made_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CODE_COMMIT", "a0ffb9e")
    assert run_record()["code"] == {"commit": "a0ffb9e", "changed": None, "from": "BENCH_CODE_COMMIT"}

"""The head of every benchmark record: when and where it ran, what code ran, and the command that reproduces it."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from serve_app.versions import component_versions

ROOT = Path(__file__).resolve().parents[2]


def run_record(**fields: object) -> dict:
    """{"date": now in UTC, "command": this process's command line, "host": the CPU and its count, "code": the git
    commit and whether the tree had changes (None where the tree is no git checkout, such as a copy carried to a
    benchmark machine; `BENCH_CODE_COMMIT`, where set, names the commit such a copy was made from), "versions":
    the packages that decide behaviour, **fields}."""
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "host": {"cpu": cpu_model(), "cpus": os.cpu_count()}, "code": git_state(),
            "versions": component_versions(), **fields}


def cpu_model() -> str:
    """The CPU's model name (platform.processor() says only "x86_64" on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state() -> dict | None:
    # A copy of the tree carried to another machine may hold a git directory that is not the tree's own history
    # (an older checkout left there): the commit the copy was made from, when given, is the one that ran.
    given = os.environ.get("BENCH_CODE_COMMIT", "").strip()
    if given:
        return {"commit": given, "changed": None, "from": "BENCH_CODE_COMMIT"}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "changed": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None

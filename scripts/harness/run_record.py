"""The head of every benchmark record: when it ran and the command that reproduces it."""

from __future__ import annotations

import datetime
import shlex
import sys
from pathlib import Path


def run_record(**fields: object) -> dict:
    """{"date": now in UTC, "command": this process's command line, **fields}."""
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]), **fields}

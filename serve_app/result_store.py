"""Where /batch results live until the client downloads them: files under one directory, expiring by age."""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from pathlib import Path

from serve_app.errors import NotFound

_RESULT_NAME = re.compile(r"^[0-9a-f]{32}\.(png|webp|jpg)$")


class ResultStore:
    def __init__(self, directory: Path, ttl_s: float):
        self.directory = directory
        self.ttl_s = ttl_s
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, data: bytes, extension: str) -> str:
        """Write atomically (temporary file, then rename) so a reader never sees half a result."""
        name = f"{uuid.uuid4().hex}.{extension}"
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, self.directory / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return name

    def path(self, name: str) -> Path:
        """The file for a result name; NotFound for names we never issue, expired or missing results."""
        if not _RESULT_NAME.match(name):
            raise NotFound(f"no result named {name!r}")
        path = self.directory / name
        try:
            age_s = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            raise NotFound(f"no result named {name!r} (results are kept {self.ttl_s:g} s)") from None
        if age_s > self.ttl_s:
            raise NotFound(f"result {name!r} has expired")
        return path

    def delete_expired(self) -> int:
        """Remove results (and stray temporary files) older than the TTL; returns how many went."""
        cutoff, removed = time.time() - self.ttl_s, 0
        for entry in os.scandir(self.directory):
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # another replica removed it first
        return removed

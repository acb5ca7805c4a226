"""Where /batch results live until the client downloads them: objects under one folder or object-store prefix (any
path fsspec understands: a local or shared folder, s3://bucket/prefix), expiring by age. Every ingress replica
that reaches the same folder serves every result."""

from __future__ import annotations

import os
import re
import stat
import time
import uuid

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from serve_app.bulk.layout import is_temporary, write_atomically
from serve_app.errors import NotFound

_RESULT_NAME = re.compile(r"[0-9a-f]{32}\.(png|webp|jpg)")


class ResultStore:
    def __init__(self, location: str, ttl_s: float, *, private: bool = False):
        """`private`: a local folder in a place every user writes to (the default, under the temporary folder),
        made readable by this user alone, and refused when it belongs to another, who could read or replace the
        results."""
        self.location = location.rstrip("/")
        self.ttl_s = ttl_s
        self._fs, self._root = url_to_fs(self.location)
        if private and isinstance(self._fs, LocalFileSystem):
            os.makedirs(self._root, mode=0o700, exist_ok=True)
            found = os.lstat(self._root)  # lstat: a link planted under the name would lead elsewhere
            if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
                raise PermissionError(f"result folder {self._root} is a link or belongs to another user (uid "
                                      f"{found.st_uid}), who could read or replace the results; set "
                                      "args.ingress.result_dir to a folder of yours")
            os.chmod(self._root, 0o700)  # made earlier with other permissions
        self._fs.makedirs(self._root, exist_ok=True)

    def save(self, data: bytes, extension: str) -> str:
        """Store atomically (bulk.layout.write_atomically), so that a reader never sees half a result."""
        name = f"{uuid.uuid4().hex}.{extension}"
        write_atomically(f"{self.location}/{name}", data)
        return name

    def load(self, name: str) -> bytes:
        """The bytes of a result; NotFound for names we never issue, expired or missing results."""
        if not _RESULT_NAME.fullmatch(name):
            raise NotFound(f"no result named {name!r}")
        path = f"{self._root}/{name}"
        self._fs.invalidate_cache()  # another replica may have stored it since this one last listed the folder
        try:
            age_s = time.time() - self._fs.modified(path).timestamp()
            if age_s > self.ttl_s:
                raise NotFound(f"result {name!r} has expired")
            return self._fs.cat_file(path)
        except FileNotFoundError:
            raise NotFound(f"no result named {name!r} (results are kept {self.ttl_s:g} s)") from None

    def delete_expired(self) -> int:
        """Remove results (and stray temporary files) older than the TTL; returns how many went.

        Only the folder's own level, and only names this store writes: result_dir may be a shared folder or bucket
        prefix that holds other data, which is not this store's to delete."""
        cutoff, removed = time.time() - self.ttl_s, 0
        self._fs.invalidate_cache()
        for path in self._fs.ls(self._root, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if not (_RESULT_NAME.fullmatch(name) or is_temporary(name)):  # results, and write_atomically's
                continue
            try:
                if self._fs.modified(path).timestamp() < cutoff:
                    self._fs.rm_file(path)
                    removed += 1
            except FileNotFoundError:
                continue  # another replica removed it first
        return removed

"""What both bulk modes share: which inputs exist, where each output goes, atomic writes, and the job ledger.

INPUT and OUTPUT are any path fsspec understands (a local folder, s3://..., gs://...). OUTPUT mirrors INPUT's
relative paths with the output format's extension. An output that exists is complete: on a file system every
output is written under a temporary name first and renamed, and on an object store (which has no atomic rename) in
one PUT, which makes the object visible whole or not at all. A rerun therefore skips existing outputs, and
temporary files left by a killed run are removed when the next run starts.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import fsspec
from fsspec.core import url_to_fs

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif",
                            ".avif"})
TEMP_MARK = ".tmp-"
# Stores whose objects appear whole on one PUT, and whose "rename" is a copy: no temporary name there.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"})
FAILURES_NAME = "_failures.jsonl"
SUMMARY_NAME = "_summary.json"


@dataclass(frozen=True)
class WorkItem:
    source: str  # URL of the input (file:///..., s3://...)
    relative: str  # path under INPUT, "/"-separated
    target: str  # URL of the output


class Layout:
    """The mapping from INPUT files to OUTPUT files for one output format."""

    def __init__(self, input_root: str, output_root: str, output_format: str):
        self.input_fs, self.input_root = url_to_fs(input_root)
        self.output_fs, self.output_root = url_to_fs(output_root)
        self.input_root = self.input_root.rstrip("/")
        self.output_root = self.output_root.rstrip("/")
        self.suffix = "." + output_format

    def inputs(self) -> list[str]:
        """Relative paths of every image under INPUT, recursively, sorted."""
        found = self.input_fs.find(self.input_root)
        relative = (path[len(self.input_root) :].lstrip("/") for path in found)
        return sorted(rel for rel in relative if PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES)

    def existing_outputs(self) -> set[str]:
        if not self.output_fs.exists(self.output_root):
            return set()
        return {path[len(self.output_root) :].lstrip("/") for path in self.output_fs.find(self.output_root)}

    def output_relative(self, relative: str) -> str:
        return str(PurePosixPath(relative).with_suffix(self.suffix))

    def plan(self) -> tuple[list[WorkItem], int]:
        """Work still to do, and how many inputs are skipped because their output exists."""
        done = self.existing_outputs()
        pending, skipped = [], 0
        for relative in self.inputs():
            out = self.output_relative(relative)
            if out in done:
                skipped += 1
            else:
                pending.append(WorkItem(self.input_fs.unstrip_protocol(f"{self.input_root}/{relative}"), relative,
                                        self.output_fs.unstrip_protocol(f"{self.output_root}/{out}")))
        return pending, skipped

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed run left behind; returns how many."""
        if not self.output_fs.exists(self.output_root):
            return 0
        stale = [p for p in self.output_fs.find(self.output_root) if PurePosixPath(p).name.startswith(TEMP_MARK)]
        for path in stale:
            self.output_fs.rm_file(path)
        return len(stale)


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return any(protocol in OBJECT_STORES for protocol in protocols)


def write_atomically(target: str, data: bytes) -> None:
    """Write so that a crash never leaves half a file: on an object store in one PUT, elsewhere under a temporary
    name in the same folder, then renamed."""
    fs, path = url_to_fs(target)
    if is_object_store(fs):
        fs.pipe_file(path, data)
        return
    parent = str(PurePosixPath(path).parent)
    fs.makedirs(parent, exist_ok=True)
    temporary = f"{parent}/{TEMP_MARK}{uuid.uuid4().hex}-{PurePosixPath(path).name}"
    try:
        fs.pipe_file(temporary, data)
        fs.mv(temporary, path)
    except BaseException:
        if fs.exists(temporary):
            fs.rm_file(temporary)
        raise


def read_bytes(source: str) -> bytes:
    with fsspec.open(source, "rb") as file:
        return file.read()


@dataclass
class Ledger:
    """Counts, failures and rate of one run; written to OUTPUT/_failures.jsonl and OUTPUT/_summary.json."""

    layout: Layout
    mode: str
    skipped: int = 0
    done: int = 0
    failures: dict[str, dict] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    batch_size_histogram: dict[int, int] | None = None  # offline mode: forward passes per batch size
    images_by_model_node: dict[str, int] | None = None  # offline mode: images each Ray node's model actor segmented

    def succeeded(self, item: WorkItem) -> None:
        self.done += 1

    def failed(self, item: WorkItem, code: str, message: str) -> None:
        self.failures[item.relative] = {"input": item.relative, "code": code, "reason": message}

    def write(self, *, pending: int) -> dict:
        """Rewrite both files from this run's state (atomically), and return the summary."""
        elapsed = time.monotonic() - self.started
        summary = {
            "mode": self.mode,
            "inputs": self.skipped + pending,
            "processed_this_run": self.done,
            "skipped_already_done": self.skipped,
            "failed": len(self.failures),
            "elapsed_s": round(elapsed, 2),
            "images_per_s": round(self.done / elapsed, 3) if elapsed > 0 else None,
        }
        if self.batch_size_histogram is not None:
            summary["batch_size_histogram"] = {str(size): count for size, count in self.batch_size_histogram.items()}
        if self.images_by_model_node is not None:
            summary["images_by_model_node"] = dict(self.images_by_model_node)
        root = self.layout.output_root
        failures = "".join(json.dumps(entry) + "\n" for entry in self.failures.values())
        write_atomically(self._url(f"{root}/{FAILURES_NAME}"), failures.encode())
        write_atomically(self._url(f"{root}/{SUMMARY_NAME}"), (json.dumps(summary, indent=2) + "\n").encode())
        return summary

    def _url(self, path: str) -> str:
        return self.layout.output_fs.unstrip_protocol(path)

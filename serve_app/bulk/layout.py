"""What both bulk modes share: which inputs exist, where each output goes, atomic writes, and the job ledger.

INPUT and OUTPUT are any path fsspec understands (a local folder, s3://..., gs://...). OUTPUT mirrors INPUT's
relative paths with the output format's extension; where two inputs would share an output (a.jpg and a.png), each
keeps its whole name instead (a.jpg.png, a.png.png), so that no output overwrites another. An output that exists
is complete: on a file system every output is written under a temporary name first and renamed, and on an object
store (which has no atomic rename) in one PUT, which makes the object visible whole or not at all. A rerun
therefore skips existing outputs, and temporary files left by a killed run are removed when the next run starts
(one run per OUTPUT at a time). OUTPUT may lie inside INPUT (its files are not inputs) but may not be INPUT.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import ClassVar

import fsspec
from fsspec.core import split_protocol, strip_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem

from serve_app.options import OutputOptions

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif",
                            ".avif"})
# A temporary file's name: short whatever the output's (a long name still fits the file system's limit) and never
# an output's, which always ends in the format's extension.
_TEMPORARY = re.compile(r"\.partial-[0-9a-f]{32}")
# Stores whose objects appear whole on one PUT, and whose "rename" is a copy: no temporary name there.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"})
FAILURES_NAME = "_failures.jsonl"
SUMMARY_NAME = "_summary.json"
JOB_NAME = "_job.json"


def job_options(options: OutputOptions, model: str | None) -> dict:
    """What makes one run's outputs differ from another's: the output options, and the model (a served model's name
    or a model id; None: the service's default, unknown here)."""
    job = {"format": options.format, "only_mask": options.only_mask, "bg_color": options.bg_color}
    return job if model is None else {**job, "model": model}


def is_temporary(name: str) -> bool:
    """Whether a file name under OUTPUT is an output still being written (or left by a killed run)."""
    return _TEMPORARY.fullmatch(name) is not None


class LayoutError(ValueError):
    """INPUT or OUTPUT cannot be used as given; the message says why."""


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
        self.ignored = 0  # files under INPUT that inputs() passed over: not images by their extension

    def inputs(self) -> list[str]:
        """Relative paths of every image under INPUT, recursively (through linked folders too), sorted; `ignored`
        counts the other files. OUTPUT's own files are not inputs when it lies inside INPUT."""
        if not self.input_fs.isdir(self.input_root):
            raise LayoutError(f"INPUT {self.input_fs.unstrip_protocol(self.input_root)} is not a folder")
        nested = self._output_within_input()
        relative = [path[len(self.input_root) :].lstrip("/") for path in self._input_files()]
        if nested is not None:
            relative = [rel for rel in relative if not rel.startswith(nested + "/")]
        images = sorted(rel for rel in relative if PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES)
        self.ignored = len(relative) - len(images)
        return images

    def _output_within_input(self) -> str | None:
        """OUTPUT's path under INPUT when it lies inside it, else None; LayoutError when it is INPUT."""
        if type(self.input_fs) is not type(self.output_fs):
            return None
        if self.output_root == self.input_root:
            raise LayoutError("OUTPUT must not be INPUT: the outputs would mix with the photos; name another folder")
        if self.output_root.startswith(self.input_root + "/"):
            return self.output_root[len(self.input_root) + 1 :]
        return None

    def _input_files(self) -> list[str]:
        if not isinstance(self.input_fs, LocalFileSystem):
            return self.input_fs.find(self.input_root)
        # fsspec's find lists a linked folder as one entry and does not go into it; os.walk follows links, and a
        # link back to a folder already walked is skipped.
        found, walked = [], set()
        for folder, subfolders, files in os.walk(self.input_root, followlinks=True):
            real = os.path.realpath(folder)
            if real in walked:
                subfolders.clear()
                continue
            walked.add(real)
            found += [f"{folder}/{name}".replace(os.sep, "/") for name in files]
        return found

    def existing_outputs(self) -> set[str]:
        if not self.output_fs.exists(self.output_root):
            return set()
        return {path[len(self.output_root) :].lstrip("/") for path in self.output_fs.find(self.output_root)}

    def output_relative(self, relative: str) -> str:
        return str(PurePosixPath(relative).with_suffix(self.suffix))

    def outputs_for(self, inputs: list[str]) -> dict[str, str]:
        """Each input's output path under OUTPUT: the input's with the format's extension, or where inputs would
        share that (a.jpg and a.png; A.jpg and a.jpg, one file where names ignore case), the whole input name
        with the extension added (a.jpg.png)."""
        plain = {relative: self.output_relative(relative) for relative in inputs}
        sharing = Counter(out.lower() for out in plain.values())
        chosen = {relative: out if sharing[out.lower()] == 1 else relative + self.suffix
                  for relative, out in plain.items()}
        still = Counter(chosen.values())  # inputs whose whole names differ in case alone differ on this system
        clashing = sorted(relative for relative, out in chosen.items() if still[out] > 1)
        if clashing:
            raise LayoutError(f"inputs {', '.join(clashing[:6])} would be written to the same output; rename one")
        return chosen

    def plan(self) -> tuple[list[WorkItem], int]:
        """Work still to do, and how many inputs are skipped because their output exists."""
        done = self.existing_outputs()
        pending, skipped = [], 0
        for relative, out in self.outputs_for(self.inputs()).items():
            if out in done:
                skipped += 1
            else:
                pending.append(WorkItem(self.input_fs.unstrip_protocol(f"{self.input_root}/{relative}"), relative,
                                        self.output_fs.unstrip_protocol(f"{self.output_root}/{out}")))
        return pending, skipped

    def claim_output(self, job: dict) -> None:
        """Record in OUTPUT/_job.json what its outputs are made with (`job`: every option that changes an output),
        or LayoutError if OUTPUT already holds outputs made otherwise: a rerun skips every existing output as done,
        so a changed option would leave them as they were without a word."""
        job = json.loads(json.dumps(job))  # as the file holds it (tuples as lists)
        path = f"{self.output_root}/{JOB_NAME}"
        if self.output_fs.exists(path):
            earlier = json.loads(self.output_fs.cat_file(path))
            # a key only one run names (the client's model left to the service's default) is not compared
            changed = sorted(key for key in set(earlier) & set(job) if earlier[key] != job[key])
            if changed:
                was = ", ".join(f"{key}={earlier.get(key)!r}" for key in changed)
                now = ", ".join(f"{key}={job.get(key)!r}" for key in changed)
                raise LayoutError(f"OUTPUT holds outputs made with {was}, and this run asks for {now}: use another "
                                  "OUTPUT, or the same options to resume")
            return
        write_atomically(self.output_fs.unstrip_protocol(path), (json.dumps(job, indent=2) + "\n").encode())

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed run left behind; returns how many."""
        if not self.output_fs.exists(self.output_root):
            return 0
        stale = [p for p in self.output_fs.find(self.output_root) if is_temporary(PurePosixPath(p).name)]
        for path in stale:
            self.output_fs.rm_file(path)
        return len(stale)


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return any(protocol in OBJECT_STORES for protocol in protocols)


def file_url(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system and path of one file's URL, taken literally: fsspec.open and url_to_fs read '::' in a file
    name as a chain of file systems."""
    protocol, _ = split_protocol(url)
    return fsspec.filesystem(protocol or "file"), strip_protocol(url)


def write_atomically(target: str, data: bytes) -> None:
    """Write so that a crash never leaves half a file: on an object store in one PUT, elsewhere under a temporary
    name in the same folder, then renamed."""
    fs, path = file_url(target)
    if is_object_store(fs):
        fs.pipe_file(path, data)
        return
    parent = str(PurePosixPath(path).parent)
    fs.makedirs(parent, exist_ok=True)
    temporary = f"{parent}/.partial-{uuid.uuid4().hex}"
    try:
        fs.pipe_file(temporary, data)
        fs.mv(temporary, path)
    except BaseException:
        if fs.exists(temporary):
            fs.rm_file(temporary)
        raise


def read_bytes(source: str) -> bytes:
    fs, path = file_url(source)
    return fs.cat_file(path)


@dataclass
class Ledger:
    """Counts, failures and rate of one run; written to OUTPUT/_failures.jsonl and OUTPUT/_summary.json."""

    FLUSH_EVERY: ClassVar[int] = 200  # images; a killed run's files lose at most this many (a rerun redoes them)

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
            "ignored_not_images": self.layout.ignored,
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

"""One run's bookkeeping: counts, failures and rate, kept in OUTPUT/_summary.json and OUTPUT/_failures.jsonl."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

from fsspec.implementations.local import LocalFileSystem

from serve_app.bulk.layout import (
    FAILURES_NAME,
    SUMMARY_NAME,
    Layout,
    WorkItem,
    output_unusable,
    stopped_by_output,
    write_atomically,
)

logger = logging.getLogger(__name__)


@dataclass
class Ledger:
    """Counts, failures and rate of one run. Its first write starts OUTPUT/_failures.jsonl over, so that the file
    lists this run's failures alone; later writes add the failures since (appended to a local file; an object,
    which takes no appending, is stored again whole, at most every OBJECT_REWRITE_S and at the last write) and
    replace OUTPUT/_summary.json."""

    # Images; a killed run's files lose at most this many (a rerun redoes them), on an object store the failures of
    # up to OBJECT_REWRITE_S.
    FLUSH_EVERY: ClassVar[int] = 200
    # An object store's failure list is uploaded whole: every FLUSH_EVERY images, a run with many failures would
    # upload their square (10% of 10^6 failing: about 40 GB for a 16 MB list).
    OBJECT_REWRITE_S: ClassVar[float] = 60.0

    layout: Layout
    mode: str
    skipped: int = 0
    done: int = 0
    failures: list[dict] = field(default_factory=list)
    interrupted: bool = False  # stopped by Ctrl-C: the counts are those of the images settled before it
    started: float = field(default_factory=time.monotonic)
    batch_size_histogram: dict[int, int] | None = None  # offline mode: forward passes per batch size
    images_by_model_node: dict[str, int] | None = None  # offline mode: images each Ray node's model actor segmented
    _failures_written: int | None = field(default=None, init=False)  # None until the first write
    _failures_stored_at: float = field(default=0.0, init=False)  # when the object store's list was last uploaded
    # The client writes from a worker thread while its event loop records more: one write at a time, each taking
    # the failures recorded by then.
    _writing: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def succeeded(self, item: WorkItem) -> None:
        self.done += 1

    def failed(self, item: WorkItem, code: str, message: str) -> None:
        self.failures.append({"input": item.relative, "code": code, "reason": message})

    def write(self, *, pending: int, last: bool = False) -> dict:
        """Write both files from this run's state (`last`: the run's final write), and return the summary. An
        OUTPUT that is full or read-only fails a write with RunStopped; the last write, which may follow a run
        stopped so, only logs it (the summary is still returned, and the stop's own error stands)."""
        with self._writing:
            summary = self._summary(pending)
            try:
                self._write_failures(last)
                write_atomically(self._url(SUMMARY_NAME), (json.dumps(summary, indent=2) + "\n").encode())
            except OSError as error:
                if not output_unusable(error):
                    raise
                if not last:
                    raise stopped_by_output(f"{type(error).__name__}: {error}") from None
                logger.error("could not write the run's summary and failures to OUTPUT: %s", error)
        return summary

    def _summary(self, pending: int) -> dict:
        elapsed = time.monotonic() - self.started
        summary = {
            "mode": self.mode,
            "inputs": self.skipped + pending,
            "ignored_not_images": self.layout.ignored,
            "processed_this_run": self.done,
            "skipped_already_done": self.skipped,
            "failed": len(self.failures),
            "interrupted": self.interrupted,
            "elapsed_s": round(elapsed, 2),
            "images_per_s": round(self.done / elapsed, 3) if elapsed > 0 else None,
        }
        if self.batch_size_histogram is not None:
            summary["batch_size_histogram"] = {str(size): count for size, count in self.batch_size_histogram.items()}
        if self.images_by_model_node is not None:
            summary["images_by_model_node"] = dict(self.images_by_model_node)
        return summary

    def _write_failures(self, last: bool) -> None:
        # Rewriting the whole list at every write would cost a run with many failures time in their square.
        written = self._failures_written or 0
        new = self.failures[written:]
        if new and not isinstance(self.layout.output_fs, LocalFileSystem) and not last and (
                time.monotonic() - self._failures_stored_at < self.OBJECT_REWRITE_S):
            return  # the new failures go with a later write
        if self._failures_written is None or (new and not isinstance(self.layout.output_fs, LocalFileSystem)):
            write_atomically(self._url(FAILURES_NAME), _lines(self.failures[: written + len(new)]))
            self._failures_stored_at = time.monotonic()
        elif new:
            with self.layout.output_fs.open(f"{self.layout.output_root}/{FAILURES_NAME}", "ab") as file:
                file.write(_lines(new))
        self._failures_written = written + len(new)

    def _url(self, name: str) -> str:
        return self.layout.output_fs.unstrip_protocol(f"{self.layout.output_root}/{name}")


def _lines(failures: list[dict]) -> bytes:
    return "".join(json.dumps(entry) + "\n" for entry in failures).encode()

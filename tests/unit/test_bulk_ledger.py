"""What OUTPUT/_summary.json and OUTPUT/_failures.jsonl say during a run, after it, and after a Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app.bulk import client, offline
from serve_app.bulk.__main__ import main
from serve_app.bulk.layout import Layout, WorkItem
from serve_app.bulk.ledger import Ledger


def failures_of(out: Path) -> list[str]:
    return [json.loads(line)["input"] for line in (out / "_failures.jsonl").read_text().splitlines()]


def test_failures_are_added_to_the_list_a_reader_follows(tmp_path: Path) -> None:
    # `tail -f OUTPUT/_failures.jsonl` keeps showing them as they come; a rerun starts a list of its own
    ledger = Ledger(Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png"), "client")
    ledger.failed(WorkItem("", "a.jpg", ""), "invalid_image", "not an image")
    ledger.write(pending=3)
    with (tmp_path / "out" / "_failures.jsonl").open() as follower:
        assert [json.loads(line)["input"] for line in follower] == ["a.jpg"]
        ledger.failed(WorkItem("", "b.jpg", ""), "invalid_image", "not an image")
        ledger.write(pending=3)
        ledger.write(pending=3)
        assert [json.loads(line)["input"] for line in follower] == ["b.jpg"]
    rerun = Ledger(Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png"), "client")
    rerun.write(pending=2)
    assert failures_of(tmp_path / "out") == []


def test_an_object_stores_failure_list_is_uploaded_whole_once_a_minute_and_at_the_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # uploaded at each write (every 200 images), a run with many failures would upload their square
    from serve_app.bulk import ledger as ledger_module

    uploads: list[int] = []
    write = ledger_module.write_atomically

    def counted(url: str, data: bytes, **kwargs: object) -> None:
        if url.endswith("_failures.jsonl"):
            uploads.append(data.count(b"\n"))
        write(url, data, **kwargs)

    monkeypatch.setattr(ledger_module, "write_atomically", counted)
    ledger = Ledger(Layout("memory://bulk-in", "memory://bulk-ledger-out", "png"), "client")
    ledger.write(pending=10)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        ledger.failed(WorkItem("", name, ""), "invalid_image", "not an image")
        ledger.write(pending=10)
    assert uploads == [0]  # the run's empty list at its start, then nothing within the minute
    monkeypatch.setattr(Ledger, "OBJECT_REWRITE_S", 0.0)
    ledger.failed(WorkItem("", "d.jpg", ""), "invalid_image", "not an image")
    ledger.write(pending=10)
    monkeypatch.setattr(Ledger, "OBJECT_REWRITE_S", 60.0)
    ledger.failed(WorkItem("", "e.jpg", ""), "invalid_image", "not an image")
    ledger.write(pending=10, last=True)
    assert uploads == [0, 4, 5]
    stored = ledger.layout.output_fs.cat_file("/bulk-ledger-out/_failures.jsonl").decode().splitlines()
    assert [json.loads(line)["input"] for line in stored] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]


@pytest.fixture
def photos(tmp_path: Path) -> Iterator[Path]:
    """INPUT with three photos, and Ctrl-C delivered as a terminal delivers it (whatever the test runner set)."""
    (tmp_path / "in").mkdir()
    for name in ["a.jpg", "b.jpg", "c.jpg"]:
        (tmp_path / "in" / name).write_bytes(b"x")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield tmp_path
    signal.signal(signal.SIGINT, previous)


def run_stopped(argv: list[str]) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended the command with a traceback")


def assert_interrupted_after_two(status: int, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status == 130
    err = capsys.readouterr().err.splitlines()  # a progress bar's, then one line
    assert err[-1] == "interrupted: the outputs written so far are kept; run the same command again to resume"
    assert not any("Traceback" in line for line in err)
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["processed_this_run"], summary["failed"], summary["interrupted"]) == (1, 1, True)
    assert failures_of(out) == ["b.jpg"] and (out / "a.png").exists()


def test_ctrl_c_in_client_mode_leaves_this_runs_ledger(photos: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    async def ready(self: client.Readiness) -> bool:
        return False

    async def remove_one(http: object, item: WorkItem, *args: object) -> bytes:
        if item.relative == "b.jpg":
            raise client.PermanentFailure("invalid_image", "not an image")
        if item.relative == "c.jpg":
            signal.raise_signal(signal.SIGINT)
            await asyncio.sleep(60)
        return b"cut-out"

    monkeypatch.setattr(client.Readiness, "wait", ready)
    monkeypatch.setattr(client, "remove_one", remove_one)
    status = run_stopped(["client", str(photos / "in"), str(photos / "out"), "--url", "http://127.0.0.1:1",
                          "--concurrency", "1"])
    assert_interrupted_after_two(status, photos / "out", capsys)


class StoppedPipeline:
    """The offline pipeline's outcomes: a.jpg written, b.jpg failed, then Ctrl-C."""

    def __init__(self, pending: list[WorkItem], *args: object, **kwargs: object):
        self.pending = pending

    def iter_rows(self) -> Iterator[dict]:
        for item in self.pending:
            if item.relative == "c.jpg":
                raise KeyboardInterrupt
            failed = item.relative == "b.jpg"
            if not failed:
                Path(item.target.removeprefix("file://")).write_bytes(b"cut-out")
            yield {"relative": item.relative, "batch_images": 1, "model_node": "node",
                   "code": "invalid_image" if failed else "", "reason": "not an image" if failed else ""}


def test_ctrl_c_in_offline_mode_leaves_this_runs_ledger(photos: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(offline, "connect", lambda address: None)
    monkeypatch.setattr(offline.ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(offline.ray, "available_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(offline, "_pipeline", StoppedPipeline)
    status = run_stopped(["offline", str(photos / "in"), str(photos / "out")])
    assert_interrupted_after_two(status, photos / "out", capsys)
    assert json.loads((photos / "out" / "_summary.json").read_text())["batch_size_histogram"] == {"1": 2}


def test_a_full_output_stops_a_write_but_not_the_last_one_which_follows_the_stop(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from serve_app.bulk import ledger as ledger_module
    from serve_app.bulk.layout import RunStopped

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    ledger = Ledger(Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png"), "client")
    monkeypatch.setattr(ledger_module, "write_atomically", full)
    with pytest.raises(RunStopped, match="OUTPUT cannot be written .*No space left"):
        ledger.write(pending=3)
    ledger.done = 1
    assert ledger.write(pending=3, last=True)["processed_this_run"] == 1  # logged; the summary still returned

"""Bulk layout: which inputs are found, where outputs go, what a rerun skips, atomic writes."""

from __future__ import annotations

from pathlib import Path

from serve_app.bulk.layout import Layout, write_atomically


def make_tree(root: Path) -> None:
    for relative in ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp", "notes.txt", "sub/.DS_Store"]:
        path = root / "in" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_inputs_are_found_recursively_and_mapped_to_the_output_format(tmp_path: Path) -> None:
    make_tree(tmp_path)
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    assert layout.inputs() == ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp"]
    pending, skipped = layout.plan()
    assert skipped == 0
    assert [Path(item.target.removeprefix("file://")).relative_to(tmp_path / "out").as_posix() for item in pending] \
        == ["a.png", "sub/b.png", "sub/deeper/c.png"]


def test_phone_photo_formats_are_inputs(tmp_path: Path) -> None:
    for name in ["a.HEIC", "b.heif", "c.avif"]:
        (tmp_path / name).write_bytes(b"x")
    assert Layout(str(tmp_path), str(tmp_path / "out"), "png").inputs() == ["a.HEIC", "b.heif", "c.avif"]


def test_existing_outputs_are_skipped_and_stale_temporaries_removed(tmp_path: Path) -> None:
    make_tree(tmp_path)
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "webp")
    write_atomically(str(tmp_path / "out" / "sub" / "b.webp"), b"done")
    (tmp_path / "out" / "sub" / ".tmp-1234-c.webp").write_bytes(b"half")
    assert layout.remove_stale_temporaries() == 1
    pending, skipped = layout.plan()
    assert skipped == 1 and [item.relative for item in pending] == ["a.jpg", "sub/deeper/c.webp"]


def test_atomic_write_leaves_only_the_final_file(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "out.png"
    write_atomically(str(target), b"payload")
    assert target.read_bytes() == b"payload"
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]

"""Bulk layout: which inputs are found, where outputs go, what a rerun skips, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve_app.bulk.layout import Layout, LayoutError, is_temporary, read_bytes, write_atomically


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
    (tmp_path / "out" / "sub" / f".partial-{'ab' * 16}").write_bytes(b"half")
    assert layout.remove_stale_temporaries() == 1
    pending, skipped = layout.plan()
    assert skipped == 1 and [item.relative for item in pending] == ["a.jpg", "sub/deeper/c.webp"]


def test_atomic_write_leaves_only_the_final_file(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "out.png"
    write_atomically(str(target), b"payload")
    assert target.read_bytes() == b"payload"
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


def targets(layout: Layout) -> dict[str, str]:
    pending, _ = layout.plan()
    return {item.relative: item.target.rpartition("/out/")[2] for item in pending}


def test_inputs_that_would_share_an_output_each_keep_their_whole_name(tmp_path: Path) -> None:
    for name in ["a.jpg", "a.png", "b.JPG", "B.jpg", "c.jpg", "sub/a.webp"]:
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    # b.JPG and B.jpg: b.png and B.png would be one file where names ignore case (macOS, Windows)
    assert targets(layout) == {"a.jpg": "a.jpg.png", "a.png": "a.png.png", "B.jpg": "B.jpg.png",
                               "b.JPG": "b.JPG.png", "c.jpg": "c.png", "sub/a.webp": "sub/a.png"}
    (tmp_path / "in" / "a.jpg.webp").write_bytes(b"x")  # its own output would be a.jpg's: nothing is overwritten
    with pytest.raises(LayoutError, match="inputs a.jpg, a.jpg.webp would be written to the same output"):
        layout.plan()


def test_output_may_lie_inside_input_but_not_be_it(tmp_path: Path) -> None:
    make_tree(tmp_path)
    write_atomically(str(tmp_path / "in" / "cutouts" / "a.png"), b"done")  # an earlier run's output
    inside = Layout(str(tmp_path / "in"), str(tmp_path / "in" / "cutouts"), "png")
    pending, skipped = inside.plan()  # the earlier output is no input, and a.jpg's output exists
    assert skipped == 1 and [item.relative for item in pending] == ["sub/b.PNG", "sub/deeper/c.webp"]
    with pytest.raises(LayoutError, match="OUTPUT must not be INPUT"):
        Layout(str(tmp_path / "in"), str(tmp_path / "in") + "/", "png").plan()


def test_a_missing_input_is_an_error_and_files_that_are_not_images_are_counted(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="is not a folder"):
        Layout(str(tmp_path / "nope"), str(tmp_path / "out"), "png").plan()
    make_tree(tmp_path)
    (tmp_path / "in" / "scan.jfif").write_bytes(b"x")
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    assert len(layout.inputs()) == 3 and layout.ignored == 3  # notes.txt, .DS_Store, scan.jfif


def test_linked_folders_are_searched_once(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "d.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "linked")
    os.symlink(tmp_path / "in", tmp_path / "in" / "sub" / "loop")  # a link back up: not walked again
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    assert layout.inputs() == ["a.jpg", "linked/d.jpg", "sub/b.PNG", "sub/deeper/c.webp"]


@pytest.mark.parametrize("name", ["y::z.jpg", "n" * 240 + ".jpg", ".tmp-photo.jpg", ".partial-photo.jpg"])
def test_unusual_names_are_read_and_written_as_they_are(tmp_path: Path, name: str) -> None:
    # '::' is no chain of file systems, a long name still fits with its temporary name, and names that look like
    # temporary ones are outputs like any other, which the next run keeps
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(b"photo")
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    [item] = layout.plan()[0]
    assert read_bytes(item.source) == b"photo"
    write_atomically(item.target, b"cut-out")
    assert layout.remove_stale_temporaries() == 0
    assert layout.plan() == ([], 1)
    assert [path.name for path in (tmp_path / "out").iterdir()] == [name.rpartition(".")[0] + ".png"]


def test_temporary_names_are_recognised_exactly() -> None:
    assert is_temporary(".partial-" + "0f" * 16)
    assert not is_temporary(".partial-" + "0f" * 16 + ".png") and not is_temporary(".partial-photo.png")


def test_a_run_with_other_options_is_refused_an_output_folder_made_otherwise(tmp_path: Path) -> None:
    # a rerun skips existing outputs as done: with --only-mask now, they would stay cut-outs without a word
    from serve_app.bulk.layout import job_options
    from serve_app.options import parse_options

    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    cutouts = parse_options(format="png")
    layout.claim_output(job_options(cutouts, "acme/model"))
    layout.claim_output(job_options(cutouts, "acme/model"))  # resuming: the same job
    layout.claim_output(job_options(cutouts, None))  # the client leaving the model to the service
    with pytest.raises(LayoutError, match=r"made with only_mask=False, and this run asks for only_mask=True"):
        layout.claim_output(job_options(parse_options(format="png", only_mask=True), None))
    with pytest.raises(LayoutError, match="model='acme/model'.*model='other/model'"):
        layout.claim_output(job_options(cutouts, "other/model"))

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


def make_inputs(root: Path, names: list[str]) -> Layout:
    for name in names:
        (root / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "in" / name).write_bytes(b"x")
    return Layout(str(root / "in"), str(root / "out"), "png")


def test_inputs_that_would_share_an_output_each_keep_their_whole_name(tmp_path: Path) -> None:
    layout = make_inputs(tmp_path, ["a.jpg", "a.png", "b.JPG", "B.jpg", "c.jpg", "sub/a.webp"])
    chosen = targets(layout)
    assert {name: chosen[name] for name in ["a.jpg", "a.png", "c.jpg", "sub/a.webp"]} == {
        "a.jpg": "a.jpg.png", "a.png": "a.png.png", "c.jpg": "c.png", "sub/a.webp": "sub/a.png"}
    # b.JPG and B.jpg: b.png and B.png, b.JPG.png and B.jpg.png would be one file where names ignore case
    assert chosen["b.JPG"].startswith("b.JPG.") and chosen["B.jpg"].startswith("B.jpg.")
    assert chosen["b.JPG"].lower() != chosen["B.jpg"].lower()


@pytest.mark.parametrize("names", [
    ["IMG_1.JPG", "img_1.jpg"],  # their whole names too differ in case alone
    ["Trip/x.jpg", "trip/x.jpg"],
    ["a.jpg", "a.png", "a.jpg.webp"],  # a.jpg's whole name is a.jpg.webp's own output
    ["A.jpg", "a.png/b.jpg"],  # A.png would be the folder a.png where names ignore case
], ids=["case", "folder-case", "whole-name", "file-and-folder"])
def test_no_two_outputs_are_one_file_where_names_ignore_case(tmp_path: Path, names: list[str]) -> None:
    chosen = targets(make_inputs(tmp_path, names))
    folded = [out.lower() for out in chosen.values()]
    folders = {str(parent) for out in folded for parent in Path(out).parents}
    assert sorted(chosen) == sorted(names)
    assert len(set(folded)) == len(names) and not folders & set(folded)


def test_an_output_named_like_another_outputs_folder_is_written_and_kept(tmp_path: Path) -> None:
    # a.jpg's a.png would be the folder that holds a.png/b.jpg's output
    layout = make_inputs(tmp_path, ["a.jpg", "a.png/b.jpg"])
    pending, _ = layout.plan()
    for item in sorted(pending, key=lambda item: item.relative, reverse=True):  # the folder first
        write_atomically(item.target, b"cut-out")
    assert all(Path(item.target.removeprefix("file://")).read_bytes() == b"cut-out" for item in pending)
    assert layout.plan() == ([], 2)


def test_a_file_is_never_renamed_into_a_folder_of_its_name(tmp_path: Path) -> None:
    (tmp_path / "a.png").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomically(str(tmp_path / "a.png"), b"cut-out")
    assert list((tmp_path / "a.png").iterdir()) == [] and list(tmp_path.iterdir()) == [tmp_path / "a.png"]


def test_output_may_lie_inside_input_but_not_be_it(tmp_path: Path) -> None:
    make_tree(tmp_path)
    write_atomically(str(tmp_path / "in" / "cutouts" / "a.png"), b"done")  # an earlier run's output
    inside = Layout(str(tmp_path / "in"), str(tmp_path / "in" / "cutouts"), "png")
    pending, skipped = inside.plan()  # the earlier output is no input, and a.jpg's output exists
    assert skipped == 1 and [item.relative for item in pending] == ["sub/b.PNG", "sub/deeper/c.webp"]
    with pytest.raises(LayoutError, match="OUTPUT must not be INPUT"):
        Layout(str(tmp_path / "in"), str(tmp_path / "in") + "/", "png").plan()


@pytest.mark.parametrize("output", ["in/sub/../cutouts", "link/cutouts", "in/linked-cutouts"])
def test_output_inside_input_by_another_name_is_not_read_as_input(tmp_path: Path, output: str) -> None:
    make_tree(tmp_path)
    (tmp_path / "in" / "cutouts").mkdir()
    os.symlink(tmp_path / "in", tmp_path / "link")
    os.symlink(tmp_path / "in" / "cutouts", tmp_path / "in" / "linked-cutouts")
    write_atomically(str(tmp_path / output / "a.png"), b"done")  # an earlier run's output
    layout = Layout(str(tmp_path / "in"), str(tmp_path / output), "png")
    assert layout.inputs() == ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp"] and layout.ignored == 2  # not a.png


@pytest.mark.parametrize("output", ["in/sub/..", "link"])
def test_output_may_not_be_input_by_another_name(tmp_path: Path, output: str) -> None:
    make_tree(tmp_path)
    os.symlink(tmp_path / "in", tmp_path / "link")
    with pytest.raises(LayoutError, match="OUTPUT must not be INPUT"):
        Layout(str(tmp_path / "in"), str(tmp_path / output), "png").plan()


def test_a_missing_input_is_an_error_and_files_that_are_not_images_are_counted(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="is not a folder"):
        Layout(str(tmp_path / "nope"), str(tmp_path / "out"), "png").plan()
    make_tree(tmp_path)
    (tmp_path / "in" / "scan.jfif").write_bytes(b"x")
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    assert len(layout.inputs()) == 3 and layout.ignored == 3  # notes.txt, .DS_Store, scan.jfif


def test_a_pipe_named_like_a_photo_is_no_input_and_a_broken_link_is_one(tmp_path: Path) -> None:
    # reading a named pipe would wait for a writer for ever; a broken link fails as a missing photo does
    make_tree(tmp_path)
    os.mkfifo(tmp_path / "in" / "pipe.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "in" / "sub" / "broken.jpg")
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    assert layout.inputs() == ["a.jpg", "sub/b.PNG", "sub/broken.jpg", "sub/deeper/c.webp"]
    assert layout.ignored == 3  # notes.txt, .DS_Store, the pipe


def test_hidden_files_and_thumbnail_folders_are_not_inputs(tmp_path: Path) -> None:
    # macOS's ._ companions end in .jpg but are no images: as inputs they would fail on every run
    make_tree(tmp_path)
    for relative in ["._a.jpg", "sub/._b.PNG", ".thumbs/t.jpg", "@eaDir/a.jpg/SYNOPHOTO_THUMB_M.jpg"]:
        (tmp_path / "in" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / relative).write_bytes(b"x")
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    assert layout.inputs() == ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp"]
    assert layout.ignored == 4  # notes.txt, .DS_Store and the two ._ files; hidden folders are not searched


def test_linked_folders_are_searched_once(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "d.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "linked")
    os.symlink(tmp_path / "in", tmp_path / "in" / "sub" / "loop")  # a link back up: not walked again
    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    assert layout.inputs() == ["a.jpg", "linked/d.jpg", "sub/b.PNG", "sub/deeper/c.webp"]


@pytest.mark.parametrize("name", ["y::z.jpg", "n" * 240 + ".jpg", "x.partial-photo.jpg"])
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
    with pytest.raises(LayoutError, match=r"made with only_mask=False, and this run asks for only_mask=True"):
        layout.claim_output(job_options(parse_options(format="png", only_mask=True), "acme/model"))
    with pytest.raises(LayoutError, match="model='acme/model'.*model='other/model'"):
        layout.claim_output(job_options(cutouts, "other/model"))
    with pytest.raises(LayoutError, match="model='acme/model', and this run asks for the service's default model"):
        layout.claim_output(job_options(cutouts, None))  # the client leaving the model to the service
    # offline: the model's revision and input size change its masks too
    offline = Layout(str(tmp_path / "in"), str(tmp_path / "offline"), "png")
    offline.claim_output(job_options(cutouts, "acme/model", revision=None, input_size=[1024, 1024]))
    offline.claim_output(job_options(cutouts, "acme/model", revision=None, input_size=(1024, 1024)))
    with pytest.raises(LayoutError, match=r"input_size=\[1024, 1024\], and this run asks for input_size=\[2048"):
        offline.claim_output(job_options(cutouts, "acme/model", revision=None, input_size=[2048, 2048]))
    with pytest.raises(LayoutError, match="revision=None, and this run asks for revision='v2'"):
        offline.claim_output(job_options(cutouts, "acme/model", revision="v2", input_size=[1024, 1024]))


def test_a_run_naming_a_model_is_refused_an_output_folder_made_with_the_services_default(tmp_path: Path) -> None:
    from serve_app.bulk.layout import job_options
    from serve_app.options import parse_options

    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    cutouts = parse_options(format="png")
    layout.claim_output(job_options(cutouts, None))
    layout.claim_output(job_options(cutouts, None))
    with pytest.raises(LayoutError, match="made with the service's default model, and this run asks for model='x'"):
        layout.claim_output(job_options(cutouts, "x"))


def test_a_second_run_on_the_same_output_folder_is_refused(tmp_path: Path) -> None:
    from serve_app.bulk.__main__ import main

    make_tree(tmp_path)
    running = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    temporary = tmp_path / "out" / f".partial-{'ab' * 16}"  # the running one's output being written
    with running.exclusive():
        temporary.write_bytes(b"half")
        with pytest.raises(SystemExit, match="error: another run is writing to OUTPUT .*out: wait for it to end"):
            main(["client", str(tmp_path / "in"), str(tmp_path / "out"), "--url", "http://127.0.0.1:1"])
        assert temporary.exists()
    with running.exclusive():  # free again once the first run ends
        pass


def test_a_temporary_removed_by_someone_else_first_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(str(tmp_path / "in"), str(tmp_path), "png")
    listed = [f"{tmp_path}/.partial-{'ab' * 16}"]  # listed, then gone before it is removed
    monkeypatch.setattr(layout.output_fs, "find", lambda root: listed)
    assert layout.remove_stale_temporaries() == 0


def test_a_durable_write_reaches_the_disk_before_it_is_renamed(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # else a power loss can leave the output's name on an empty file, which the next run skips as done
    events: list[str] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(os.readlink(f"/proc/self/fd/{fd}")), fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda source, target: (events.append(f"rename {source}"),
                                                               replace(source, target)))
    write_atomically(str(tmp_path / "a.png"), b"cut-out", durable=True)
    [synced, renamed] = events
    assert is_temporary(Path(synced).name) and renamed == f"rename {synced}"
    assert (tmp_path / "a.png").read_bytes() == b"cut-out"


def run_all(layout: Layout) -> list[str]:
    """One run as the bulk modes make it: plan, record the shared names, write every pending output (its input's
    name as its content); the inputs processed."""
    pending, _ = layout.plan()
    layout.record_shared_names()
    for item in pending:
        write_atomically(item.target, item.relative.encode())
    return [item.relative for item in pending]


def contents(root: Path) -> dict[str, str]:
    return {path.relative_to(root / "out").as_posix(): path.read_text() for path in (root / "out").rglob("*.png")}


def test_a_resume_keeps_outputs_whose_name_another_input_could_have(tmp_path: Path) -> None:
    # b.jpg.jpg's output b.jpg.png is also the name b.jpg's would have beside a b.png input
    layout = make_inputs(tmp_path, ["b.jpg", "b.jpg.jpg"])
    pending, _ = layout.plan()
    layout.record_shared_names()
    write_atomically(next(item.target for item in pending if item.relative == "b.jpg.jpg"), b"b.jpg.jpg")
    assert run_all(make_inputs(tmp_path, [])) == ["b.jpg"]  # the interrupted run resumed: only b.jpg is left
    assert contents(tmp_path) == {"b.png": "b.jpg", "b.jpg.png": "b.jpg.jpg"}
    assert make_inputs(tmp_path, []).plan() == ([], 2)


@pytest.mark.parametrize(("first", "added", "removed", "unknown"), [
    (["a.jpg"], ["a.png"], [], "a.png"),  # a.jpg's a.png would now be a.jpg.png, and a.png's a.png.png
    (["a.jpg", "a.jpg.jpg"], ["a.png", "a.jpg.png"], [], "a.jpg.png, a.png"),  # a.jpg.png would now be another's
    (["a.jpg", "a.png"], [], ["a.png"], "a.jpg.png"),  # a.jpg's output would now be a.png
    (["b.jpg.jpg"], ["b.jpg"], [], "b.jpg.png"),  # made before b.jpg was an input: made for either
], ids=["added", "added-taking-a-name", "removed", "added-sharing-a-name"])
def test_outputs_that_inputs_added_or_removed_would_rename_stop_the_run(
        tmp_path: Path, first: list[str], added: list[str], removed: list[str], unknown: str) -> None:
    run_all(make_inputs(tmp_path, first))
    made = contents(tmp_path)
    layout = make_inputs(tmp_path, added)
    for name in removed:
        (tmp_path / "in" / name).unlink()
    with pytest.raises(LayoutError, match=f"OUTPUT holds {unknown.count(',') + 1} file.*\\({unknown}\\)"):
        layout.plan()
    assert contents(tmp_path) == made  # nothing written
    for name in unknown.split(", "):  # moved out of OUTPUT, as the error says: every input is made anew
        (tmp_path / "out" / name).unlink()
    run_all(layout)
    made = contents(tmp_path)
    assert all(made[out] == relative for relative, out in layout.outputs_for(layout.inputs()).items())
    assert layout.plan() == ([], len(layout.inputs()))


def test_outputs_of_deleted_inputs_and_other_files_do_not_stop_the_run(tmp_path: Path) -> None:
    run_all(make_inputs(tmp_path, ["a.jpg", "c.jpg", "sub/d.webp"]))
    (tmp_path / "in" / "c.jpg").unlink()
    (tmp_path / "out" / "notes.png").write_bytes(b"a user's own file")
    assert run_all(make_inputs(tmp_path, ["e.jpg"])) == ["e.jpg"]


def test_a_name_recorded_for_another_input_stops_the_run_even_where_no_other_input_claims_it(tmp_path: Path) -> None:
    # a.jpg.png was made for a.jpg.jpg; with that input gone, a.jpg alone could have the name (beside an a.png)
    run_all(make_inputs(tmp_path, ["a.jpg", "a.jpg.jpg"]))
    (tmp_path / "in" / "a.jpg.jpg").unlink()
    layout = make_inputs(tmp_path, ["a.png"])
    with pytest.raises(LayoutError, match=r"\(a.jpg.png, a.png\)"):
        layout.plan()
    (tmp_path / "out" / "a.png").unlink()  # one of the two moved out
    with pytest.raises(LayoutError, match=r"\(a.jpg.png\)"):  # not a.jpg skipped, with a.jpg.jpg's cut-out
        layout.plan()


def test_an_output_folder_from_before_names_were_recorded_resumes_as_its_inputs_name_it(tmp_path: Path) -> None:
    layout = make_inputs(tmp_path, ["b.jpg", "b.jpg.jpg"])
    run_all(layout)
    (tmp_path / "out" / "_names.json").unlink()
    assert layout.plan() == ([], 2)
    layout.record_shared_names()  # recorded from now on
    assert "b.jpg.png" in (tmp_path / "out" / "_names.json").read_text()


def test_a_broken_names_record_is_named(tmp_path: Path) -> None:
    layout = make_inputs(tmp_path, ["a.jpg"])
    run_all(layout)
    (tmp_path / "out" / "_names.json").write_text("{not json")
    with pytest.raises(LayoutError, match="_names.json is not valid JSON"):
        layout.plan()


def test_settings_an_earlier_version_did_not_record_are_filled_in(tmp_path: Path) -> None:
    import json

    from serve_app.bulk.layout import job_options
    from serve_app.options import parse_options

    layout = Layout(str(tmp_path / "in"), str(tmp_path / "out"), "png")
    cutouts = parse_options(format="png")
    layout.claim_output(job_options(cutouts, "acme/model"))  # as the offline tool recorded it before
    layout.claim_output(job_options(cutouts, "acme/model", revision=None, input_size=[1024, 1024]))
    assert json.loads((tmp_path / "out" / "_job.json").read_text())["input_size"] == [1024, 1024]
    with pytest.raises(LayoutError, match="input_size"):
        layout.claim_output(job_options(cutouts, "acme/model", revision=None, input_size=[2048, 2048]))

"""What both bulk modes share: which inputs exist, where each output goes, atomic writes and locking.

INPUT and OUTPUT are any path fsspec understands (a local folder, s3://..., gs://...). OUTPUT mirrors INPUT's
relative paths with the output format's extension; where an output would be another's, or a folder of another's, also
where names ignore case (a.jpg and a.png; A.jpg and a.jpg; a.jpg and a.png/b.jpg), it keeps its whole name instead
(a.jpg.png, a.png.png), so that no output overwrites another. An output that exists is complete: on a file system
every output is written under a temporary name first and renamed, and on an object store (which has no atomic
rename) in one PUT, which makes the object visible whole or not at all. A rerun therefore skips existing outputs,
and temporary files left by a killed run are removed when the next run starts; a rerun that finds a file it cannot
tell is its input's output (inputs sharing a name were added or removed: Layout._check_unmoved) stops instead. One
run per OUTPUT at a time: a local OUTPUT is locked for the run. OUTPUT may lie inside INPUT (its files are not
inputs) but may not be INPUT. Hidden files and folders (names starting with '.') and Synology's @eaDir folders are
not inputs.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

import fsspec
from fsspec.core import split_protocol, strip_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem

from serve_app.options import OutputOptions

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif",
                            ".avif"})
# Folders that hold a NAS's thumbnails of the photos beside them, not photos: never searched.
SKIPPED_FOLDERS = frozenset({"@eaDir"})
# A temporary file's name: short whatever the output's (a long name still fits the file system's limit) and never
# an output's, which always ends in the format's extension.
_TEMPORARY = re.compile(r"\.partial-[0-9a-f]{32}")
_DIGESTED = re.compile(r"(.*)\.[0-9a-f]{8}")  # an output name's stem with _digested's digest
# Stores whose objects appear whole on one PUT, and whose "rename" is a copy: no temporary name there.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"})
FAILURES_NAME = "_failures.jsonl"
SUMMARY_NAME = "_summary.json"
JOB_NAME = "_job.json"
NAMES_NAME = "_names.json"  # output names more than one input could have, with the input each was made for
LOCK_NAME = ".lock"  # locked by the run writing to a local OUTPUT


def job_options(options: OutputOptions, model: str | None, **model_settings: object) -> dict:
    """What makes one run's outputs differ from another's: the output options, and the model (a served model's name
    or a model id; None: the service's default, unknown here) with `model_settings` that change its masks (offline:
    the revision and the input size)."""
    return {"format": options.format, "only_mask": options.only_mask, "bg_color": options.bg_color, "model": model,
            **model_settings}


def is_temporary(name: str) -> bool:
    """Whether a file name under OUTPUT is an output still being written (or left by a killed run)."""
    return _TEMPORARY.fullmatch(name) is not None


def _hidden(name: str) -> bool:
    """Whether a file or folder under INPUT is hidden, so never a photo of its own: macOS's ._ companions (which end
    in the photo's extension) and .DS_Store, the caches of editors and viewers."""
    return name.startswith(".")


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # through a link, to what it names
    except OSError:
        return False


def _special_file(entry: os.DirEntry) -> bool:
    """Whether a local entry is there but no regular file (a named pipe, a socket, a device): a read of it could
    wait for ever. A link leads to what it names; a broken one is no special file: its read fails, as a missing
    photo's does. The file's type comes from the folder's listing where it can (no stat a file)."""
    try:
        if entry.is_file():
            return False
        return not entry.is_symlink() or os.path.exists(entry.path)
    except OSError:
        return False


def _skipped_folder(name: str) -> bool:
    return _hidden(name) or name in SKIPPED_FOLDERS


def _folded(path: str) -> str:
    """The path as a file system that ignores case (and Unicode normalisation, as macOS's does) sees it."""
    return unicodedata.normalize("NFC", path).casefold()


def _by_folded(relatives: Iterable[str], without_extension: bool = False) -> dict[str, list[str]]:
    """The paths (each with an extension) by their folded form, or that less the extension; several where they differ
    in case or extension alone."""
    found: defaultdict[str, list[str]] = defaultdict(list)
    for relative in relatives:
        found[_folded(relative[: relative.rfind(".")] if without_extension else relative)].append(relative)
    return found


def _folders(paths: Iterable[str]) -> set[str]:
    """Every folder the paths lie in, and the folders above those."""
    folders: set[str] = set()
    for path in paths:
        slash = path.rfind("/")
        while slash > 0 and path[:slash] not in folders:
            folders.add(path[:slash])
            slash = path.rfind("/", 0, slash)
    return folders


class LayoutError(ValueError):
    """INPUT or OUTPUT cannot be used as given; the message says why."""


class RunStopped(Exception):
    """No more images can be finished (the service cannot be used, or OUTPUT cannot be written): the run stops, and
    the images not done stay pending for the next run, instead of each failing in turn."""


# OUTPUT full (or over its quota), or mounted read-only: every later image would fail the same way.
_OUTPUT_UNUSABLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def output_unusable(error: OSError) -> bool:
    """Whether a failure to write an output means that no output can be written now."""
    return error.errno in _OUTPUT_UNUSABLE


def stopped_by_output(reason: str) -> RunStopped:
    """The run's stop on an output that could not be written for `reason` (output_unusable's)."""
    return RunStopped(f"OUTPUT cannot be written ({reason}); the images not done are left for the next run: free "
                      "some space (or make OUTPUT writable) and run the same command again")


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
        # Files under INPUT that inputs() passed over: hidden, not images by their extension, or special files.
        self.ignored = 0
        self._special_files = 0  # local named pipes, sockets and devices, which the listing leaves out
        self._shared: dict[str, str] = {}  # plan's output names that more than one input could have: their inputs
        self._recorded: dict[str, str] = {}  # OUTPUT/_names.json as plan found it
        self._existing: set[str] = set()  # OUTPUT's files as plan found them (folded names)

    def inputs(self) -> list[str]:
        """Relative paths of every image under INPUT, recursively (through linked folders too), sorted; `ignored`
        counts the other files. Neither OUTPUT's files, when it lies inside INPUT, nor those in hidden or skipped
        folders are looked at."""
        if not self.input_fs.isdir(self.input_root):
            raise LayoutError(f"INPUT {self.input_fs.unstrip_protocol(self.input_root)} is not a folder")
        roots = self._roots_compared()
        if roots is not None and roots[0] == roots[1]:
            raise LayoutError("OUTPUT must not be INPUT: the outputs would mix with the photos; name another folder")
        relative = [path[len(self.input_root) :].lstrip("/") for path in self._input_files()]
        images = sorted(rel for rel in relative if not _hidden(PurePosixPath(rel).name)
                        and PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES)
        self.ignored = len(relative) - len(images) + self._special_files
        return images

    def _roots_compared(self) -> tuple[str, str] | None:
        """INPUT's and OUTPUT's roots as comparable paths (local ones resolved: photos/x/../out, or a link, name the
        folder they lead to), or None when they lie on different file systems."""
        if type(self.input_fs) is not type(self.output_fs):
            return None
        if isinstance(self.input_fs, LocalFileSystem):
            return os.path.realpath(self.input_root), os.path.realpath(self.output_root)
        return self.input_root, self.output_root

    def _input_files(self) -> list[str]:
        if isinstance(self.input_fs, LocalFileSystem):
            return self._local_input_files()
        roots = self._roots_compared()
        output = roots[1] + "/" if roots is not None else None
        return [path for path in self.input_fs.find(self.input_root)
                if not (output is not None and path.startswith(output)) and not any(
                    _skipped_folder(name) for name in path[len(self.input_root) :].split("/")[1:-1])]

    def _local_input_files(self) -> list[str]:
        # fsspec's find lists a linked folder as one entry and does not go into it; this walk follows links, and a
        # link back to a folder already walked is skipped, as is OUTPUT, by whatever name the walk reaches it. A
        # folder that cannot be listed is passed over, as os.walk does.
        output = os.path.realpath(self.output_root) if isinstance(self.output_fs, LocalFileSystem) else None
        found, walked, folders = [], set(), [self.input_root]
        self._special_files = 0
        while folders:
            folder = folders.pop()
            real = os.path.realpath(folder)
            if real in walked or real == output:
                continue
            walked.add(real)
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        path = f"{folder}/{entry.name}".replace(os.sep, "/")
                        if _is_folder(entry):
                            if not _skipped_folder(entry.name):
                                folders.append(path)
                        elif _special_file(entry):
                            self._special_files += 1
                        else:
                            found.append(path)
            except OSError:
                continue
        return found

    def existing_outputs(self) -> set[str]:
        if not self.output_fs.exists(self.output_root):
            return set()
        return {path[len(self.output_root) :].lstrip("/") for path in self.output_fs.find(self.output_root)}

    def output_relative(self, relative: str) -> str:
        return str(PurePosixPath(relative).with_suffix(self.suffix))

    def outputs_for(self, inputs: list[str]) -> dict[str, str]:
        """Each input's output path under OUTPUT: the input's with the format's extension; where that would be
        another input's output or one of its folders, also where names ignore case (a.jpg and a.png; A.jpg and
        a.jpg; a.jpg and a.png/b.jpg), the whole input name with the extension added (a.jpg.png); where that still
        would (IMG_1.JPG and img_1.jpg), the whole name and a digest of the input's path (IMG_1.JPG.6e7326ed.png)."""
        names = (self.output_relative, lambda relative: relative + self.suffix, self._digested)
        level = dict.fromkeys(inputs, 0)
        chosen = {relative: self.output_relative(relative) for relative in inputs}
        folded = {relative: _folded(out) for relative, out in chosen.items()}
        owners: defaultdict[str, list[str]] = defaultdict(list)
        for relative, out in folded.items():
            owners[out].append(relative)
        # Outputs lie in the folders their inputs do, whatever their names: these never change.
        folders = _folders(folded.values())
        suspects: Iterable[str] = inputs
        while True:
            clashing = sorted({other for relative in suspects if len(owners[folded[relative]]) > 1
                               for other in owners[folded[relative]]}
                              | {relative for relative in suspects if folded[relative] in folders})
            if not clashing:
                return chosen
            movable = [relative for relative in clashing if level[relative] < len(names) - 1]
            if not movable:
                raise LayoutError(f"inputs {', '.join(clashing[:6])} would be written to the same output; rename one")
            for relative in movable:
                owners[folded[relative]].remove(relative)
                level[relative] += 1
                chosen[relative] = names[level[relative]](relative)
                folded[relative] = _folded(chosen[relative])
                owners[folded[relative]].append(relative)
            suspects = clashing

    def _digested(self, relative: str) -> str:
        digest = hashlib.blake2s(relative.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
        return f"{relative}.{digest}{self.suffix}"

    def plan(self) -> tuple[list[WorkItem], int]:
        """Work still to do, and how many inputs are skipped because their output exists; LayoutError where OUTPUT
        holds an output whose input is not known (_check_unmoved)."""
        done = self.existing_outputs()
        chosen = self.outputs_for(self.inputs())
        self._check_unmoved(chosen, done)
        pending, skipped = [], 0
        for relative, out in chosen.items():
            if out in done:
                skipped += 1
            else:
                pending.append(WorkItem(self.input_fs.unstrip_protocol(f"{self.input_root}/{relative}"), relative,
                                        self.output_fs.unstrip_protocol(f"{self.output_root}/{out}")))
        return pending, skipped

    def _check_unmoved(self, chosen: dict[str, str], done: set[str]) -> None:
        """LayoutError if OUTPUT holds a file that this run cannot tell is its input's output.

        An output's name depends on the inputs that share its name (outputs_for), so inputs added or removed since an
        earlier run can move an input's output to another name: this run would then make that input again, or skip
        another input whose output now has the earlier file's name and holds the earlier input's cut-out. So a file
        named as any current input's output could be is checked: it must be the output of the input that now has
        that name; where OUTPUT/_names.json names the input it was made for, that input; and where that name could
        also be another current input's (a.jpg.png: the output of a.jpg where a.png is an input too, and of
        a.jpg.jpg), _names.json must name it. Every run records the names it makes that several inputs could have as
        it starts (record_shared_names), before it writes any of them; an OUTPUT without _names.json (made before it
        was kept) is taken as its current inputs name it."""
        inputs = _by_folded(chosen)
        stems = _by_folded(chosen, without_extension=True)
        owner = {_folded(out): relative for relative, out in chosen.items()}
        recorded = self._recorded_names()
        self._existing = {_folded(path) for path in done}
        unknown = []
        for path in done:
            folded = _folded(path)
            claimants = self._claimants(folded, inputs, stems)
            if not claimants:  # no current input's name: a deleted input's output, a file of the user's
                continue
            made_for = owner.get(folded)
            if made_for is None or (recorded is not None and recorded.get(folded, made_for) != made_for):
                unknown.append(path)
            elif recorded is not None and folded not in recorded and claimants != {made_for}:
                unknown.append(path)  # made when no other input could have its name: for which, not known
        unknown.sort()
        self._recorded = recorded or {}
        if unknown:
            raise LayoutError(
                f"OUTPUT holds {len(unknown)} file(s) ({', '.join(unknown[:6])}) named as an input's output could be, "
                "but which input each was made from is not known: inputs that share a name were added or removed since "
                "an earlier run, which moves outputs to other names. Move those files out of OUTPUT (this run then "
                "makes their inputs' outputs again), or use another OUTPUT")
        self._shared = {name: relative for name, relative in owner.items()
                        if self._claimants(name, inputs, stems) != {relative}}

    def _claimants(self, folded: str, inputs: dict[str, list[str]], stems: dict[str, list[str]]) -> set[str]:
        """The inputs whose output could be named `folded` (any of the names outputs_for tries), found from the name."""
        if not folded.endswith(self.suffix):
            return set()
        stem = folded[: -len(self.suffix)]
        found = {*inputs.get(stem, ()), *stems.get(stem, ())}  # the whole name's level; the extension replaced
        digested = _DIGESTED.fullmatch(stem)
        if digested:
            found.update(relative for relative in inputs.get(digested[1], ())
                         if _folded(self._digested(relative)) == folded)
        return found

    def _recorded_names(self) -> dict[str, str] | None:
        """OUTPUT/_names.json's names and inputs; None where OUTPUT has none."""
        path = f"{self.output_root}/{NAMES_NAME}"
        if not self.output_fs.exists(path):
            return None
        try:
            recorded = json.loads(self.output_fs.cat_file(path))
        except (ValueError, UnicodeDecodeError) as error:
            raise LayoutError(f"OUTPUT/{NAMES_NAME} is not valid JSON ({error}): it names the input of outputs that "
                              "several inputs could have; restore it, or use another OUTPUT") from None
        if not isinstance(recorded, dict):
            raise LayoutError(f"OUTPUT/{NAMES_NAME} is not the map of names to inputs this tool writes")
        return recorded

    def record_shared_names(self) -> None:
        """Write OUTPUT/_names.json: for each output name that more than one input could have, the input this run
        makes it for, and the earlier runs' entries whose files are still there (plan's _check_unmoved reads it in
        the next run). Called once OUTPUT is this run's, before any output is written."""
        kept = {name: relative for name, relative in self._recorded.items() if name in self._existing}
        write_atomically(self.output_fs.unstrip_protocol(f"{self.output_root}/{NAMES_NAME}"),
                         (json.dumps({**kept, **self._shared}, indent=0, sort_keys=True) + "\n").encode())

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold a local OUTPUT for the run (a lock on OUTPUT/.lock, let go when the process ends however it ends);
        LayoutError while another run holds it, whose temporary files this run would delete and whose summary it
        would overwrite. Object stores have no such lock: one run per OUTPUT at a time is the rule there."""
        if not isinstance(self.output_fs, LocalFileSystem):
            yield
            return
        os.makedirs(self.output_root, exist_ok=True)
        with open(f"{self.output_root}/{LOCK_NAME}", "ab") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LayoutError(f"another run is writing to OUTPUT {self.output_root}: wait for it to end, or use "
                                  "another OUTPUT") from None
            yield

    def claim_output(self, job: dict) -> None:
        """Record in OUTPUT/_job.json what its outputs are made with (`job`: every option that changes an output),
        or LayoutError if OUTPUT already holds outputs made otherwise: a rerun skips every existing output as done,
        so a changed option would leave them as they were without a word."""
        job = json.loads(json.dumps(job))  # as the file holds it (tuples as lists)
        path = f"{self.output_root}/{JOB_NAME}"
        if self.output_fs.exists(path):
            earlier = json.loads(self.output_fs.cat_file(path))
            # a model left out (the client's, left to the service's default) is one setting like any other; a setting
            # the earlier run did not record (a version that did not) is filled in
            changed = sorted(key for key in earlier if earlier.get(key) != job.get(key))
            if changed:
                was = ", ".join(_setting(key, earlier.get(key)) for key in changed)
                now = ", ".join(_setting(key, job.get(key)) for key in changed)
                raise LayoutError(f"OUTPUT holds outputs made with {was}, and this run asks for {now}: use another "
                                  "OUTPUT, or the same options to resume")
            if set(job) <= set(earlier):
                return
        write_atomically(self.output_fs.unstrip_protocol(path), (json.dumps(job, indent=2) + "\n").encode())

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed run left behind; returns how many."""
        if not self.output_fs.exists(self.output_root):
            return 0
        removed = 0
        for path in self.output_fs.find(self.output_root):
            if is_temporary(PurePosixPath(path).name):
                try:
                    self.output_fs.rm_file(path)
                    removed += 1
                except FileNotFoundError:  # renamed or removed since it was listed
                    continue
        return removed

    def start_notes(self, removed: int) -> list[str]:
        """What a run says as it starts, besides its progress: the temporary files it removed (`removed`) and the
        files under INPUT it passes over."""
        notes = [f"removed {removed} temporary files left by an earlier run"] if removed else []
        if self.ignored:
            notes.append(f"passed over {self.ignored} files under INPUT that are hidden or not images by their "
                         "extension")
        return notes


def _setting(key: str, value: object) -> str:
    return "the service's default model" if key == "model" and value is None else f"{key}={value!r}"


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return any(protocol in OBJECT_STORES for protocol in protocols)


def file_url(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system and path of one file's URL, taken literally: fsspec.open and url_to_fs read '::' in a file
    name as a chain of file systems."""
    protocol, _ = split_protocol(url)
    return fsspec.filesystem(protocol or "file"), strip_protocol(url)


def write_atomically(target: str, data: bytes, *, durable: bool = False) -> None:
    """Write so that a crash never leaves half a file: on an object store in one PUT, elsewhere under a temporary
    name in the same folder, then renamed. A local rename never lands inside a folder of the target's name (an
    OSError instead). `durable`: a local file reaches the disk before its rename, so that a power loss leaves it
    whole or absent, never empty under its name."""
    fs, path = file_url(target)
    if is_object_store(fs):
        fs.pipe_file(path, data)
        return
    parent = str(PurePosixPath(path).parent)
    fs.makedirs(parent, exist_ok=True)
    temporary = f"{parent}/.partial-{uuid.uuid4().hex}"
    try:
        if isinstance(fs, LocalFileSystem):
            _write_local(temporary, path, data, durable=durable)
        else:
            fs.pipe_file(temporary, data)
            fs.mv(temporary, path)
    except BaseException:
        if fs.exists(temporary):
            fs.rm_file(temporary)
        raise


def _write_local(temporary: str, path: str, data: bytes, *, durable: bool) -> None:
    with open(temporary, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            # The folder is not synced: a rename lost to a power loss leaves no output, which the next run makes.
            os.fsync(file.fileno())
    os.replace(temporary, path)  # unlike a move, fails where `path` is a folder


def read_bytes(source: str) -> bytes:
    fs, path = file_url(source)
    return fs.cat_file(path)

"""The packages a model's remote code imports, checked before anything slow: one line names what is missing.

BiRefNet's and RMBG-2.0's modeling files import timm, kornia and einops at module level. Without them
`from_pretrained(..., trust_remote_code=True)` ends in an ImportError from deep inside transformers; this check
reads only `config.json` and the modeling files (a few kB from the Hub, or nothing from a local directory) and
says which packages to install, and how, before any weights are read.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

# Import names whose distribution on the package index has another name.
DISTRIBUTION_NAMES = {"PIL": "pillow", "cv2": "opencv-python-headless", "sklearn": "scikit-learn",
                      "skimage": "scikit-image", "yaml": "pyyaml"}


class ModelCodeError(RuntimeError):
    """A model's remote code cannot be read or cannot run here; the message is one line a user can act on."""


# What a model directory holds its weights in, one of (as from_pretrained looks for them).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def looks_local(model_id: str) -> bool:
    """Whether `model_id` is written as a path (a Hub id is `owner/name`, never starting so)."""
    return model_id.startswith(("/", ".", "~"))


def _fetch(model_id: str, filename: str, revision: str | None) -> Path:
    """A file of a local model directory, or of a Hub repository (downloaded once into the Hugging Face cache)."""
    local = Path(model_id)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise ModelCodeError(f"model directory {model_id} has no {filename}")
        return path
    if looks_local(model_id):  # else the Hub's "Repo id must be in the form ..." would be the only word
        raise ModelCodeError(f"there is no model directory {model_id} (seen from {Path.cwd()})")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model_id, filename, revision=revision))
    except Exception as error:  # noqa: BLE001 - offline, unknown repo or revision, gated: all one message
        at = f" at revision {revision}" if revision else ""
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelCodeError(f"cannot read {filename} of model {model_id}{at}: {reason}") from None


def _module_references(auto_map: dict) -> list[tuple[str | None, str]]:
    """(other repository or None, module name) for every class that `auto_map` points at."""
    references = []
    for value in auto_map.values():
        for reference in value if isinstance(value, list) else [value]:
            if not reference:
                continue
            repository, _, dotted = reference.rpartition("--")  # "owner/repo--module.Class" names another repo
            references.append((repository or None, dotted.rsplit(".", 1)[0]))
    return references


def remote_code_files(model_id: str, revision: str | None = None) -> list[Path]:
    """The modeling and configuration files that the model's `config.json` names, with their relative imports."""
    from transformers.dynamic_module_utils import get_relative_imports

    config_path = _fetch(model_id, "config.json", revision)
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelCodeError(f"{config_path} of model {model_id} is not valid JSON: {error}") from None
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        raise ModelCodeError(f"{config_path} of model {model_id} names no model code (`auto_map`): the service loads "
                             "BiRefNet-class models with the code their repository ships (docs/models.md)")
    pending = [(repository or model_id, module, revision if repository is None else None)
               for repository, module in _module_references(auto_map)]
    files: dict[Path, None] = {}
    while pending:
        repository, module, at = pending.pop()
        path = _fetch(repository, module.replace(".", "/") + ".py", at)
        if path in files:
            continue
        files[path] = None
        pending += [(repository, relative, at) for relative in _parsed(path, get_relative_imports)]
    return list(files)


def _parsed(path: Path, read: Callable[[Path], list[str]]) -> list[str]:
    """What `read` (transformers' import scanners, which parse the file) finds in `path`; ModelCodeError naming the
    line where the file is no valid Python."""
    try:
        return read(path)
    except SyntaxError as error:
        raise ModelCodeError(f"{path} line {error.lineno}: {error.msg}: the model's code is no valid Python") from None


def unimportable_packages(files: list[Path]) -> dict[str, str]:
    """Top-level packages the files import that fail to import here, each with the reason."""
    from transformers.dynamic_module_utils import get_imports

    failed = {}
    for name in sorted({name for path in files for name in _parsed(path, get_imports)}):
        try:
            importlib.import_module(name)
        except ImportError as error:
            failed[name] = "not installed" if isinstance(error, ModuleNotFoundError) and error.name == name \
                else f"{type(error).__name__}: {error}"
        except Exception as error:  # noqa: BLE001 - a package broken against this torch fails in many ways
            failed[name] = f"{type(error).__name__}: {error}"
    return failed


def check_model_code(model_id: str, revision: str | None = None) -> None:
    """Raise ModelCodeError naming what keeps the model from loading here: no such directory, no weights in it, a
    config.json or modeling file that does not parse, every package the model's code needs and this Python cannot
    import."""
    local = Path(model_id)
    if local.is_dir() and not any((local / name).is_file() for name in WEIGHT_FILES):
        raise ModelCodeError(f"model directory {model_id} holds no weights (one of {', '.join(WEIGHT_FILES)})")
    if local.is_dir() and revision:  # from_pretrained reads a directory as it is: nothing would be pinned
        raise ModelCodeError(f"revision {revision} pins a Hub repository's files, and model {model_id} is a local "
                             "directory: leave revision out, or give the repository's id")
    failed = unimportable_packages(remote_code_files(model_id, revision))
    if not failed:
        return
    names = ", ".join(name if reason == "not installed" else f"{name} ({reason.splitlines()[0]})"
                      for name, reason in failed.items())
    install = " ".join(sorted(DISTRIBUTION_NAMES.get(name, name) for name in failed))
    raise ModelCodeError(f"the code of model {model_id} imports packages that cannot be imported here: {names}. "
                         f"Install them with: {sys.executable} -m pip install --upgrade {install}")

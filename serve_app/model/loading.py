"""Turn a model reference into a torch module: Hub id, local directory, or Python import path."""

from __future__ import annotations

import importlib
import logging

import torch

from serve_app.model.remote_code import check_model_code

logger = logging.getLogger(__name__)

IMPORT_PREFIX = "import:"


def load_segmentation_module(model_id: str, revision: str | None = None) -> torch.nn.Module:
    """Load a background-removal network in eval mode, on the CPU.

    `model_id` is whatever `AutoModelForImageSegmentation.from_pretrained` accepts with remote code
    (a Hub repo id such as `ZhengPeng7/BiRefNet` or `briaai/RMBG-2.0`, or a local directory in that layout),
    or `import:package.module:factory` for a callable that builds the module (random-weight benchmarks of
    an architecture that is not packaged for the Hub). Packages the remote code imports are checked first:
    a missing one raises `ModelCodeError` naming it and the install command, before any weights are read.
    """
    if model_id.startswith(IMPORT_PREFIX):
        module = _build_from_import_path(model_id[len(IMPORT_PREFIX) :])
    else:
        from transformers import AutoModelForImageSegmentation

        check_model_code(model_id, revision)
        logger.info("loading %s (revision %s) with trust_remote_code", model_id, revision or "default")
        module = AutoModelForImageSegmentation.from_pretrained(
            model_id, trust_remote_code=True, revision=revision
        )
    return module.eval()


def _build_from_import_path(path: str) -> torch.nn.Module:
    module_name, _, factory_name = path.partition(":")
    if not module_name or not factory_name:
        raise ValueError(f"import path must look like 'package.module:factory', got {path!r}")
    factory = getattr(importlib.import_module(module_name), factory_name)
    built = factory()
    if not isinstance(built, torch.nn.Module):
        raise TypeError(f"{path} returned {type(built).__name__}, not a torch.nn.Module")
    return built

"""Versions of the parts that decide behaviour, for /v1/info and benchmark records."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

import serve_app

_PACKAGES = ("torch", "torchvision", "transformers", "ray", "pillow", "isal", "numpy")


def component_versions() -> dict[str, str]:
    """Read once per process: /readyz and /v1/info report them on every call, and they cannot change."""
    return dict(_read_versions())


@functools.cache
def _read_versions() -> dict[str, str]:
    versions = {"serve_app": serve_app.__version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions

#!/usr/bin/env python3
"""The settings tables of docs/configuration.md, rendered from serve_app/settings.py and configs/prod.yaml.

usage: python scripts/config_reference.py [--write]

Prints the tables, or with --write replaces them in docs/configuration.md (between its `settings` markers).
tests/unit/test_configuration_docs.py fails when the page and the settings module disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve_app.serve_config import app_args, deployment, read_config  # noqa: E402
from serve_app.settings import AppArgs, BatchSettings, IngressSettings, ModelSettings  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"
PROD = ROOT / "configs" / "prod.yaml"
BEGIN = "<!-- settings: written by scripts/config_reference.py --write -->"
END = "<!-- end of settings -->"


def _value(value: object) -> str:
    """A default or a config value as YAML flow style writes it (null, true, [1, 8], {})."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def _prod_sections(prod: dict) -> list[tuple[str, type[BaseModel], dict]]:
    args = app_args(prod)
    return [("args", AppArgs, args),
            ("args.model (and each of args.models)", ModelSettings, args.get("model", {})),
            ("args.ingress", IngressSettings, args.get("ingress", {})),
            ("deployments[BackgroundRemover].user_config", BatchSettings,
             deployment(prod, "BackgroundRemover").get("user_config", {}))]


def render(prod: dict | None = None) -> str:
    """Markdown: per section, each key's default, its value in prod.yaml where it sets one, and its description."""
    prod = prod if prod is not None else read_config(PROD)
    parts = []
    for title, model, configured in _prod_sections(prod):
        parts += [f"### `{title}`", "", "| key | default | `prod.yaml` | what it does |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            if model is AppArgs and name == "ingress":
                continue  # its own table
            default = field.default_factory() if field.default_factory is not None else field.default
            shipped = ""
            if name in configured:  # a model's keys have a table of their own
                shipped = "below" if name in ("model", "models") else f"`{_value(configured[name])}`"
            description = (field.description or "").replace("|", "\\|")
            parts.append(f"| `{name}` | `{_value(default)}` | {shipped} | {description} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _between_markers(text: str) -> tuple[int, int]:
    return text.index(BEGIN) + len(BEGIN), text.index(END)


def page_tables(text: str) -> str:
    """The part of the page between the markers."""
    start, end = _between_markers(text)
    return text[start:end].strip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the tables in {PAGE.relative_to(ROOT)}")
    args = parser.parse_args()
    tables = render()
    if not args.write:
        print(tables, end="")
        return
    text = PAGE.read_text()
    start, end = _between_markers(text)
    PAGE.write_text(f"{text[:start]}\n\n{tables}\n{text[end:]}")


if __name__ == "__main__":
    main()

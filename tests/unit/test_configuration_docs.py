"""docs/configuration.md lists every setting with the defaults and descriptions of serve_app/settings.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from serve_app.settings import BatchSettings, IngressSettings, ModelSettings, parse_app_args

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
config_reference = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(config_reference)
PAGE = (ROOT / "docs" / "configuration.md").read_text()


def test_the_page_has_the_tables_the_settings_module_gives() -> None:
    assert config_reference.page_tables(PAGE) == config_reference.render(), \
        "docs/configuration.md is out of step with serve_app/settings.py: run scripts/config_reference.py --write"


@pytest.mark.parametrize("model", [ModelSettings, IngressSettings, BatchSettings])
def test_every_key_is_a_row_of_the_page(model: type) -> None:
    rows = {line.split("|")[1].strip().strip("`") for line in config_reference.page_tables(PAGE).splitlines()
            if line.startswith("| `")}
    assert set(model.model_fields) <= rows


def test_a_changed_default_shows_on_the_rendered_page() -> None:
    prod = yaml.safe_load((ROOT / "configs" / "prod.yaml").read_text())
    prod["applications"][0]["args"]["ingress"]["png_threads"] = 3
    rendered = config_reference.render(prod)
    assert rendered != config_reference.page_tables(PAGE)
    assert "| `png_threads` | `8` | `3` |" in rendered


def yaml_examples() -> list[tuple[str, str]]:
    """Every ```yaml block of the docs and the README that holds an application's `args:`."""
    blocks = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in page.read_text().split("```yaml\n")[1:]:
            text = block.split("```", 1)[0]
            if text.lstrip().startswith("args:"):
                blocks.append((page.name, text))
    return blocks


@pytest.mark.parametrize(("page", "text"), yaml_examples(), ids=lambda value: value if value.endswith(".md") else "")
def test_the_docs_config_examples_start(page: str, text: str) -> None:
    # Copied into a config as they stand, the examples must pass the checks a start runs.
    parse_app_args(yaml.safe_load(text)["args"])


def test_the_docs_have_config_examples_to_check() -> None:
    assert any(page == "models.md" for page, _ in yaml_examples())

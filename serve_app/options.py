"""Output options shared by every route and the bulk tool: format, only_mask, bg_color."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from serve_app.errors import InvalidOption
from serve_app.imaging import MEDIA_TYPES, OutputFormat, parse_bg_color

OPTION_NAMES = ("format", "only_mask", "bg_color")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class OutputOptions:
    format: OutputFormat = "png"
    only_mask: bool = False
    bg_color: tuple[int, int, int] | None = None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


def parse_flag(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidOption(f"{name} must be true or false, got {value!r}")


def parse_options(format: str = "png", only_mask: str | bool = False, bg_color: str | None = None) -> OutputOptions:
    """Validate raw option values (query strings or CLI flags) into OutputOptions, or InvalidOption (422)."""
    fmt = format.strip().lower()
    if fmt not in MEDIA_TYPES:
        raise InvalidOption(f"format must be one of {', '.join(MEDIA_TYPES)}, got {format!r}")
    mask_only = parse_flag("only_mask", only_mask)
    color = parse_bg_color(bg_color)
    if mask_only and color is not None:
        raise InvalidOption("only_mask and bg_color cannot be combined: a mask has no background")
    return OutputOptions(format=fmt, only_mask=mask_only, bg_color=color)  # type: ignore[arg-type]


def reject_unknown(names: Iterable[str], allowed: Iterable[str]) -> None:
    """Unknown options are errors, so that a typo (`only_mask` as `onlymask`) is not silently ignored."""
    allowed_set = set(allowed)
    unknown = sorted(set(names) - allowed_set)
    if unknown:
        raise InvalidOption(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed_set))}")

"""Output options of the native API (every route) and the bulk tool: format, only_mask, bg_color, and crop,
crop_margin, size, max_size and refine, which take the composing path (serve_app/compose.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from serve_app import compose
from serve_app.errors import InvalidOption
from serve_app.imaging import parse_bg_color

OPTION_NAMES = ("format", "only_mask", "bg_color", "crop", "crop_margin", "size", "max_size", "refine", "model")
FORMATS = ("png", "webp", "jpg")
SIZES = tuple(name for name in compose.SIZE_PRESETS if name not in ("small", "regular", "4k", "auto"))
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class OutputOptions:
    format: str = "png"
    only_mask: bool = False
    bg_color: tuple[int, int, int] | None = None
    crop: bool = False
    crop_margin: compose.Length = compose.Length(0, False)
    size: str = "full"
    max_size: int | None = None  # the answer's longest side, at most
    refine: bool = False  # clean edges: the foreground's own colours in semi-transparent pixels
    model: str | None = None  # the served model's name (None: the default model); the ingress checks it

    @property
    def media_type(self) -> str:
        return compose.MEDIA_TYPES[self.format]

    @property
    def composed(self) -> bool:
        """Whether the answer needs the composing path rather than the plain cut-out's."""
        return (self.format == "jpg" or self.crop or self.size != "full" or self.max_size is not None
                or self.refine)

    def layout(self, *, webp_quality: int = 90, jpeg_quality: int = 90) -> compose.Layout:
        color = None if self.bg_color is None else (*self.bg_color, 255)
        return compose.Layout(format=self.format, channels="alpha" if self.only_mask else "rgba",  # type: ignore[arg-type]
                              bg_color=color, crop=self.crop, crop_margin=self.crop_margin,
                              max_pixels=compose.SIZE_PRESETS[self.size], max_side=self.max_size,
                              webp_quality=webp_quality, jpeg_quality=jpeg_quality)


def parse_flag(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidOption(f"{name} must be true or false, got {value!r}")


def parse_options(format: str = "png", only_mask: str | bool = False, bg_color: str | None = None,
                  crop: str | bool = False, crop_margin: str | None = None, size: str | None = None,
                  max_size: int | str | None = None, refine: str | bool = False,
                  model: str | None = None) -> OutputOptions:
    """Validate raw option values (query strings or CLI flags) into OutputOptions, or InvalidOption (422)."""
    fmt = format.strip().lower()
    if fmt not in FORMATS:
        raise InvalidOption(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    mask_only = parse_flag("only_mask", only_mask)
    color = parse_bg_color(bg_color)
    if mask_only and color is not None:
        raise InvalidOption("only_mask and bg_color cannot be combined: a mask has no background")
    preset = (size or "full").strip().lower()
    if preset not in SIZES:
        raise InvalidOption(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    side = None
    if max_size not in (None, ""):
        try:
            side = int(max_size)  # type: ignore[arg-type]
        except ValueError:
            side = 0
        if side < 1:
            raise InvalidOption(f"max_size must be a whole number of pixels >= 1, got {max_size!r}")
    margin = compose.parse_length("crop_margin", crop_margin or "0", max_px=compose.MAX_MARGIN_PX,
                                  max_percent=compose.MAX_MARGIN_PERCENT)
    return OutputOptions(format=fmt, only_mask=mask_only, bg_color=color, crop=parse_flag("crop", crop),
                         crop_margin=margin, size=preset, max_size=side, refine=parse_flag("refine", refine),
                         model=(model or "").strip() or None)


def reject_unknown(names: Iterable[str], allowed: Iterable[str]) -> None:
    """Unknown options are errors, so that a typo (`only_mask` as `onlymask`) is not silently ignored."""
    allowed_set = set(allowed)
    unknown = sorted(set(names) - allowed_set)
    if unknown:
        raise InvalidOption(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed_set))}")

"""rembg's server API (`rembg s`): `GET /api/remove?url=...` and `POST /api/remove` with multipart `file`.

Parameters as rembg takes them (on POST `model`, `a`, `af`, `ab`, `ae`, `om` and `ppm` are form fields, `bgc` and
`extras` stay in the query); answers are always PNG; errors are FastAPI's `{"detail": ...}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.compose import Layout, post_process_mask, snap_to_trimap
from serve_app.errors import ApiError

# rembg's model names. A name that maps to the model this service runs selects it; any
# other is refused as rembg refuses a name it does not know (422).
MODEL_NAMES = (
    "u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "u2net_custom", "silueta", "isnet-general-use",
    "isnet-anime", "dis_custom", "sam", "birefnet-general", "birefnet-general-lite", "birefnet-portrait",
    "birefnet-dis", "birefnet-hrsod", "birefnet-cod", "birefnet-massive", "bria-rmbg", "ben_custom",
)
# The Hub models behind rembg's BiRefNet and RMBG names.
HUB_MODELS = {
    "ZhengPeng7/BiRefNet": "birefnet-general",
    "ZhengPeng7/BiRefNet_lite": "birefnet-general-lite",
    "ZhengPeng7/BiRefNet-portrait": "birefnet-portrait",
    "ZhengPeng7/BiRefNet-DIS5K": "birefnet-dis",
    "ZhengPeng7/BiRefNet-HRSOD": "birefnet-hrsod",
    "ZhengPeng7/BiRefNet-COD": "birefnet-cod",
    "ZhengPeng7/BiRefNet-massive-TR_DIS5K_TR_TEs": "birefnet-massive",
    "briaai/RMBG-2.0": "bria-rmbg",
}
PATTERN = "^(" + "|".join(MODEL_NAMES) + ")$"
MODEL_HELP = ("rembg's model name; names that map to the served model select it (see /v1/info), others are "
              "refused. Left out: the served model.")
REFINE_HELP = ("rembg's alpha matting: here, clean edges (the subject's own colours estimated on the GPU in "
               "semi-transparent pixels) plus af/ab/ae on the mask.")
AF_HELP = "With a=true: mask values above this become fully opaque (after erosion by ae)."
AB_HELP = "With a=true: mask values below this become fully transparent (after erosion by ae)."
AE_HELP = ("With a=true: the opaque and transparent regions shrink by this many pixels (a square), widening the "
           "soft band where the model's own alpha is kept.")
PPM_HELP = "Smooth the mask: opening (3x3), Gaussian blur (sigma 2), threshold at 127: a hard, clean outline."
BGC_HELP = "Background colour R,G,B,A or R,G,B (0-255 each; alpha 255 when left out) under the cut-out."
EXTRAS_HELP = "rembg's extra model parameters as JSON; none apply to the models served here, only {} is taken."
_FORM_FIELDS = {"model": ("string", MODEL_HELP), "a": ("boolean", REFINE_HELP), "af": ("integer", AF_HELP),
                "ab": ("integer", AB_HELP), "ae": ("integer", AE_HELP), "om": ("boolean", "Only the mask."),
                "ppm": ("boolean", PPM_HELP)}
POST_OPENAPI = {
    "parameters": [{"name": "bgc", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": BGC_HELP},
                   {"name": "extras", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": EXTRAS_HELP}],
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": "The image."},
                       **{name: {"type": kind, "description": text} for name, (kind, text) in _FORM_FIELDS.items()}},
    }}}},
}


def names_for_model(model_id: str) -> tuple[str, ...]:
    """rembg's name for a Hub model id, if it has one."""
    name = HUB_MODELS.get(model_id.rstrip("/"))
    return (name,) if name else ()


class RembgError(ApiError):
    """An error in FastAPI's shape, as rembg's server answers it: `{"detail": <string or list>}`."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None):
        super().__init__(detail if isinstance(detail, str) else json.dumps(detail), status=status,
                         code="rembg", headers=headers)
        self.detail = detail

    def to_body(self) -> dict:
        return {"detail": self.detail}


def field_error(where: str, name: str, kind: str, message: str, value: Any) -> RembgError:
    """A 422 naming one parameter, like FastAPI's validation errors."""
    return RembgError(422, [{"type": kind, "loc": [where, name], "msg": message, "input": value}])


@dataclass(frozen=True)
class RembgRequest:
    model: str | None
    refine: bool
    foreground_threshold: int
    background_threshold: int
    erode_size: int
    only_mask: bool
    post_process_mask: bool
    layout: Layout

    @property
    def shapes_mask(self) -> bool:
        """Whether shape_mask changes the model's mask (else the answer's alpha is the mask as it is)."""
        return self.post_process_mask or self.refine

    def shape_mask(self, mask: np.ndarray) -> np.ndarray:
        """The model's mask as rembg turns it into the answer's alpha: smoothed first (ppm), then snapped to a
        trimap for matting (a; never for the mask alone, om)."""
        if self.post_process_mask:
            mask = post_process_mask(mask)
        if self.refine:
            mask = snap_to_trimap(mask, self.foreground_threshold, self.background_threshold, self.erode_size)
        return mask


def _flag(where: str, name: str, value: str | None) -> bool:
    if value is None or value == "":  # an empty form field is a field left out, as FastAPI reads it
        return False
    lowered = value.strip().lower()
    if lowered in ("1", "true", "t", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "f", "no", "n", "off"):
        return False
    raise field_error(where, name, "bool_parsing", "Input should be a valid boolean, unable to interpret input",
                      value)


def _integer(where: str, name: str, value: str | None, default: int, high: int | None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise field_error(where, name, "int_parsing", "Input should be a valid integer, unable to parse string as "
                                                      "an integer", value) from None
    if number < 0:
        raise field_error(where, name, "greater_than_equal", "Input should be greater than or equal to 0", value)
    if high is not None and number > high:
        raise field_error(where, name, "less_than_equal", f"Input should be less than or equal to {high}", value)
    return number


def _model(where: str, value: str | None, served: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if value not in MODEL_NAMES:
        raise RembgError(422, [{"type": "string_pattern_mismatch", "loc": [where, "model"],
                                "msg": f"String should match pattern '{PATTERN}'", "input": value,
                                "ctx": {"pattern": PATTERN}}])
    if value not in served:
        raise field_error(where, "model", "value_error",
                          f"Value error, model {value!r} is not served here; served: {', '.join(served) or 'none'} "
                          "(or leave model out for the served model)", value)
    return value


def _background(value: str | None) -> tuple[int, int, int, int] | None:
    """rembg's `bgc`: `R,G,B,A` or `R,G,B` (opaque, as Pillow reads three values), each 0-255."""
    if value is None or value == "":
        return None
    parts = value.split(",")
    try:
        channels = tuple(int(part) for part in parts)
    except ValueError:
        channels = ()
    if len(channels) not in (3, 4) or not all(0 <= channel <= 255 for channel in channels):
        raise field_error("query", "bgc", "value_error", "Value error, bgc must be R,G,B,A or R,G,B with each 0-255",
                          value)
    return (*channels, 255)[:4]  # type: ignore[return-value]


def _extras(value: str | None) -> None:
    """rembg passes `extras` to its model loaders (SAM prompts, custom model paths); none of those apply to the
    models served here, so a non-empty one is refused rather than silently ignored."""
    if value is None or value.strip() in ("", "{}"):
        return
    try:
        parsed = json.loads(value)
    except ValueError:
        raise field_error("query", "extras", "json_invalid", "Value error, extras must be a JSON object",
                          value) from None
    if not isinstance(parsed, dict):
        raise field_error("query", "extras", "json_invalid", "Value error, extras must be a JSON object", value)
    if parsed:
        raise field_error("query", "extras", "value_error",
                          f"Value error, extras {sorted(parsed)} are not supported here (they configure rembg's "
                          "own model loaders)", value)


def parse(params: dict[str, str], query: dict[str, str], *, where: str, served: tuple[str, ...]) -> RembgRequest:
    """The request's parameters: `params` from the query (GET) or the form (POST), `query` for `bgc`/`extras`."""
    model = _model(where, params.get("model"), served)
    only_mask = _flag(where, "om", params.get("om"))
    background = _background(query.get("bgc"))
    _extras(query.get("extras"))
    layout = Layout(format="png", channels="alpha" if only_mask else "rgba",
                    bg_color=None if only_mask else background, keep_alpha=True)
    return RembgRequest(
        # as in rembg, only the mask (om) comes without matting: no colours to estimate
        model=model, refine=_flag(where, "a", params.get("a")) and not only_mask,
        foreground_threshold=_integer(where, "af", params.get("af"), 240, 255),
        background_threshold=_integer(where, "ab", params.get("ab"), 10, 255),
        erode_size=_integer(where, "ae", params.get("ae"), 10, None),
        only_mask=only_mask, post_process_mask=_flag(where, "ppm", params.get("ppm")), layout=layout)


def form_error(message: str) -> RembgError:
    return RembgError(400, message)


def missing_field(where: str, name: str) -> RembgError:
    return RembgError(422, [{"type": "missing", "loc": [where, name], "msg": "Field required", "input": None}])

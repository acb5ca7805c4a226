"""remove.bg's API, the part self-hosting users rely on: `POST /v1.0/removebg`.

Inputs as multipart form, URL-encoded form or JSON: `image_file`, `image_file_b64` or `image_url`, and the
options below. Errors are `{"errors": [{"title", "code", "detail"}]}` with remove.bg's status codes: 400 for input
and parameters, 403 for a missing or wrong key, 429 when busy (with Retry-After).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from PIL import ImageColor

from serve_app.compose import (
    MAX_MARGIN_PERCENT,
    MAX_MARGIN_PX,
    SIZE_PRESETS,
    Layout,
    Placement,
    Rendered,
    parse_length,
)
from serve_app.errors import ApiError
from serve_app.options import parse_flag

# remove.bg's 'full' keeps the original resolution up to 25 MP (10 MP for PNG, whose files get large); '50MP'
# allows that much.
FULL_PIXELS = {"png": 10_000_000, "webp": 25_000_000, "jpg": 25_000_000, "zip": 25_000_000}
SIZES = (*SIZE_PRESETS, "50MP")
FORMATS = ("auto", "png", "jpg", "webp", "zip")
TYPES = ("auto", "person", "product", "car", "animal", "graphic", "transportation", "other")
TYPE_LEVELS = ("none", "1", "2", "latest")
# Options of remove.bg that change the answer in ways this service does not implement, with the value that
# asks for nothing (accepted). Any other value is refused with a 400 naming the option.
UNSUPPORTED = {"add_shadow": ("false",), "shadow_type": ("none",), "shadow_opacity": (),
               "semitransparency": ("true",)}
KNOWN = frozenset({"image_file", "image_file_b64", "image_url", "size", "type", "type_level", "format", "roi",
                   "crop", "crop_margin", "scale", "position", "channels", "bg_color", "bg_image_url",
                   "bg_image_file", *UNSUPPORTED})
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_TEXT = {"type": "string"}
OPENAPI = {"requestBody": {"required": True, "content": {
    media: {"schema": {"type": "object", "properties": {
        "image_file": {"type": "string", "format": "binary", "description": "The image (multipart only)."},
        "image_file_b64": {**_TEXT, "description": "The image, base64-encoded."},
        "image_url": {**_TEXT, "description": "URL of the image (fetched through the URL policy)."},
        "size": {**_TEXT, "enum": list(SIZES), "default": "preview",
                 "description": "preview/small/regular 0.25 MP, medium 1.5 MP, hd 4 MP, full/4k/auto the upload's "
                                "size (at most 10 MP as PNG, 25 MP otherwise), 50MP."},
        "type": {**_TEXT, "enum": list(TYPES), "description": "A hint; accepted, returned as X-Type."},
        "type_level": {**_TEXT, "enum": list(TYPE_LEVELS), "description": "A hint; accepted."},
        "format": {**_TEXT, "enum": list(FORMATS), "default": "auto",
                   "description": "auto: PNG with transparency, else JPEG; zip: color.jpg + alpha.png."},
        "roi": {**_TEXT, "description": "x1 y1 x2 y2 (px or %): the subject is looked for inside."},
        "crop": {"type": "boolean", "description": "Crop to the subject."},
        "crop_margin": {**_TEXT, "description": "Margin around the cropped subject: 30px or 10% (at most 500px or "
                                                "50%); one value, or two (top/bottom left/right), or four (top right "
                                                "bottom left)."},
        "scale": {**_TEXT, "description": "original, or 10% to 100%: the subject's longest side on the canvas."},
        "position": {**_TEXT, "description": "original, center, or one or two percentages (horizontal vertical)."},
        "channels": {**_TEXT, "enum": ["rgba", "alpha"], "description": "alpha: the mask only."},
        "bg_color": {**_TEXT, "description": "Hex colour (81d4fa, fff, 81d4fa77) or a colour name."},
        "bg_image_url": {**_TEXT, "description": "Background picture by URL, scaled to cover."},
        "bg_image_file": {"type": "string", "format": "binary", "description": "Background picture (multipart)."},
        "add_shadow": {"type": "boolean", "description": "Not implemented: only false is taken."},
        "shadow_type": {**_TEXT, "description": "Not implemented: only none is taken."},
        "shadow_opacity": {"type": "integer", "description": "Not implemented: refused."},
        "semitransparency": {"type": "boolean", "description": "Always on here: only true is taken."},
    }}} for media in ("multipart/form-data", "application/x-www-form-urlencoded", "application/json")}}}


class RemoveBgError(ApiError):
    """An error in remove.bg's shape."""

    def __init__(self, status: int, title: str, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail, status=status, code=code, headers=headers)
        self.title = title

    def to_body(self) -> dict:
        return {"errors": [{"title": self.title, "code": self.code, "detail": self.message}]}


def invalid(detail: str) -> RemoveBgError:
    return RemoveBgError(400, "Invalid parameters", "invalid_parameters", detail)


def from_api_error(error: ApiError) -> RemoveBgError:
    """The service's own errors in remove.bg's shape and status codes (clients retry 429, not 503)."""
    if isinstance(error, RemoveBgError):
        return error
    if error.status == 401:
        return RemoveBgError(403, "Missing or invalid API key", "auth_failed", error.message, error.headers)
    if error.status == 503:
        return RemoveBgError(429, "Busy", "rate_limit_exceeded", error.message, error.headers)
    if error.status in (404, 405):  # a route or method that is not there: the status says so
        title = "Not found" if error.status == 404 else "Method not allowed"
        return RemoveBgError(error.status, title, error.code, error.message, error.headers)
    if 400 <= error.status < 500:
        return RemoveBgError(400, "Unprocessable input", error.code, error.message, error.headers)
    return RemoveBgError(error.status, "Processing failed", error.code, error.message, error.headers)


@dataclass(frozen=True)
class RemoveBgRequest:
    image_file: bytes | None
    image_url: str | None
    bg_image_file: bytes | None
    bg_image_url: str | None
    type: str
    layout: Layout
    json_answer: bool

    @property
    def result_type(self) -> str:
        """X-Type: the type the client named; the model finds any subject, so `auto` stays `other`."""
        return "other" if self.type == "auto" else self.type


def json_answer(rendered: Rendered) -> dict:
    """The answer for `Accept: application/json`."""
    top, left, width, height = rendered.foreground or (0, 0, 0, 0)
    return {"data": {"result_b64": base64.b64encode(rendered.data).decode(), "foreground_top": top,
                     "foreground_left": left, "foreground_width": width, "foreground_height": height}}


def json_body(rendered: Rendered) -> bytes:
    """json_answer as the response's bytes (compact, as Starlette's JSONResponse writes it)."""
    return json.dumps(json_answer(rendered), separators=(",", ":")).encode()


def _choice(name: str, value: Any, choices: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    text = str(value)
    if text not in choices:
        raise invalid(f"{name} must be one of {', '.join(choices)}, got {text!r}")
    return text


def _flag(name: str, value: Any) -> bool:
    try:
        return parse_flag(name, value if isinstance(value, bool) else "" if value is None else str(value))
    except ApiError as error:
        raise invalid(error.message) from None


def _color(value: Any) -> tuple[int, int, int, int] | None:
    """`81d4fa`, `fff`, `81d4fa77` (with alpha) or a colour name such as `green`."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if re.fullmatch(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}", text):
        text = "#" + text
    try:
        rgba = ImageColor.getcolor(text, "RGBA")
    except (ValueError, OverflowError):
        rgba = None
    # Pillow also reads rgb(), hsl() and hsv(), whose channels it does not clamp: rgb(300,0,0) is (300, 0, 0, 255).
    if not isinstance(rgba, tuple) or not all(0 <= channel <= 255 for channel in rgba):
        raise invalid(f"bg_color must be a hex colour (81d4fa, fff, 81d4fa77) or a colour name, got {value!r}")
    return rgba  # type: ignore[return-value]


def _percent(name: str, text: str, low: float, high: float) -> float:
    match = _PERCENT.match(text)
    if not match or not low <= float(match.group(1)) <= high:
        raise invalid(f"{name} must be a percentage from {low:g}% to {high:g}%, got {text!r}")
    return float(match.group(1)) / 100.0


def _placement(scale: Any, position: Any) -> Placement:
    factor = None
    if scale not in (None, "", "original"):
        factor = _percent("scale", str(scale), 10, 100)
    where = None
    if position not in (None, "", "original"):
        text = str(position).strip()
        if text == "center":
            where = (0.5, 0.5)
        else:
            parts = text.split()
            if len(parts) not in (1, 2):
                raise invalid(f"position must be original, center, or one or two percentages, got {position!r}")
            values = [_percent("position", part, 0, 100) for part in parts]
            where = (values[0], values[-1])
    return Placement(scale=factor, position=where)


def _roi(value: Any):
    if value is None or value == "":
        return None
    parts = str(value).split()
    if len(parts) != 4:
        raise invalid(f"roi must be four values 'x1 y1 x2 y2' (px or %), got {value!r}")
    try:
        return tuple(parse_length("roi", part) for part in parts)
    except ApiError as error:
        raise invalid(error.message) from None


def _margin(value: Any):
    """One value (every side), two (top and bottom, left and right) or four (top, right, bottom, left)."""
    parts = str(value).split() if value not in (None, "") else ["0"]
    if len(parts) not in (1, 2, 4):
        raise invalid(f"crop_margin takes one, two or four values (px or %), got {value!r}")
    try:
        sides = [parse_length("crop_margin", part, max_px=MAX_MARGIN_PX, max_percent=MAX_MARGIN_PERCENT)
                 for part in parts]
    except ApiError as error:
        raise invalid(error.message) from None
    if len(sides) == 1:
        return sides[0]
    if len(sides) == 2:
        return (sides[0], sides[1], sides[0], sides[1])
    return tuple(sides)


def _unsupported(fields: dict[str, Any]) -> None:
    for name, accepted in UNSUPPORTED.items():
        value = fields.get(name)
        if value is not None and value != "" and str(value).strip().lower() not in accepted:
            raise invalid(f"{name}={value!r} is not supported by this service (shadows and turning semi-"
                          "transparency off are not implemented); leave it out")
    unknown = sorted(set(fields) - KNOWN)
    if unknown:
        raise invalid(f"unknown parameter(s) {', '.join(unknown)}; this service takes {', '.join(sorted(KNOWN))}")


def wants_json(accept: str) -> bool:
    """Whether an Accept header asks for remove.bg's JSON answer rather than the image: application/json ranked
    above anything that takes an image (image/*, */*, an image type). Clients that take anything (axios sends
    `application/json, text/plain, */*`) get the image, as remove.bg's own samples expect."""
    ranks: dict[str, float] = {}
    for part in accept.lower().split(","):
        media, _, parameters = part.partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks[media.strip()] = max(quality, ranks.get(media.strip(), 0.0))
    image = max((q for media, q in ranks.items() if media in ("*/*", "image/*") or media.startswith("image/")),
                default=0.0)
    return ranks.get("application/json", 0.0) > image


def parse(fields: dict[str, Any], files: dict[str, bytes], *, accept: str, webp_quality: int = 90,
          jpeg_quality: int = 90) -> RemoveBgRequest:
    """The request from its form or JSON `fields`, uploaded `files` and the Accept header."""
    _unsupported({**fields, **dict.fromkeys(files, "")})
    for name, instead in (("image_file", "a link as image_url, or the bytes as image_file_b64"),
                          ("bg_image_file", "a link as bg_image_url")):
        if fields.get(name) not in (None, ""):  # `curl -F image_file=photo.png`, without the @, sends the name
            raise invalid(f"{name} must be a file upload (multipart, with a filename); send {instead}")
    for name in ("image_url", "bg_image_url", "image_file_b64"):
        if fields.get(name) not in (None, "") and not isinstance(fields[name], str):
            raise invalid(f"{name} must be a string, got {type(fields[name]).__name__}")
    sources = [name for name in ("image_file", "image_file_b64", "image_url") if fields.get(name) or name in files]
    if not sources:
        raise RemoveBgError(400, "No image given", "missing_source",
                            "send one of image_file (multipart), image_file_b64 or image_url")
    if len(sources) > 1:
        raise invalid(f"send exactly one of image_file, image_file_b64, image_url; got {', '.join(sources)}")
    image = files.get("image_file")
    if fields.get("image_file_b64"):
        try:
            # Whitespace is dropped first: `base64` and many encoders wrap their output in lines.
            image = base64.b64decode("".join(str(fields["image_file_b64"]).split()), validate=True)
        except (binascii.Error, ValueError):
            raise invalid("image_file_b64 is not valid base64") from None
    if fields.get("bg_image_url") and "bg_image_file" in files:
        raise invalid("send bg_image_url or bg_image_file, not both")
    if fields.get("bg_color") not in (None, "") and (fields.get("bg_image_url") or "bg_image_file" in files):
        # remove.bg: with bg_color, the other bg_ parameters must be empty; the picture would hide the colour
        raise invalid("send bg_color or a background picture (bg_image_url, bg_image_file), not both")
    size = _choice("size", fields.get("size"), SIZES, "preview")
    fmt = _choice("format", fields.get("format"), FORMATS, "auto")
    channels = _choice("channels", fields.get("channels"), ("rgba", "alpha"), "rgba")
    color = _color(fields.get("bg_color"))
    has_background = "bg_image_file" in files or bool(fields.get("bg_image_url")) or (color is not None
                                                                                       and color[3] == 255)
    if fmt == "auto":  # remove.bg: PNG when the result has transparency, else JPEG
        fmt = "jpg" if has_background and channels == "rgba" else "png"
    # 50MP: up to 50 MP, but a PNG at most what `full` gives it (remove.bg's own limit for PNG)
    if size == "50MP":
        limit = FULL_PIXELS["png"] if fmt == "png" else 50_000_000
    else:
        limit = SIZE_PRESETS[size] or FULL_PIXELS[fmt]
    layout = Layout(format=fmt, channels=channels, bg_color=color, crop=_flag("crop", fields.get("crop")),  # type: ignore[arg-type]
                    crop_margin=_margin(fields.get("crop_margin")), roi=_roi(fields.get("roi")),
                    placement=_placement(fields.get("scale"), fields.get("position")), max_pixels=limit,
                    webp_quality=webp_quality, jpeg_quality=jpeg_quality)
    _choice("type_level", fields.get("type_level"), TYPE_LEVELS, "none")  # a hint, as type: validated only
    return RemoveBgRequest(image_file=image, image_url=fields.get("image_url") or None,
                           bg_image_file=files.get("bg_image_file"), bg_image_url=fields.get("bg_image_url") or None,
                           type=_choice("type", fields.get("type"), TYPES, "auto"), layout=layout,
                           json_answer=wants_json(accept))

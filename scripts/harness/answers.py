"""Judge one HTTP answer of the image route: a usable cut-out, a polite refusal, or a failure with its reason."""

from __future__ import annotations

import email.utils
import io
import json
from collections import Counter
from dataclasses import dataclass

import httpx
from PIL import Image

OK, SHED, FAILED = "ok", "shed", "failed"


@dataclass(frozen=True)
class Answer:
    started_s: float  # since the run began
    latency_s: float
    status: int  # 0 when no HTTP answer came (connection error, timeout)
    outcome: str  # OK, SHED or FAILED
    detail: str  # FAILED: why; SHED: who refused (the service's error code, or "serve_proxy")


def image_size(body: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image, as the service sees it after EXIF orientation."""
    with Image.open(io.BytesIO(body)) as image:
        orientation = image.getexif().get(0x0112, 1)
        return (image.height, image.width) if orientation in (5, 6, 7, 8) else image.size


def judge(response: httpx.Response, expected_size: tuple[int, int]) -> tuple[str, str]:
    """(outcome, detail): OK for a PNG of the input's size, SHED for 503 with a valid Retry-After."""
    if response.status_code == 200:
        return judge_png(response.content, expected_size)
    if response.status_code == 503:
        retry_after = response.headers.get("retry-after")
        if retry_after is None:
            return FAILED, f"503 without Retry-After ({refusal_source(response.content)})"
        if not _valid_retry_after(retry_after):
            return FAILED, f"503 with an invalid Retry-After {retry_after!r}"
        return SHED, refusal_source(response.content)
    return FAILED, f"HTTP {response.status_code} ({refusal_source(response.content)})"


def judge_error(error: Exception) -> tuple[str, str]:
    """A request that got no HTTP answer: always a failure, named by the exception type."""
    return FAILED, f"no answer: {type(error).__name__}"


def judge_png(body: bytes, expected_size: tuple[int, int]) -> tuple[str, str]:
    """(OK, "") for a complete PNG of `expected_size`, else (FAILED, what is wrong with it)."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            image.load()  # a truncated body fails here, not at open()
            if image.format != "PNG":
                return FAILED, f"200 but {image.format}, not PNG"
            if image.size != expected_size:
                return FAILED, f"200 but size {image.size}, expected {expected_size}"
    except Exception as error:  # Pillow raises several types for broken files
        return FAILED, f"200 but not a readable image: {type(error).__name__}"
    return OK, ""


def _valid_retry_after(value: str) -> bool:
    """RFC 9110: delay-seconds (a non-negative integer) or an HTTP date."""
    value = value.strip()
    if value.isdigit():
        return True
    try:
        email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return True


def refusal_source(body: bytes) -> str:
    """The service's JSON error code in an error answer's body, or "serve_proxy" for Ray Serve's own plain text."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "serve_proxy"


def tally(answers: list[Answer]) -> dict:
    """Counts per outcome, per status, per refusal source and per failure reason."""
    return {
        "outcomes": dict(Counter(a.outcome for a in answers)),
        "statuses": {str(k): v for k, v in sorted(Counter(a.status for a in answers).items())},
        "shed_by": dict(Counter(a.detail for a in answers if a.outcome == SHED)),
        "failure_reasons": dict(Counter(a.detail for a in answers if a.outcome == FAILED)),
    }

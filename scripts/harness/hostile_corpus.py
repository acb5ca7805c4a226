"""A corpus of malformed, hostile and unusual uploads, built in memory, for reliability runs and tests.

Each case says what a correct service answers: `ok` (a valid if odd image: 200) or `client_error` (4xx JSON).
Nothing here may ever produce a 5xx.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: str  # "ok" or "client_error"
    content_type: str = "image/png"


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_header_only(width: int, height: int, color_type: int = 2) -> bytes:
    """Signature + IHDR claiming a size, a tiny IDAT and IEND: the header says more than the data holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + _png_chunk(b"IEND", b""))


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is patched to claim another size."""
    data = bytearray(_save(Image.new("RGB", (16, 16), (200, 30, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _picture(size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste((30, 60, 200), (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    return image


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 24), color) for color in ((200, 0, 0), (0, 0, 200), (0, 200, 0))]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(_picture(), "JPEG", exif=exif.tobytes())


def _corrupt_exif() -> bytes:
    data = bytearray(_exif(6))
    segment = data.index(b"\xff\xe1")
    length = int.from_bytes(data[segment + 2 : segment + 4], "big")
    tiff_start, segment_end = segment + 10, segment + 2 + length  # after the length and b"Exif\0\0"
    data[tiff_start:segment_end] = b"\xff" * (segment_end - tiff_start)  # TIFF header and IFD destroyed
    return bytes(data)


def build_corpus() -> list[Case]:
    jpeg = _save(_picture(), "JPEG")
    png = _save(_picture(), "PNG")
    webp = _save(_picture(), "WEBP")
    rng = np.random.default_rng(7)
    builders: list[tuple[str, Callable[[], bytes], str, str]] = [
        ("empty", lambda: b"", "client_error", "image/png"),
        ("one-byte", lambda: b"\x89", "client_error", "image/png"),
        ("plain-text", lambda: b"hello, this is not an image\n" * 10, "client_error", "image/png"),
        ("html", lambda: b"<!doctype html><script>alert(1)</script>", "client_error", "image/png"),
        ("json", lambda: b'{"image": "data:image/png;base64,AAAA"}', "client_error", "image/png"),
        ("zip", lambda: b"PK\x03\x04" + bytes(200), "client_error", "image/png"),
        ("pdf", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "client_error", "image/png"),
        ("svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "client_error",
         "image/svg+xml"),
        ("random-bytes", lambda: rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "client_error", "image/png"),
        ("null-bytes", lambda: bytes(4096), "client_error", "image/png"),
        ("jpeg-soi-only", lambda: b"\xff\xd8\xff", "client_error", "image/jpeg"),
        ("jpeg-truncated-header", lambda: jpeg[:120], "client_error", "image/jpeg"),
        ("jpeg-truncated-half", lambda: jpeg[: len(jpeg) // 2], "client_error", "image/jpeg"),
        ("jpeg-garbage-after-soi", lambda: b"\xff\xd8\xff" + bytes(range(256)) * 4, "client_error", "image/jpeg"),
        ("png-signature-only", lambda: png[:8], "client_error", "image/png"),
        ("png-truncated-half", lambda: png[: len(png) // 2], "client_error", "image/png"),
        ("png-zero-width", lambda: _png_header_only(0, 10), "client_error", "image/png"),
        ("png-zero-height", lambda: _png_header_only(10, 0), "client_error", "image/png"),
        ("png-header-claims-huge", lambda: _png_header_only(100_000, 100_000), "client_error", "image/png"),
        ("png-bomb-64-megapixels", lambda: _save(Image.new("L", (8000, 8000)), "PNG"), "client_error", "image/png"),
        ("jpeg-sof-claims-65000x65000", lambda: _jpeg_with_size(65000, 65000), "client_error", "image/jpeg"),
        ("gif-huge-screen", lambda: b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + bytes(20),
         "client_error", "image/gif"),
        ("bmp-header-claims-huge", lambda: _bmp_huge(), "client_error", "image/bmp"),
        ("webp-truncated", lambda: webp[: len(webp) // 2], "client_error", "image/webp"),
        ("gif-polyglot-html", lambda: b"GIF89a/*<script>alert(1)</script>*/", "client_error", "image/gif"),
        ("ico-not-allowed", lambda: _save(_picture((32, 32)), "ICO"), "client_error", "image/x-icon"),
        ("tga-not-allowed", lambda: _save(_picture(), "TGA"), "client_error", "image/x-tga"),
        ("png-labelled-jpeg", lambda: png, "ok", "image/jpeg"),
        ("jpeg-labelled-png", lambda: jpeg, "ok", "image/png"),
        ("png-with-zip-appended", lambda: png + b"PK\x03\x04" + bytes(100), "ok", "image/png"),
        ("png-16-bit", lambda: _save(Image.fromarray(np.full((40, 50), 40000, np.uint16)), "PNG"), "ok", "image/png"),
        ("gif-animated", lambda: _animated("GIF"), "ok", "image/gif"),
        ("webp-animated", lambda: _animated("WEBP"), "ok", "image/webp"),
        ("apng", lambda: _animated("PNG"), "ok", "image/png"),
        ("jpeg-cmyk", lambda: _save(_picture().convert("CMYK"), "JPEG"), "ok", "image/jpeg"),
        ("png-palette-transparent", lambda: _save(_picture().convert("P"), "PNG", transparency=0), "ok", "image/png"),
        ("png-la", lambda: _save(_picture().convert("LA"), "PNG"), "ok", "image/png"),
        ("bmp-1-bit", lambda: _save(_picture().convert("1"), "BMP"), "ok", "image/bmp"),
        ("tiff-float", lambda: _save(Image.fromarray(rng.random((20, 30)).astype(np.float32)), "TIFF"), "ok",
         "image/tiff"),
        ("tiff-16-bit", lambda: _save(Image.fromarray(np.full((20, 30), 1000, np.uint16)), "TIFF"), "ok",
         "image/tiff"),
        ("one-pixel", lambda: _save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "ok", "image/png"),
        ("extreme-aspect-1x5000", lambda: _save(Image.new("RGB", (1, 5000), (9, 9, 9)), "PNG"), "ok", "image/png"),
        ("exif-orientation-8", lambda: _exif(8), "ok", "image/jpeg"),
        ("exif-orientation-invalid-9", lambda: _exif(9), "ok", "image/jpeg"),
        ("exif-corrupt", _corrupt_exif, "ok", "image/jpeg"),
    ]
    return [Case(name, build(), expect, content_type) for name, build, expect, content_type in builders]


def _bmp_huge() -> bytes:
    header = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info + bytes(64)


def post_corpus(base_url: str, cases: list[Case], headers: dict[str, str] | None = None) -> list[dict]:
    """POST every case once; one row per case with what came back and whether it was what a user should get."""
    import httpx

    rows = []
    with httpx.Client(timeout=60, trust_env=False) as http:
        for case in cases:
            response = http.post(f"{base_url}/v1/remove-background", content=case.data,
                                 headers={"Content-Type": case.content_type, **(headers or {})})
            json_error = response.headers.get("content-type", "").startswith("application/json")
            outcome = "ok" if response.status_code == 200 else (
                "client_error" if 400 <= response.status_code < 500 and json_error else "server_error")
            rows.append({"case": case.name, "expected": case.expect, "status": response.status_code,
                         "outcome": outcome, "as_expected": outcome == case.expect})
    return rows


def summarize(rows: list[dict]) -> dict:
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[str(row["status"])] = by_status.get(str(row["status"]), 0) + 1
    return {"cases": len(rows), "server_errors": sum(row["outcome"] == "server_error" for row in rows),
            "unexpected": [row["case"] for row in rows if not row["as_expected"]],
            "by_status": dict(sorted(by_status.items()))}

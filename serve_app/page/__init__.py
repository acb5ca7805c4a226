"""The page to try the service in a browser: plain HTML, CSS and JavaScript shipped in the package (no CDN, no
build step), served by the ingress at `/` and `/page/<file>`."""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from importlib import resources

from serve_app.errors import NotFound

MEDIA_TYPES = {"html": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
               "js": "text/javascript; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    data: bytes
    media_type: str


@functools.cache
def page_asset(name: str) -> Asset:
    """One of the page's files, read once; NotFound for anything else (no paths: names only)."""
    kind = name.rpartition(".")[2]
    if "/" in name or name.startswith(".") or kind not in MEDIA_TYPES:
        raise NotFound(f"no page file {name!r}")
    try:
        data = resources.files(__package__).joinpath(name).read_bytes()
    except (OSError, ValueError):  # missing, a folder, a name too long or holding a NUL byte
        raise NotFound(f"no page file {name!r}") from None
    return Asset(data, MEDIA_TYPES[kind])


def page_html(root_path: str) -> bytes:
    """index.html with a <base> at the application's route prefix: the page's files and its API calls are relative
    URLs, so that under `route_prefix: /lite` they reach /lite/page/... and /lite/v1/..., not the root's."""
    base = html.escape(root_path.rstrip("/") + "/", quote=True).encode()
    return page_asset("index.html").data.replace(b"<head>", b'<head>\n<base href="' + base + b'">', 1)

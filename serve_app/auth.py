"""API-key check for the ingress: `Authorization: Bearer <key>`, compared in constant time, never logged."""

from __future__ import annotations

import hmac

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"})
PAGE_PREFIX = "/page/"  # the page's own files: the page asks for the key, so it must load without one


def is_open(path: str) -> bool:
    """Whether `path` answers without an API key."""
    return path in OPEN_PATHS or path.startswith(PAGE_PREFIX)


def key_matches(authorization: str | None, keys: tuple[str, ...]) -> bool:
    """True if the header carries one of `keys`. Every key is compared, so timing says nothing about which."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    presented = token.strip().encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key.encode())
    return matched

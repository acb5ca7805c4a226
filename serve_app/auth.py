"""API-key check for the ingress: `Authorization: Bearer <key>`, compared in constant time, never logged."""

from __future__ import annotations

import hmac

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


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

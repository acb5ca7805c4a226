"""Which API a path belongs to, and its errors in that API's shape: shared by the ingress and the stop's fence, so
that a rembg or remove.bg client gets the shape it parses whichever of them answers."""

from __future__ import annotations

from serve_app.compat import rembg, removebg
from serve_app.errors import ApiError

REMBG_PREFIX = "/api/"
REMOVEBG_PREFIX = "/v1.0/"


def in_route_shape(path: str, error: ApiError) -> ApiError:
    """The error as the API of `path` (within the application) shapes it: rembg's `{"detail": ...}`, remove.bg's
    `{"errors": [...]}` (with its status codes), or this service's own."""
    if path.startswith(REMBG_PREFIX) and not isinstance(error, rembg.RembgError):
        return rembg.RembgError(error.status, error.message, error.headers)
    if path.startswith(REMOVEBG_PREFIX):
        return removebg.from_api_error(error)
    return error

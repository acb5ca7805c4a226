"""The one error type the service raises for anything a client did or could fix.

Every HTTP error leaves the service as `{"error": {"code": ..., "message": ...}}` with `status`; the ingress
turns these exceptions into that shape. Codes are stable strings clients can switch on.
"""

from __future__ import annotations


class ApiError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidImage(ApiError):
    status, code = 422, "invalid_image"


class InvalidOption(ApiError):
    status, code = 422, "invalid_option"


class UrlRefused(ApiError):
    status, code = 400, "url_refused"


class UpstreamError(ApiError):
    status, code = 502, "upstream_error"


class UpstreamTimeout(ApiError):
    status, code = 504, "upstream_timeout"


class DeadlineExceeded(ApiError):
    status, code = 504, "deadline_exceeded"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Overloaded(ApiError):
    status, code = 503, "overloaded"


class ModelUnavailable(ApiError):
    status, code = 503, "model_unavailable"

"""Typed errors of the HTTP contract, each mapped once to the JSON error body.

Raise one of these anywhere below a route; `register_error_handlers` turns it into
`{"error": {"code": ..., "message": ...}}` with the class's status. A client's mistake is
always a 4xx; only the server's own faults are 5xx.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base class: an error with an HTTP status, a snake_case code and a human message."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class UrlNotAllowed(BadRequest):
    """The URL points somewhere the backend must never connect to (SSRF guard)."""

    code = "url_not_allowed"


class UnknownModel(ApiError):
    status = 404
    code = "unknown_model"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMedia(ApiError):
    status = 415
    code = "unsupported_media_type"


class UndecodableImage(ApiError):
    status = 422
    code = "undecodable_image"


class NotReady(ApiError):
    status = 503
    code = "not_ready"


class Busy(ApiError):
    """The instance is at a bound it keeps on purpose (memory): the client should retry."""

    status = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(Busy):
    """The process is stopping (SIGTERM) and cannot finish this request before it exits."""

    code = "shutting_down"


class UpstreamError(ApiError):
    status = 502
    code = "upstream_error"


class UpstreamTimeout(ApiError):
    status = 504
    code = "upstream_timeout"

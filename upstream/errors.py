"""Upstream's error hierarchy; the HTTP edge turns each into a 4xx with a JSON body."""

from __future__ import annotations


class UpstreamError(Exception):
    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class Invalid(UpstreamError):
    status = 400
    code = "INVALID_ARGUMENT"


class Unauthorized(UpstreamError):
    status = 401
    code = "UNAUTHENTICATED"


class NotFound(UpstreamError):
    status = 404
    code = "NOT_FOUND"


class Conflict(UpstreamError):
    status = 409
    code = "CONFLICT"


class TooLarge(UpstreamError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"

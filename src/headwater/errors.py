"""The error tree.

Every error carries a stable ``code`` (clients match on it), an HTTP ``status`` and a
message that says what happened and what to do next. The API layer turns any
``HeadwaterError`` into ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

from typing import Any


class HeadwaterError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(HeadwaterError):
    code = "bad_request"
    status = 400


class InvalidSchema(BadRequest):
    code = "invalid_schema"


class IncompatibleSchema(HeadwaterError):
    code = "incompatible_schema_change"
    status = 409


class Unauthorized(HeadwaterError):
    code = "unauthorized"
    status = 401


class Forbidden(HeadwaterError):
    code = "forbidden"
    status = 403


class NotFound(HeadwaterError):
    code = "not_found"
    status = 404


class Conflict(HeadwaterError):
    code = "conflict"
    status = 409


class PayloadTooLarge(HeadwaterError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(HeadwaterError):
    code = "unsupported_media_type"
    status = 415


class RateLimited(HeadwaterError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_s: float, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class QuotaExceeded(HeadwaterError):
    """A tenant owns as many objects of a kind as its quota allows."""

    code = "quota_exceeded"
    status = 429


class Overloaded(HeadwaterError):
    code = "overloaded"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class UnsupportedSQL(BadRequest):
    """A SQL construct the engine does not support; names it and where it stands."""

    code = "unsupported_sql"


class QueryError(BadRequest):
    code = "query_error"

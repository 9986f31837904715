"""Errors as OpenAI's error object, with the HTTP status clients' retry logic expects.

Every error the daemon raises on purpose carries a gRPC status name (`code`, see `datamgr.errors`);
`TABLE` maps it to an HTTP status and OpenAI's error type. A refusal by a limit (429) or a model still
loading or the daemon stopping (503) says when to retry (`retry-after`), which the openai client
honours. Anything else is a bug: 500, logged with its traceback, no detail to the client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import Response

log = logging.getLogger("datamgr.ai_http")

RETRY_AFTER_S = 1
TABLE: dict[str, tuple[int, str]] = {  # status code name → HTTP status, OpenAI's error type
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "ALREADY_EXISTS": (409, "invalid_request_error"),
    "TOO_LARGE": (413, "invalid_request_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "CANCELLED": (499, "invalid_request_error"),
    "UNIMPLEMENTED": (501, "not_supported_error"),
    "UNAVAILABLE": (503, "unavailable_error"),
    "DEADLINE_EXCEEDED": (504, "timeout_error"),
}
_INTERNAL = (500, "server_error")


class HttpError(Exception):
    """An error of the HTTP layer itself (a body too large, a model still loading, no such route)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def error_object(exc: BaseException, where: str) -> tuple[int, dict[str, Any]]:
    """`exc`'s HTTP status and its OpenAI error object ({"error": {message, type, param, code}})."""
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None)
    if isinstance(code, str) and code in TABLE and isinstance(message, str):
        status, kind = TABLE[code]
    else:
        log.error("bug in %s", where, exc_info=exc)
        status, kind = _INTERNAL
        code, message = "INTERNAL", f"internal error in {where} (details in the daemon log)"
    error = {"message": message, "type": kind, "param": getattr(exc, "param", None), "code": code.lower()}
    return status, {"error": error}


def headers_for(status: int, exc: BaseException | None = None) -> dict[str, str]:
    """`retry-after` of a 429 or 503: the error's own `retry_after_s` (a daily token quota: until it
    resets), else RETRY_AFTER_S."""
    if status not in (429, 503):
        return {}
    after = getattr(exc, "retry_after_s", None)
    return {"retry-after": str(after if isinstance(after, int) and after > 0 else RETRY_AFTER_S)}


def error_response(exc: BaseException, where: str) -> Response:
    status, body = error_object(exc, where)
    headers = headers_for(status, exc)
    return Response(json.dumps(body), status, headers=headers, media_type="application/json")

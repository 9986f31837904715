"""Errors of aicap's service (and its SDK).

The tree::

    AicapError                        root of everything aicap raises on purpose
    ├── InvalidArgument               the caller's mistake: empty prompt, bad sampling value, unknown role
    ├── Unauthenticated               no token, or one the daemon does not know
    ├── PermissionDenied              the app lacks ohos.permission.USE_AI, or the call needs the admin
    ├── NotFound                      no such model
    ├── AlreadyExists                 a model name taken twice
    ├── FailedPrecondition            e.g. removing the default model, a model without a chat template
    ├── ResourceExhausted             a per-app or global request limit is reached
    └── Unavailable                   the model was removed or the daemon is stopping mid-request

`code` is the gRPC status code name each maps to (the servicer's one table, `aicap.service.STATUS`).
"""

from __future__ import annotations


class AicapError(Exception):
    """Root of aicap's errors. `code` is the gRPC status code name it maps to."""

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AicapError):
    code = "INVALID_ARGUMENT"


class Unauthenticated(AicapError):
    code = "UNAUTHENTICATED"


class PermissionDenied(AicapError):
    code = "PERMISSION_DENIED"


class NotFound(AicapError):
    code = "NOT_FOUND"


class AlreadyExists(AicapError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(AicapError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(AicapError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(AicapError):
    code = "UNAVAILABLE"


BY_CODE: dict[str, type[AicapError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
    )
}

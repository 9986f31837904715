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
    ├── Unavailable                   the model was removed or the daemon is stopping mid-request
    │   └── HandedOver                (between devices) a draining device handed a generation back
    ├── DeadlineExceeded              the call's deadline passed (the SDK's `timeout=`)
    ├── Cancelled                     the call was cancelled
    └── Unsupported                   UNIMPLEMENTED: a daemon without the method (or the AI service off)

`code` is the gRPC status code name each maps to (the server edge answers it).

The rule shared by every SDK (`datamgr.errors`): AicapError is a `datamgr.errors.DatamgrError`, and
each class here also derives from datamgr's class of its status, so `except datamgr.errors.NotFound`
catches aicap's NotFound as well as DataShare's and udmf's. The SDK raises the classes here; a status
without one (UNKNOWN, INTERNAL, ...) raises AicapError with that `code`. `datamgr.errors` imports
nothing, which keeps aicap free of datamgr's internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamgr import errors as status

if TYPE_CHECKING:
    from aicap.kv_state import KvState


class AicapError(status.DatamgrError):
    """Root of aicap's errors. `code` is the gRPC status code name it maps to."""


class InvalidArgument(AicapError, status.InvalidArgument):
    code = "INVALID_ARGUMENT"


class Unauthenticated(AicapError, status.Unauthenticated):
    code = "UNAUTHENTICATED"


class PermissionDenied(AicapError, status.PermissionDenied):
    code = "PERMISSION_DENIED"


class NotFound(AicapError, status.NotFound):
    code = "NOT_FOUND"


class AlreadyExists(AicapError, status.AlreadyExists):
    code = "ALREADY_EXISTS"


class FailedPrecondition(AicapError, status.FailedPrecondition):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(AicapError, status.ResourceExhausted):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(AicapError, status.Unavailable):
    code = "UNAVAILABLE"


class HandedOver(Unavailable):
    """A paired device that ran a generation handed it back with its KV state (it is draining): `state`
    holds the KV of every token so far but the last, which the origin computes when it goes on."""

    def __init__(self, message: str, state: KvState) -> None:
        super().__init__(message)
        self.state = state


class DeadlineExceeded(AicapError, status.DeadlineExceeded):
    code = "DEADLINE_EXCEEDED"


class Cancelled(AicapError, status.Cancelled):
    code = "CANCELLED"


class Unsupported(AicapError, status.Unsupported):
    code = "UNIMPLEMENTED"


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
        DeadlineExceeded,
        Cancelled,
        Unsupported,
    )
}

"""Errors of the UDMF service (and its SDK).

The tree::

    UdmfError                         root of everything udmf raises on purpose
    ├── InvalidArgument               the caller's mistake: bad type id, extension without '.', unknown parent
    ├── Unauthenticated               no token, or one the daemon does not know
    ├── PermissionDenied              e.g. unregistering a type the caller's bundle does not own
    ├── NotFound                      no such type, key or record
    ├── AlreadyExists                 a type id that is already a preset or registered
    ├── FailedPrecondition            e.g. unregistering a type another custom type still belongs to
    ├── ResourceExhausted             a size or count limit is reached (e.g. 200 custom types, 200 MB data)
    ├── Unavailable                   the daemon is stopping mid-request, a lazy drag source went away
    ├── DeadlineExceeded              a lazy drag source did not deliver its data in time
    ├── Cancelled                     the SDK's call was cancelled (get_data's `cancel`)
    └── Unsupported                   UNIMPLEMENTED: a daemon without the method

`code` is the gRPC status code name each maps to; domain code never imports grpc.

The rule shared by every SDK (`datamgr.errors`): UdmfError is a `datamgr.errors.DatamgrError`, and
each class here also derives from datamgr's class of its status, so `except datamgr.errors.NotFound`
catches udmf's NotFound as well as DataShare's and aicap's. The SDK raises the classes here; a status
without one (UNKNOWN, INTERNAL, ...) raises UdmfError with that `code`. `datamgr.errors` imports
nothing, which keeps udmf free of datamgr's internals.
"""

from __future__ import annotations

from datamgr import errors as status


class UdmfError(status.DatamgrError):
    """Root of udmf's errors. `code` is the gRPC status code name it maps to."""


class InvalidArgument(UdmfError, status.InvalidArgument):
    code = "INVALID_ARGUMENT"


class Unauthenticated(UdmfError, status.Unauthenticated):
    code = "UNAUTHENTICATED"


class PermissionDenied(UdmfError, status.PermissionDenied):
    code = "PERMISSION_DENIED"


class NotFound(UdmfError, status.NotFound):
    code = "NOT_FOUND"


class AlreadyExists(UdmfError, status.AlreadyExists):
    code = "ALREADY_EXISTS"


class FailedPrecondition(UdmfError, status.FailedPrecondition):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(UdmfError, status.ResourceExhausted):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(UdmfError, status.Unavailable):
    code = "UNAVAILABLE"


class DeadlineExceeded(UdmfError, status.DeadlineExceeded):
    code = "DEADLINE_EXCEEDED"


class Cancelled(UdmfError, status.Cancelled):
    code = "CANCELLED"


class Unsupported(UdmfError, status.Unsupported):
    code = "UNIMPLEMENTED"


# The statuses udmf's service answers on purpose (a peer's status is mapped back with it).
BY_CODE: dict[str, type[UdmfError]] = {
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
    )
}
# What the SDK raises per status: the service's, and the two only grpc answers.
SDK_BY_CODE: dict[str, type[UdmfError]] = {**BY_CODE, "CANCELLED": Cancelled, "UNIMPLEMENTED": Unsupported}

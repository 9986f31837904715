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
    └── DeadlineExceeded              a lazy drag source did not deliver its data in time

`code` is the gRPC status code name each maps to; domain code never imports grpc.
"""

from __future__ import annotations


class UdmfError(Exception):
    """Root of udmf's errors. `code` is the gRPC status code name it maps to."""

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(UdmfError):
    code = "INVALID_ARGUMENT"


class Unauthenticated(UdmfError):
    code = "UNAUTHENTICATED"


class PermissionDenied(UdmfError):
    code = "PERMISSION_DENIED"


class NotFound(UdmfError):
    code = "NOT_FOUND"


class AlreadyExists(UdmfError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(UdmfError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(UdmfError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(UdmfError):
    code = "UNAVAILABLE"


class DeadlineExceeded(UdmfError):
    code = "DEADLINE_EXCEEDED"


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

"""Errors of the datamgr daemon and its SDKs, and the one rule every SDK's errors follow.

The tree::

    DatamgrError                      root of everything datamgr raises on purpose
    ├── InvalidArgument               the caller's mistake: bad URI, unknown column, wrong type, ...
    │   └── TooLarge                  a request over a configured size limit
    ├── Unauthenticated               no token, or a token the daemon does not know
    ├── PermissionDenied              the caller lacks a named permission or is not allowed
    ├── NotFound                      a provider, store, table or app that does not exist
    ├── AlreadyExists                 e.g. an app registered twice
    ├── ResourceExhausted             a per-app limit is reached (subscriptions, ...)
    ├── Unavailable                   a provider process is not attached, or the daemon is stopping
    ├── DeadlineExceeded              a provider did not answer in time, a statement ran out of its budget
    ├── Cancelled                     the caller cancelled the call (its statement was stopped)
    ├── Unsupported                   UNIMPLEMENTED: a provider's extension does not implement the operation
    ├── FailedPrecondition            the state does not allow it now: e.g. a sync session to restart
    │   ├── ClockSkew                 a peer's clock is too far ahead of ours to trust its timestamps
    │   └── DaemonLocked              another daemon already uses the data directory
    ├── udmf.errors.UdmfError         udmf's root (its own tree in `udmf.errors`)
    └── aicap.errors.AicapError       aicap's root (its own tree in `aicap.errors`)

`code` is the name of the gRPC status each maps to (the server edge answers it, `datamgr._edge`).

The rule for the SDKs (datamgr.client, udmf.client, aicap.client): a failed call raises its own
package's class for the status (`datamgr.errors.NotFound`, `udmf.errors.NotFound`,
`aicap.errors.NotFound`), and each package's class of a status derives from the class of that status
here, while its root derives from DatamgrError. So one `except` per status covers all three SDKs:
`except datamgr.errors.NotFound` catches a missing table, UDMF key or model alike; `except
DatamgrError` catches anything any SDK raises; `except udmf.errors.UdmfError` only udmf's. A status
without a class (UNKNOWN, INTERNAL: a bug) raises the package's root with `code` set.
`BY_CODE` holds one class per status that has one; it imports nothing, so udmf and aicap may build on it.
"""

from __future__ import annotations


class DatamgrError(Exception):
    """Root of datamgr's errors. `code` is the gRPC status code name it maps to."""

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DatamgrError):
    code = "INVALID_ARGUMENT"


class TooLarge(InvalidArgument):
    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(DatamgrError):
    code = "UNAUTHENTICATED"


class PermissionDenied(DatamgrError):
    code = "PERMISSION_DENIED"


class NotFound(DatamgrError):
    code = "NOT_FOUND"


class AlreadyExists(DatamgrError):
    code = "ALREADY_EXISTS"


class ResourceExhausted(DatamgrError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(DatamgrError):
    code = "UNAVAILABLE"


class DeadlineExceeded(DatamgrError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(DatamgrError):
    code = "CANCELLED"


class Unsupported(DatamgrError):
    code = "UNIMPLEMENTED"


class FailedPrecondition(DatamgrError):
    code = "FAILED_PRECONDITION"


class ClockSkew(FailedPrecondition):
    """A remote hybrid-logical-clock value is more than the allowed skew ahead of the local wall clock.

    FAILED_PRECONDITION, not INVALID_ARGUMENT: the timestamp is well-formed and becomes acceptable once
    the clocks agree again (or time catches up); retrying unchanged fails until the state is fixed."""


class DaemonLocked(FailedPrecondition):
    """Another daemon already uses the data directory (raised at start-up, never over gRPC)."""


BY_CODE: dict[str, type[DatamgrError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unsupported,
        FailedPrecondition,
    )
}

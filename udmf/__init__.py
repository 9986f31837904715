"""udmf: the Unified Data Management Framework of the DatamgrService — typed data shared between apps.

So far the Uniform Type Descriptor system (`udmf.utd`) and the error tree (`udmf.errors`).
"""

from __future__ import annotations

from udmf.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    UdmfError,
    Unauthenticated,
    Unavailable,
)
from udmf.utd import TypeDescriptor, UtdRegistry

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TypeDescriptor",
    "UdmfError",
    "Unauthenticated",
    "Unavailable",
    "UtdRegistry",
]

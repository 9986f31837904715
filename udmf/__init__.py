"""udmf: the Unified Data Management Framework of the DatamgrService — typed data shared between apps.

The data model (`udmf.data`: UnifiedData, UnifiedRecord, ...), the uniform data structs
(`udmf.structs`), the Uniform Type Descriptor system (`udmf.utd`), the error tree (`udmf.errors`) and
the SDK (`udmf.client`: UdmfClient, AsyncUdmfClient). The SDK's names load on first use, so that the
daemon's side (`udmf.service`, ...) never loads the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from udmf.data import (
    Intention,
    Runtime,
    ShareOptions,
    Summary,
    UnifiedData,
    UnifiedDataProperties,
    UnifiedRecord,
    Visibility,
)
from udmf.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    UdmfError,
    Unauthenticated,
    Unavailable,
)
from udmf.structs import (
    HTML,
    AppItem,
    ApplicationDefinedRecord,
    Audio,
    ContentForm,
    File,
    FileUri,
    Folder,
    Form,
    Hyperlink,
    Image,
    PixelMap,
    PlainText,
    Struct,
    Video,
)
from udmf.utd import TypeDescriptor, UtdRegistry

if TYPE_CHECKING:
    from udmf._drag_source import AsyncLazyDrag, LazyDrag
    from udmf._rpc import TypeInfo
    from udmf.client import AsyncUdmfClient, UdmfClient

_MODULE_OF = {
    "AsyncLazyDrag": "udmf._drag_source",
    "AsyncUdmfClient": "udmf.client",
    "LazyDrag": "udmf._drag_source",
    "TypeInfo": "udmf._rpc",
    "UdmfClient": "udmf.client",
}

__all__ = [  # noqa: RUF022 - plain sorted() order, which the export test pins
    "AlreadyExists",
    "AppItem",
    "ApplicationDefinedRecord",
    "AsyncLazyDrag",
    "AsyncUdmfClient",
    "Audio",
    "ContentForm",
    "DeadlineExceeded",
    "FailedPrecondition",
    "File",
    "FileUri",
    "Folder",
    "Form",
    "HTML",
    "Hyperlink",
    "Image",
    "Intention",
    "InvalidArgument",
    "LazyDrag",
    "NotFound",
    "PermissionDenied",
    "PixelMap",
    "PlainText",
    "ResourceExhausted",
    "Runtime",
    "ShareOptions",
    "Struct",
    "Summary",
    "TypeDescriptor",
    "TypeInfo",
    "UdmfClient",
    "UdmfError",
    "Unauthenticated",
    "Unavailable",
    "UnifiedData",
    "UnifiedDataProperties",
    "UnifiedRecord",
    "UtdRegistry",
    "Video",
    "Visibility",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'udmf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

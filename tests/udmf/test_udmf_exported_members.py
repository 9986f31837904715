"""udmf's public surface is explicit: everything in `__all__` exists, is sorted and is the list we mean."""

from __future__ import annotations

import subprocess
import sys

import udmf


def test_udmf_exports() -> None:
    exported = udmf.__all__
    assert exported == sorted(exported)
    assert all(getattr(udmf, name) is not None for name in exported)
    assert set(exported) == {
        "HTML",
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
    }


def test_importing_udmf_does_not_load_the_client() -> None:
    code = "import sys, udmf; print('udmf.client' in sys.modules, 'grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

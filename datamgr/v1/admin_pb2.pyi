from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class App(_message.Message):
    __slots__ = ("bundle", "permissions", "created_at", "usage")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    created_at: float
    usage: StorageUsage
    def __init__(self, bundle: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ..., created_at: _Optional[float] = ..., usage: _Optional[_Union[StorageUsage, _Mapping]] = ...) -> None: ...

class StorageUsage(_message.Message):
    __slots__ = ("datashare_bytes", "kv_bytes", "udmf_bytes", "total_bytes", "quota_bytes")
    DATASHARE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    UDMF_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    datashare_bytes: int
    kv_bytes: int
    udmf_bytes: int
    total_bytes: int
    quota_bytes: int
    def __init__(self, datashare_bytes: _Optional[int] = ..., kv_bytes: _Optional[int] = ..., udmf_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., quota_bytes: _Optional[int] = ...) -> None: ...

class AddAppRequest(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    def __init__(self, bundle: _Optional[str] = ...) -> None: ...

class AddAppResponse(_message.Message):
    __slots__ = ("app", "token")
    APP_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    app: App
    token: str
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class RemoveAppRequest(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    def __init__(self, bundle: _Optional[str] = ...) -> None: ...

class RemoveAppResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAppsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAppsResponse(_message.Message):
    __slots__ = ("apps",)
    APPS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[App]
    def __init__(self, apps: _Optional[_Iterable[_Union[App, _Mapping]]] = ...) -> None: ...

class GrantPermissionsRequest(_message.Message):
    __slots__ = ("bundle", "permissions")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundle: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ...) -> None: ...

class GrantPermissionsResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class RevokePermissionsRequest(_message.Message):
    __slots__ = ("bundle", "permissions")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundle: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ...) -> None: ...

class RevokePermissionsResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

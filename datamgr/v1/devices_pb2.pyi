from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceSecurityLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_SECURITY_LEVEL_UNSPECIFIED: _ClassVar[DeviceSecurityLevel]
    DEVICE_SECURITY_LEVEL_SL1: _ClassVar[DeviceSecurityLevel]
    DEVICE_SECURITY_LEVEL_SL2: _ClassVar[DeviceSecurityLevel]
    DEVICE_SECURITY_LEVEL_SL3: _ClassVar[DeviceSecurityLevel]
    DEVICE_SECURITY_LEVEL_SL4: _ClassVar[DeviceSecurityLevel]
    DEVICE_SECURITY_LEVEL_SL5: _ClassVar[DeviceSecurityLevel]

class DeviceEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_EVENT_TYPE_UNSPECIFIED: _ClassVar[DeviceEventType]
    DEVICE_EVENT_TYPE_ONLINE: _ClassVar[DeviceEventType]
    DEVICE_EVENT_TYPE_OFFLINE: _ClassVar[DeviceEventType]
    DEVICE_EVENT_TYPE_UPDATED: _ClassVar[DeviceEventType]
DEVICE_SECURITY_LEVEL_UNSPECIFIED: DeviceSecurityLevel
DEVICE_SECURITY_LEVEL_SL1: DeviceSecurityLevel
DEVICE_SECURITY_LEVEL_SL2: DeviceSecurityLevel
DEVICE_SECURITY_LEVEL_SL3: DeviceSecurityLevel
DEVICE_SECURITY_LEVEL_SL4: DeviceSecurityLevel
DEVICE_SECURITY_LEVEL_SL5: DeviceSecurityLevel
DEVICE_EVENT_TYPE_UNSPECIFIED: DeviceEventType
DEVICE_EVENT_TYPE_ONLINE: DeviceEventType
DEVICE_EVENT_TYPE_OFFLINE: DeviceEventType
DEVICE_EVENT_TYPE_UPDATED: DeviceEventType

class Device(_message.Message):
    __slots__ = ("device_id", "name", "security_level", "fingerprint", "capabilities", "addresses", "port", "protocol_version", "online", "last_seen")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    name: str
    security_level: DeviceSecurityLevel
    fingerprint: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    port: int
    protocol_version: int
    online: bool
    last_seen: float
    def __init__(self, device_id: _Optional[str] = ..., name: _Optional[str] = ..., security_level: _Optional[_Union[DeviceSecurityLevel, str]] = ..., fingerprint: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., addresses: _Optional[_Iterable[str]] = ..., port: _Optional[int] = ..., protocol_version: _Optional[int] = ..., online: _Optional[bool] = ..., last_seen: _Optional[float] = ...) -> None: ...

class DeviceEvent(_message.Message):
    __slots__ = ("type", "device")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    type: DeviceEventType
    device: Device
    def __init__(self, type: _Optional[_Union[DeviceEventType, str]] = ..., device: _Optional[_Union[Device, _Mapping]] = ...) -> None: ...

class GetLocalDeviceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLocalDeviceResponse(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: Device
    def __init__(self, device: _Optional[_Union[Device, _Mapping]] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("online_only",)
    ONLINE_ONLY_FIELD_NUMBER: _ClassVar[int]
    online_only: bool
    def __init__(self, online_only: _Optional[bool] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class WatchDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeviceSnapshot(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class WatchDevicesResponse(_message.Message):
    __slots__ = ("snapshot", "event")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    snapshot: DeviceSnapshot
    event: DeviceEvent
    def __init__(self, snapshot: _Optional[_Union[DeviceSnapshot, _Mapping]] = ..., event: _Optional[_Union[DeviceEvent, _Mapping]] = ...) -> None: ...

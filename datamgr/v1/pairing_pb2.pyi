from datamgr.v1 import devices_pb2 as _devices_pb2
from datamgr.v1 import peer_pb2 as _peer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PairingWindowCloseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAIRING_WINDOW_CLOSE_REASON_UNSPECIFIED: _ClassVar[PairingWindowCloseReason]
    PAIRING_WINDOW_CLOSE_REASON_EXPIRED: _ClassVar[PairingWindowCloseReason]
    PAIRING_WINDOW_CLOSE_REASON_EXHAUSTED: _ClassVar[PairingWindowCloseReason]
    PAIRING_WINDOW_CLOSE_REASON_CANCELLED: _ClassVar[PairingWindowCloseReason]

class PeerReadDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PEER_READ_DIRECTION_UNSPECIFIED: _ClassVar[PeerReadDirection]
    PEER_READ_DIRECTION_SERVED: _ClassVar[PeerReadDirection]
    PEER_READ_DIRECTION_FETCHED: _ClassVar[PeerReadDirection]
PAIRING_WINDOW_CLOSE_REASON_UNSPECIFIED: PairingWindowCloseReason
PAIRING_WINDOW_CLOSE_REASON_EXPIRED: PairingWindowCloseReason
PAIRING_WINDOW_CLOSE_REASON_EXHAUSTED: PairingWindowCloseReason
PAIRING_WINDOW_CLOSE_REASON_CANCELLED: PairingWindowCloseReason
PEER_READ_DIRECTION_UNSPECIFIED: PeerReadDirection
PEER_READ_DIRECTION_SERVED: PeerReadDirection
PEER_READ_DIRECTION_FETCHED: PeerReadDirection

class TrustedDevice(_message.Message):
    __slots__ = ("device_id", "name", "fingerprint", "security_level", "address", "paired_at", "asserted_level")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PAIRED_AT_FIELD_NUMBER: _ClassVar[int]
    ASSERTED_LEVEL_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    name: str
    fingerprint: str
    security_level: _devices_pb2.DeviceSecurityLevel
    address: str
    paired_at: float
    asserted_level: _devices_pb2.DeviceSecurityLevel
    def __init__(self, device_id: _Optional[str] = ..., name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., security_level: _Optional[_Union[_devices_pb2.DeviceSecurityLevel, str]] = ..., address: _Optional[str] = ..., paired_at: _Optional[float] = ..., asserted_level: _Optional[_Union[_devices_pb2.DeviceSecurityLevel, str]] = ...) -> None: ...

class OpenPairingWindowRequest(_message.Message):
    __slots__ = ("security_level",)
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    security_level: _devices_pb2.DeviceSecurityLevel
    def __init__(self, security_level: _Optional[_Union[_devices_pb2.DeviceSecurityLevel, str]] = ...) -> None: ...

class PairingWindowOpened(_message.Message):
    __slots__ = ("code", "expires_in_s", "attempts", "pairing_address", "device_id", "fingerprint")
    CODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PAIRING_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    code: str
    expires_in_s: float
    attempts: int
    pairing_address: str
    device_id: str
    fingerprint: str
    def __init__(self, code: _Optional[str] = ..., expires_in_s: _Optional[float] = ..., attempts: _Optional[int] = ..., pairing_address: _Optional[str] = ..., device_id: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class PairingWindowClosed(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: PairingWindowCloseReason
    def __init__(self, reason: _Optional[_Union[PairingWindowCloseReason, str]] = ...) -> None: ...

class OpenPairingWindowResponse(_message.Message):
    __slots__ = ("opened", "paired", "closed")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    PAIRED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    opened: PairingWindowOpened
    paired: TrustedDevice
    closed: PairingWindowClosed
    def __init__(self, opened: _Optional[_Union[PairingWindowOpened, _Mapping]] = ..., paired: _Optional[_Union[TrustedDevice, _Mapping]] = ..., closed: _Optional[_Union[PairingWindowClosed, _Mapping]] = ...) -> None: ...

class PairDeviceRequest(_message.Message):
    __slots__ = ("address", "code", "security_level")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    address: str
    code: str
    security_level: _devices_pb2.DeviceSecurityLevel
    def __init__(self, address: _Optional[str] = ..., code: _Optional[str] = ..., security_level: _Optional[_Union[_devices_pb2.DeviceSecurityLevel, str]] = ...) -> None: ...

class PairDeviceResponse(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: TrustedDevice
    def __init__(self, device: _Optional[_Union[TrustedDevice, _Mapping]] = ...) -> None: ...

class ListTrustedDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTrustedDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[TrustedDevice]
    def __init__(self, devices: _Optional[_Iterable[_Union[TrustedDevice, _Mapping]]] = ...) -> None: ...

class UnpairDeviceRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class UnpairDeviceResponse(_message.Message):
    __slots__ = ("device", "notified", "detail")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NOTIFIED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    device: TrustedDevice
    notified: bool
    detail: str
    def __init__(self, device: _Optional[_Union[TrustedDevice, _Mapping]] = ..., notified: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class PingDeviceRequest(_message.Message):
    __slots__ = ("device_id", "address")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    address: str
    def __init__(self, device_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class PingDeviceResponse(_message.Message):
    __slots__ = ("device", "round_trip_ms")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_MS_FIELD_NUMBER: _ClassVar[int]
    device: _peer_pb2.PeerDeviceInfo
    round_trip_ms: float
    def __init__(self, device: _Optional[_Union[_peer_pb2.PeerDeviceInfo, _Mapping]] = ..., round_trip_ms: _Optional[float] = ...) -> None: ...

class GetDeviceIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetDeviceIdentityResponse(_message.Message):
    __slots__ = ("device_id", "fingerprint", "name", "security_level", "peer_port", "pairing_port", "certificate_pem")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PEER_PORT_FIELD_NUMBER: _ClassVar[int]
    PAIRING_PORT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    fingerprint: str
    name: str
    security_level: _devices_pb2.DeviceSecurityLevel
    peer_port: int
    pairing_port: int
    certificate_pem: bytes
    def __init__(self, device_id: _Optional[str] = ..., fingerprint: _Optional[str] = ..., name: _Optional[str] = ..., security_level: _Optional[_Union[_devices_pb2.DeviceSecurityLevel, str]] = ..., peer_port: _Optional[int] = ..., pairing_port: _Optional[int] = ..., certificate_pem: _Optional[bytes] = ...) -> None: ...

class SetDeviceLevelRequest(_message.Message):
    __slots__ = ("device_id", "security_level")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    security_level: _devices_pb2.DeviceSecurityLevel
    def __init__(self, device_id: _Optional[str] = ..., security_level: _Optional[_Union[_devices_pb2.DeviceSecurityLevel, str]] = ...) -> None: ...

class SetDeviceLevelResponse(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: TrustedDevice
    def __init__(self, device: _Optional[_Union[TrustedDevice, _Mapping]] = ...) -> None: ...

class PeerRead(_message.Message):
    __slots__ = ("time", "direction", "device_id", "bundle", "key", "bytes", "outcome")
    TIME_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    time: float
    direction: PeerReadDirection
    device_id: str
    bundle: str
    key: str
    bytes: int
    outcome: str
    def __init__(self, time: _Optional[float] = ..., direction: _Optional[_Union[PeerReadDirection, str]] = ..., device_id: _Optional[str] = ..., bundle: _Optional[str] = ..., key: _Optional[str] = ..., bytes: _Optional[int] = ..., outcome: _Optional[str] = ...) -> None: ...

class ListPeerReadsRequest(_message.Message):
    __slots__ = ("device_id", "limit")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    limit: int
    def __init__(self, device_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListPeerReadsResponse(_message.Message):
    __slots__ = ("reads",)
    READS_FIELD_NUMBER: _ClassVar[int]
    reads: _containers.RepeatedCompositeFieldContainer[PeerRead]
    def __init__(self, reads: _Optional[_Iterable[_Union[PeerRead, _Mapping]]] = ...) -> None: ...

from datamgr.v1 import devices_pb2 as _devices_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerDeviceInfo(_message.Message):
    __slots__ = ("device_id", "name", "security_level", "peer_port", "protocol_version")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PEER_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    name: str
    security_level: _devices_pb2.DeviceSecurityLevel
    peer_port: int
    protocol_version: int
    def __init__(self, device_id: _Optional[str] = ..., name: _Optional[str] = ..., security_level: _Optional[_Union[_devices_pb2.DeviceSecurityLevel, str]] = ..., peer_port: _Optional[int] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class PairRequest(_message.Message):
    __slots__ = ("start", "proof")
    START_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    start: PairStart
    proof: PairProof
    def __init__(self, start: _Optional[_Union[PairStart, _Mapping]] = ..., proof: _Optional[_Union[PairProof, _Mapping]] = ...) -> None: ...

class PairStart(_message.Message):
    __slots__ = ("certificate_pem", "device", "srp_public")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SRP_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    device: PeerDeviceInfo
    srp_public: bytes
    def __init__(self, certificate_pem: _Optional[bytes] = ..., device: _Optional[_Union[PeerDeviceInfo, _Mapping]] = ..., srp_public: _Optional[bytes] = ...) -> None: ...

class PairProof(_message.Message):
    __slots__ = ("proof",)
    PROOF_FIELD_NUMBER: _ClassVar[int]
    proof: bytes
    def __init__(self, proof: _Optional[bytes] = ...) -> None: ...

class PairResponse(_message.Message):
    __slots__ = ("challenge", "done")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    challenge: PairChallenge
    done: PairDone
    def __init__(self, challenge: _Optional[_Union[PairChallenge, _Mapping]] = ..., done: _Optional[_Union[PairDone, _Mapping]] = ...) -> None: ...

class PairChallenge(_message.Message):
    __slots__ = ("salt", "srp_public")
    SALT_FIELD_NUMBER: _ClassVar[int]
    SRP_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    salt: bytes
    srp_public: bytes
    def __init__(self, salt: _Optional[bytes] = ..., srp_public: _Optional[bytes] = ...) -> None: ...

class PairDone(_message.Message):
    __slots__ = ("proof", "device")
    PROOF_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    proof: bytes
    device: PeerDeviceInfo
    def __init__(self, proof: _Optional[bytes] = ..., device: _Optional[_Union[PeerDeviceInfo, _Mapping]] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: PeerDeviceInfo
    def __init__(self, device: _Optional[_Union[PeerDeviceInfo, _Mapping]] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("device", "time")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    device: PeerDeviceInfo
    time: float
    def __init__(self, device: _Optional[_Union[PeerDeviceInfo, _Mapping]] = ..., time: _Optional[float] = ...) -> None: ...

class UnpairRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnpairResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

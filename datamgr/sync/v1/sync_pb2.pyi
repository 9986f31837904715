from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StoreKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORE_KIND_UNSPECIFIED: _ClassVar[StoreKind]
    STORE_KIND_DEVICE_COLLABORATION: _ClassVar[StoreKind]
    STORE_KIND_SINGLE_VERSION: _ClassVar[StoreKind]
STORE_KIND_UNSPECIFIED: StoreKind
STORE_KIND_DEVICE_COLLABORATION: StoreKind
STORE_KIND_SINGLE_VERSION: StoreKind

class Change(_message.Message):
    __slots__ = ("device", "key", "value", "vtype", "tombstone", "hlc", "origin", "seq")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VTYPE_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    HLC_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    device: str
    key: bytes
    value: bytes
    vtype: int
    tombstone: bool
    hlc: int
    origin: str
    seq: int
    def __init__(self, device: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., vtype: _Optional[int] = ..., tombstone: _Optional[bool] = ..., hlc: _Optional[int] = ..., origin: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class HandshakeRequest(_message.Message):
    __slots__ = ("version", "store_id", "device", "peer", "epoch", "kind", "security_level", "peer_epoch", "received_seq", "batch_size", "batch_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PEER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_SEQ_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    store_id: str
    device: str
    peer: str
    epoch: str
    kind: StoreKind
    security_level: int
    peer_epoch: str
    received_seq: int
    batch_size: int
    batch_bytes: int
    def __init__(self, version: _Optional[int] = ..., store_id: _Optional[str] = ..., device: _Optional[str] = ..., peer: _Optional[str] = ..., epoch: _Optional[str] = ..., kind: _Optional[_Union[StoreKind, str]] = ..., security_level: _Optional[int] = ..., peer_epoch: _Optional[str] = ..., received_seq: _Optional[int] = ..., batch_size: _Optional[int] = ..., batch_bytes: _Optional[int] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("version", "epoch", "kind", "security_level", "received_seq", "may_pull", "batch_size", "batch_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAY_PULL_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    epoch: str
    kind: StoreKind
    security_level: int
    received_seq: int
    may_pull: bool
    batch_size: int
    batch_bytes: int
    def __init__(self, version: _Optional[int] = ..., epoch: _Optional[str] = ..., kind: _Optional[_Union[StoreKind, str]] = ..., security_level: _Optional[int] = ..., received_seq: _Optional[int] = ..., may_pull: _Optional[bool] = ..., batch_size: _Optional[int] = ..., batch_bytes: _Optional[int] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("store_id", "epoch", "peer_epoch", "since_seq", "last_seq", "changes")
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PEER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    store_id: str
    epoch: str
    peer_epoch: str
    since_seq: int
    last_seq: int
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, store_id: _Optional[str] = ..., epoch: _Optional[str] = ..., peer_epoch: _Optional[str] = ..., since_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("store_id", "received_seq", "applied")
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_SEQ_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    store_id: str
    received_seq: int
    applied: int
    def __init__(self, store_id: _Optional[str] = ..., received_seq: _Optional[int] = ..., applied: _Optional[int] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("store_id", "epoch", "peer_epoch", "since_seq", "batch_size", "batch_bytes")
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PEER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    store_id: str
    epoch: str
    peer_epoch: str
    since_seq: int
    batch_size: int
    batch_bytes: int
    def __init__(self, store_id: _Optional[str] = ..., epoch: _Optional[str] = ..., peer_epoch: _Optional[str] = ..., since_seq: _Optional[int] = ..., batch_size: _Optional[int] = ..., batch_bytes: _Optional[int] = ...) -> None: ...

class PullResponse(_message.Message):
    __slots__ = ("store_id", "epoch", "since_seq", "last_seq", "changes")
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    store_id: str
    epoch: str
    since_seq: int
    last_seq: int
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, store_id: _Optional[str] = ..., epoch: _Optional[str] = ..., since_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

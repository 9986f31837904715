from udmf.v1 import udmf_pb2 as _udmf_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FetchDataRequest(_message.Message):
    __slots__ = ("key", "reader")
    KEY_FIELD_NUMBER: _ClassVar[int]
    READER_FIELD_NUMBER: _ClassVar[int]
    key: str
    reader: str
    def __init__(self, key: _Optional[str] = ..., reader: _Optional[str] = ...) -> None: ...

class UdmfDescriptor(_message.Message):
    __slots__ = ("version", "origin", "intention", "writer", "visibility", "share_options", "tag", "extras_json", "timestamp_ms", "created_at", "expires_at", "record_count", "summary", "total_size", "carries_data", "entries")
    class SummaryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    INTENTION_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    SHARE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CARRIES_DATA_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    version: int
    origin: str
    intention: str
    writer: str
    visibility: str
    share_options: str
    tag: str
    extras_json: str
    timestamp_ms: int
    created_at: float
    expires_at: float
    record_count: int
    summary: _containers.ScalarMap[str, int]
    total_size: int
    carries_data: bool
    entries: _containers.RepeatedCompositeFieldContainer[InlineEntry]
    def __init__(self, version: _Optional[int] = ..., origin: _Optional[str] = ..., intention: _Optional[str] = ..., writer: _Optional[str] = ..., visibility: _Optional[str] = ..., share_options: _Optional[str] = ..., tag: _Optional[str] = ..., extras_json: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., record_count: _Optional[int] = ..., summary: _Optional[_Mapping[str, int]] = ..., total_size: _Optional[int] = ..., carries_data: _Optional[bool] = ..., entries: _Optional[_Iterable[_Union[InlineEntry, _Mapping]]] = ...) -> None: ...

class InlineEntry(_message.Message):
    __slots__ = ("record", "type", "value", "blob_size", "blob_field", "blob_text", "blob")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BLOB_SIZE_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_FIELD_NUMBER: _ClassVar[int]
    BLOB_TEXT_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    record: int
    type: str
    value: bytes
    blob_size: int
    blob_field: str
    blob_text: bool
    blob: bytes
    def __init__(self, record: _Optional[int] = ..., type: _Optional[str] = ..., value: _Optional[bytes] = ..., blob_size: _Optional[int] = ..., blob_field: _Optional[str] = ..., blob_text: _Optional[bool] = ..., blob: _Optional[bytes] = ...) -> None: ...

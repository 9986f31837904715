from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Intention(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTENTION_UNSPECIFIED: _ClassVar[Intention]
    INTENTION_DATA_HUB: _ClassVar[Intention]
    INTENTION_DRAG: _ClassVar[Intention]
    INTENTION_SYSTEM_SHARE: _ClassVar[Intention]
    INTENTION_PICKER: _ClassVar[Intention]
    INTENTION_MENU: _ClassVar[Intention]

class ShareOptions(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARE_OPTIONS_UNSPECIFIED: _ClassVar[ShareOptions]
    SHARE_OPTIONS_IN_APP: _ClassVar[ShareOptions]
    SHARE_OPTIONS_CROSS_APP: _ClassVar[ShareOptions]
    SHARE_OPTIONS_CROSS_DEVICE: _ClassVar[ShareOptions]

class Visibility(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VISIBILITY_UNSPECIFIED: _ClassVar[Visibility]
    VISIBILITY_ALL: _ClassVar[Visibility]
    VISIBILITY_OWN_PROCESS: _ClassVar[Visibility]
INTENTION_UNSPECIFIED: Intention
INTENTION_DATA_HUB: Intention
INTENTION_DRAG: Intention
INTENTION_SYSTEM_SHARE: Intention
INTENTION_PICKER: Intention
INTENTION_MENU: Intention
SHARE_OPTIONS_UNSPECIFIED: ShareOptions
SHARE_OPTIONS_IN_APP: ShareOptions
SHARE_OPTIONS_CROSS_APP: ShareOptions
SHARE_OPTIONS_CROSS_DEVICE: ShareOptions
VISIBILITY_UNSPECIFIED: Visibility
VISIBILITY_ALL: Visibility
VISIBILITY_OWN_PROCESS: Visibility

class Value(_message.Message):
    __slots__ = ("null_value", "int_value", "double_value", "string_value", "bool_value", "bytes_value", "object_value")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_VALUE_FIELD_NUMBER: _ClassVar[int]
    null_value: bool
    int_value: int
    double_value: float
    string_value: str
    bool_value: bool
    bytes_value: bytes
    object_value: Object
    def __init__(self, null_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ..., bytes_value: _Optional[bytes] = ..., object_value: _Optional[_Union[Object, _Mapping]] = ...) -> None: ...

class Object(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.MessageMap[str, Value]
    def __init__(self, fields: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class Properties(_message.Message):
    __slots__ = ("tag", "extras", "timestamp_ms", "share_options")
    class ExtrasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    TAG_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    SHARE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    tag: str
    extras: _containers.MessageMap[str, Value]
    timestamp_ms: int
    share_options: ShareOptions
    def __init__(self, tag: _Optional[str] = ..., extras: _Optional[_Mapping[str, Value]] = ..., timestamp_ms: _Optional[int] = ..., share_options: _Optional[_Union[ShareOptions, str]] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("summary", "total_size")
    class SummaryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    summary: _containers.ScalarMap[str, int]
    total_size: int
    def __init__(self, summary: _Optional[_Mapping[str, int]] = ..., total_size: _Optional[int] = ...) -> None: ...

class DataHeader(_message.Message):
    __slots__ = ("properties", "record_count", "key", "intention", "writer", "summary", "device")
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    INTENTION_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    properties: Properties
    record_count: int
    key: str
    intention: Intention
    writer: str
    summary: Summary
    device: str
    def __init__(self, properties: _Optional[_Union[Properties, _Mapping]] = ..., record_count: _Optional[int] = ..., key: _Optional[str] = ..., intention: _Optional[_Union[Intention, str]] = ..., writer: _Optional[str] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ..., device: _Optional[str] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("record", "type", "value", "blob_size", "blob_field", "blob_text")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BLOB_SIZE_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_FIELD_NUMBER: _ClassVar[int]
    BLOB_TEXT_FIELD_NUMBER: _ClassVar[int]
    record: int
    type: str
    value: Value
    blob_size: int
    blob_field: str
    blob_text: bool
    def __init__(self, record: _Optional[int] = ..., type: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., blob_size: _Optional[int] = ..., blob_field: _Optional[str] = ..., blob_text: _Optional[bool] = ...) -> None: ...

class DataPart(_message.Message):
    __slots__ = ("header", "entry", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DataHeader
    entry: Entry
    chunk: bytes
    def __init__(self, header: _Optional[_Union[DataHeader, _Mapping]] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class WriteOptions(_message.Message):
    __slots__ = ("intention", "visibility", "key")
    INTENTION_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    intention: Intention
    visibility: Visibility
    key: str
    def __init__(self, intention: _Optional[_Union[Intention, str]] = ..., visibility: _Optional[_Union[Visibility, str]] = ..., key: _Optional[str] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("options", "part")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    options: WriteOptions
    part: DataPart
    def __init__(self, options: _Optional[_Union[WriteOptions, _Mapping]] = ..., part: _Optional[_Union[DataPart, _Mapping]] = ...) -> None: ...

class InsertDataResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class UpdateDataResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueryDataRequest(_message.Message):
    __slots__ = ("key", "intention")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INTENTION_FIELD_NUMBER: _ClassVar[int]
    key: str
    intention: Intention
    def __init__(self, key: _Optional[str] = ..., intention: _Optional[_Union[Intention, str]] = ...) -> None: ...

class DeleteDataRequest(_message.Message):
    __slots__ = ("key", "intention")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INTENTION_FIELD_NUMBER: _ClassVar[int]
    key: str
    intention: Intention
    def __init__(self, key: _Optional[str] = ..., intention: _Optional[_Union[Intention, str]] = ...) -> None: ...

class GetDataRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("part", "progress")
    PART_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    part: DataPart
    progress: int
    def __init__(self, part: _Optional[_Union[DataPart, _Mapping]] = ..., progress: _Optional[int] = ...) -> None: ...

class GetSummaryRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetSummaryResponse(_message.Message):
    __slots__ = ("summary", "header")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    summary: Summary
    header: DataHeader
    def __init__(self, summary: _Optional[_Union[Summary, _Mapping]] = ..., header: _Optional[_Union[DataHeader, _Mapping]] = ...) -> None: ...

class SetDragDataResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class LazyDragStart(_message.Message):
    __slots__ = ("properties", "record_count", "summary")
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    properties: Properties
    record_count: int
    summary: Summary
    def __init__(self, properties: _Optional[_Union[Properties, _Mapping]] = ..., record_count: _Optional[int] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ...) -> None: ...

class LoadDone(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LazySourceMessage(_message.Message):
    __slots__ = ("start", "part", "done")
    START_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    start: LazyDragStart
    part: DataPart
    done: LoadDone
    def __init__(self, start: _Optional[_Union[LazyDragStart, _Mapping]] = ..., part: _Optional[_Union[DataPart, _Mapping]] = ..., done: _Optional[_Union[LoadDone, _Mapping]] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("key", "target")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    key: str
    target: str
    def __init__(self, key: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class LazySourceEvent(_message.Message):
    __slots__ = ("key", "load")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    key: str
    load: LoadRequest
    def __init__(self, key: _Optional[str] = ..., load: _Optional[_Union[LoadRequest, _Mapping]] = ...) -> None: ...

class GrantAccessRequest(_message.Message):
    __slots__ = ("key", "bundle", "keep")
    KEY_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    key: str
    bundle: str
    keep: bool
    def __init__(self, key: _Optional[str] = ..., bundle: _Optional[str] = ..., keep: _Optional[bool] = ...) -> None: ...

class GrantAccessResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TypeDescriptor(_message.Message):
    __slots__ = ("type_id", "belonging_to_types", "description", "reference_url", "icon_file", "filename_extensions", "mime_types", "owner_bundle")
    TYPE_ID_FIELD_NUMBER: _ClassVar[int]
    BELONGING_TO_TYPES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_URL_FIELD_NUMBER: _ClassVar[int]
    ICON_FILE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPES_FIELD_NUMBER: _ClassVar[int]
    OWNER_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    type_id: str
    belonging_to_types: _containers.RepeatedScalarFieldContainer[str]
    description: str
    reference_url: str
    icon_file: str
    filename_extensions: _containers.RepeatedScalarFieldContainer[str]
    mime_types: _containers.RepeatedScalarFieldContainer[str]
    owner_bundle: str
    def __init__(self, type_id: _Optional[str] = ..., belonging_to_types: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., reference_url: _Optional[str] = ..., icon_file: _Optional[str] = ..., filename_extensions: _Optional[_Iterable[str]] = ..., mime_types: _Optional[_Iterable[str]] = ..., owner_bundle: _Optional[str] = ...) -> None: ...

class QueryTypesRequest(_message.Message):
    __slots__ = ("type_id", "filename_extension", "mime_type", "belongs_to", "all")
    TYPE_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    BELONGS_TO_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    type_id: str
    filename_extension: str
    mime_type: str
    belongs_to: str
    all: bool
    def __init__(self, type_id: _Optional[str] = ..., filename_extension: _Optional[str] = ..., mime_type: _Optional[str] = ..., belongs_to: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class QueryTypesResponse(_message.Message):
    __slots__ = ("types",)
    TYPES_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedCompositeFieldContainer[TypeDescriptor]
    def __init__(self, types: _Optional[_Iterable[_Union[TypeDescriptor, _Mapping]]] = ...) -> None: ...

class RegisterTypesRequest(_message.Message):
    __slots__ = ("types",)
    TYPES_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedCompositeFieldContainer[TypeDescriptor]
    def __init__(self, types: _Optional[_Iterable[_Union[TypeDescriptor, _Mapping]]] = ...) -> None: ...

class RegisterTypesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnregisterTypesRequest(_message.Message):
    __slots__ = ("type_ids",)
    TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    type_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UnregisterTypesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

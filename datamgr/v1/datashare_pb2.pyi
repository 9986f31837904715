from datamgr.v1 import kv_pb2 as _kv_pb2
from datamgr.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredicateOpType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREDICATE_OP_TYPE_UNSPECIFIED: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_EQUAL_TO: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_NOT_EQUAL_TO: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_GREATER_THAN: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_LESS_THAN: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_GREATER_THAN_OR_EQUAL_TO: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_LESS_THAN_OR_EQUAL_TO: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_AND: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_OR: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_BEGIN_WRAP: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_END_WRAP: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_LIKE: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_UNLIKE: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_GLOB: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_CONTAINS: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_BEGINS_WITH: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_ENDS_WITH: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_IS_NULL: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_IS_NOT_NULL: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_IN: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_NOT_IN: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_BETWEEN: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_NOT_BETWEEN: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_ORDER_BY_ASC: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_ORDER_BY_DESC: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_LIMIT: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_DISTINCT: _ClassVar[PredicateOpType]
    PREDICATE_OP_TYPE_GROUP_BY: _ClassVar[PredicateOpType]

class ChangeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_TYPE_UNSPECIFIED: _ClassVar[ChangeType]
    CHANGE_TYPE_INSERT: _ClassVar[ChangeType]
    CHANGE_TYPE_DELETE: _ClassVar[ChangeType]
    CHANGE_TYPE_UPDATE: _ClassVar[ChangeType]

class RetrieveMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVE_MODE_UNSPECIFIED: _ClassVar[RetrieveMode]
    RETRIEVE_MODE_VECTOR: _ClassVar[RetrieveMode]
    RETRIEVE_MODE_FULLTEXT: _ClassVar[RetrieveMode]
    RETRIEVE_MODE_HYBRID: _ClassVar[RetrieveMode]
PREDICATE_OP_TYPE_UNSPECIFIED: PredicateOpType
PREDICATE_OP_TYPE_EQUAL_TO: PredicateOpType
PREDICATE_OP_TYPE_NOT_EQUAL_TO: PredicateOpType
PREDICATE_OP_TYPE_GREATER_THAN: PredicateOpType
PREDICATE_OP_TYPE_LESS_THAN: PredicateOpType
PREDICATE_OP_TYPE_GREATER_THAN_OR_EQUAL_TO: PredicateOpType
PREDICATE_OP_TYPE_LESS_THAN_OR_EQUAL_TO: PredicateOpType
PREDICATE_OP_TYPE_AND: PredicateOpType
PREDICATE_OP_TYPE_OR: PredicateOpType
PREDICATE_OP_TYPE_BEGIN_WRAP: PredicateOpType
PREDICATE_OP_TYPE_END_WRAP: PredicateOpType
PREDICATE_OP_TYPE_LIKE: PredicateOpType
PREDICATE_OP_TYPE_UNLIKE: PredicateOpType
PREDICATE_OP_TYPE_GLOB: PredicateOpType
PREDICATE_OP_TYPE_CONTAINS: PredicateOpType
PREDICATE_OP_TYPE_BEGINS_WITH: PredicateOpType
PREDICATE_OP_TYPE_ENDS_WITH: PredicateOpType
PREDICATE_OP_TYPE_IS_NULL: PredicateOpType
PREDICATE_OP_TYPE_IS_NOT_NULL: PredicateOpType
PREDICATE_OP_TYPE_IN: PredicateOpType
PREDICATE_OP_TYPE_NOT_IN: PredicateOpType
PREDICATE_OP_TYPE_BETWEEN: PredicateOpType
PREDICATE_OP_TYPE_NOT_BETWEEN: PredicateOpType
PREDICATE_OP_TYPE_ORDER_BY_ASC: PredicateOpType
PREDICATE_OP_TYPE_ORDER_BY_DESC: PredicateOpType
PREDICATE_OP_TYPE_LIMIT: PredicateOpType
PREDICATE_OP_TYPE_DISTINCT: PredicateOpType
PREDICATE_OP_TYPE_GROUP_BY: PredicateOpType
CHANGE_TYPE_UNSPECIFIED: ChangeType
CHANGE_TYPE_INSERT: ChangeType
CHANGE_TYPE_DELETE: ChangeType
CHANGE_TYPE_UPDATE: ChangeType
RETRIEVE_MODE_UNSPECIFIED: RetrieveMode
RETRIEVE_MODE_VECTOR: RetrieveMode
RETRIEVE_MODE_FULLTEXT: RetrieveMode
RETRIEVE_MODE_HYBRID: RetrieveMode

class PredicateOp(_message.Message):
    __slots__ = ("type", "field", "values", "fields")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    type: PredicateOpType
    field: str
    values: _containers.RepeatedCompositeFieldContainer[_types_pb2.Value]
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[_Union[PredicateOpType, str]] = ..., field: _Optional[str] = ..., values: _Optional[_Iterable[_Union[_types_pb2.Value, _Mapping]]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class Predicates(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[PredicateOp]
    def __init__(self, ops: _Optional[_Iterable[_Union[PredicateOp, _Mapping]]] = ...) -> None: ...

class RegisterProviderRequest(_message.Message):
    __slots__ = ("manifest_json",)
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    manifest_json: str
    def __init__(self, manifest_json: _Optional[str] = ...) -> None: ...

class RegisterProviderResponse(_message.Message):
    __slots__ = ("uris", "added_columns")
    URIS_FIELD_NUMBER: _ClassVar[int]
    ADDED_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    uris: _containers.RepeatedScalarFieldContainer[str]
    added_columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, uris: _Optional[_Iterable[str]] = ..., added_columns: _Optional[_Iterable[str]] = ...) -> None: ...

class InsertRequest(_message.Message):
    __slots__ = ("uri", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _types_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...
    URI_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    uri: str
    values: _containers.MessageMap[str, _types_pb2.Value]
    def __init__(self, uri: _Optional[str] = ..., values: _Optional[_Mapping[str, _types_pb2.Value]] = ...) -> None: ...

class InsertResponse(_message.Message):
    __slots__ = ("row_id",)
    ROW_ID_FIELD_NUMBER: _ClassVar[int]
    row_id: int
    def __init__(self, row_id: _Optional[int] = ...) -> None: ...

class BatchInsertRequest(_message.Message):
    __slots__ = ("uri", "columns", "rows")
    URI_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _types_pb2.Page
    def __init__(self, uri: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Union[_types_pb2.Page, _Mapping]] = ...) -> None: ...

class BatchInsertResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("uri", "predicates", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _types_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...
    URI_FIELD_NUMBER: _ClassVar[int]
    PREDICATES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    uri: str
    predicates: Predicates
    values: _containers.MessageMap[str, _types_pb2.Value]
    def __init__(self, uri: _Optional[str] = ..., predicates: _Optional[_Union[Predicates, _Mapping]] = ..., values: _Optional[_Mapping[str, _types_pb2.Value]] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("uri", "predicates")
    URI_FIELD_NUMBER: _ClassVar[int]
    PREDICATES_FIELD_NUMBER: _ClassVar[int]
    uri: str
    predicates: Predicates
    def __init__(self, uri: _Optional[str] = ..., predicates: _Optional[_Union[Predicates, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class UpdateOperation(_message.Message):
    __slots__ = ("values", "predicates")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _types_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    PREDICATES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.MessageMap[str, _types_pb2.Value]
    predicates: Predicates
    def __init__(self, values: _Optional[_Mapping[str, _types_pb2.Value]] = ..., predicates: _Optional[_Union[Predicates, _Mapping]] = ...) -> None: ...

class UriUpdateOperations(_message.Message):
    __slots__ = ("uri", "operations")
    URI_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    operations: _containers.RepeatedCompositeFieldContainer[UpdateOperation]
    def __init__(self, uri: _Optional[str] = ..., operations: _Optional[_Iterable[_Union[UpdateOperation, _Mapping]]] = ...) -> None: ...

class BatchUpdateRequest(_message.Message):
    __slots__ = ("operations",)
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[UriUpdateOperations]
    def __init__(self, operations: _Optional[_Iterable[_Union[UriUpdateOperations, _Mapping]]] = ...) -> None: ...

class UriUpdateResults(_message.Message):
    __slots__ = ("uri", "counts")
    URI_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, uri: _Optional[str] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class BatchUpdateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[UriUpdateResults]
    def __init__(self, results: _Optional[_Iterable[_Union[UriUpdateResults, _Mapping]]] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("uri", "predicates", "columns", "page_rows")
    URI_FIELD_NUMBER: _ClassVar[int]
    PREDICATES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PAGE_ROWS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    predicates: Predicates
    columns: _containers.RepeatedScalarFieldContainer[str]
    page_rows: int
    def __init__(self, uri: _Optional[str] = ..., predicates: _Optional[_Union[Predicates, _Mapping]] = ..., columns: _Optional[_Iterable[str]] = ..., page_rows: _Optional[int] = ...) -> None: ...

class ColumnInfo(_message.Message):
    __slots__ = ("name", "type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: _types_pb2.DataType
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[_types_pb2.DataType, str]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("columns", "page")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnInfo]
    page: _types_pb2.Page
    def __init__(self, columns: _Optional[_Iterable[_Union[ColumnInfo, _Mapping]]] = ..., page: _Optional[_Union[_types_pb2.Page, _Mapping]] = ...) -> None: ...

class ValuesBucket(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _types_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.MessageMap[str, _types_pb2.Value]
    def __init__(self, values: _Optional[_Mapping[str, _types_pb2.Value]] = ...) -> None: ...

class ChangeInfo(_message.Message):
    __slots__ = ("type", "uri", "values", "device_id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    type: ChangeType
    uri: str
    values: _containers.RepeatedCompositeFieldContainer[ValuesBucket]
    device_id: str
    def __init__(self, type: _Optional[_Union[ChangeType, str]] = ..., uri: _Optional[str] = ..., values: _Optional[_Iterable[_Union[ValuesBucket, _Mapping]]] = ..., device_id: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("uri",)
    URI_FIELD_NUMBER: _ClassVar[int]
    uri: str
    def __init__(self, uri: _Optional[str] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("subscribed", "change")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    subscribed: Subscribed
    change: ChangeInfo
    def __init__(self, subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., change: _Optional[_Union[ChangeInfo, _Mapping]] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("uri", "device_ids", "mode")
    URI_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    uri: str
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    mode: _kv_pb2.KvSyncMode
    def __init__(self, uri: _Optional[str] = ..., device_ids: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[_kv_pb2.KvSyncMode, str]] = ...) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[_kv_pb2.KvDeviceSyncStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[_kv_pb2.KvDeviceSyncStatus, _Mapping]]] = ...) -> None: ...

class PublishedItem(_message.Message):
    __slots__ = ("key", "text", "blob", "subscriber_id")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_ID_FIELD_NUMBER: _ClassVar[int]
    key: str
    text: str
    blob: bytes
    subscriber_id: str
    def __init__(self, key: _Optional[str] = ..., text: _Optional[str] = ..., blob: _Optional[bytes] = ..., subscriber_id: _Optional[str] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("bundle", "items", "version")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    items: _containers.RepeatedCompositeFieldContainer[PublishedItem]
    version: int
    def __init__(self, bundle: _Optional[str] = ..., items: _Optional[_Iterable[_Union[PublishedItem, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class OperationResult(_message.Message):
    __slots__ = ("key", "result", "message")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    key: str
    result: int
    message: str
    def __init__(self, key: _Optional[str] = ..., result: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[OperationResult]
    def __init__(self, results: _Optional[_Iterable[_Union[OperationResult, _Mapping]]] = ...) -> None: ...

class GetPublishedDataRequest(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    def __init__(self, bundle: _Optional[str] = ...) -> None: ...

class GetPublishedDataResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PublishedItem]
    def __init__(self, items: _Optional[_Iterable[_Union[PublishedItem, _Mapping]]] = ...) -> None: ...

class SubscribePublishedDataRequest(_message.Message):
    __slots__ = ("uris", "subscriber_id")
    URIS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_ID_FIELD_NUMBER: _ClassVar[int]
    uris: _containers.RepeatedScalarFieldContainer[str]
    subscriber_id: str
    def __init__(self, uris: _Optional[_Iterable[str]] = ..., subscriber_id: _Optional[str] = ...) -> None: ...

class PublishedDataChange(_message.Message):
    __slots__ = ("bundle", "data")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    data: _containers.RepeatedCompositeFieldContainer[PublishedItem]
    def __init__(self, bundle: _Optional[str] = ..., data: _Optional[_Iterable[_Union[PublishedItem, _Mapping]]] = ...) -> None: ...

class SubscribePublishedDataResponse(_message.Message):
    __slots__ = ("subscribed", "change")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    subscribed: Subscribed
    change: PublishedDataChange
    def __init__(self, subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., change: _Optional[_Union[PublishedDataChange, _Mapping]] = ...) -> None: ...

class ProviderHello(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProviderError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ProviderQueryResult(_message.Message):
    __slots__ = ("columns", "page")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnInfo]
    page: _types_pb2.Page
    def __init__(self, columns: _Optional[_Iterable[_Union[ColumnInfo, _Mapping]]] = ..., page: _Optional[_Union[_types_pb2.Page, _Mapping]] = ...) -> None: ...

class ProviderReply(_message.Message):
    __slots__ = ("call_id", "row_id", "count", "query", "batch_update", "error")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ROW_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    BATCH_UPDATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    row_id: int
    count: int
    query: ProviderQueryResult
    batch_update: BatchUpdateResponse
    error: ProviderError
    def __init__(self, call_id: _Optional[int] = ..., row_id: _Optional[int] = ..., count: _Optional[int] = ..., query: _Optional[_Union[ProviderQueryResult, _Mapping]] = ..., batch_update: _Optional[_Union[BatchUpdateResponse, _Mapping]] = ..., error: _Optional[_Union[ProviderError, _Mapping]] = ...) -> None: ...

class ProviderMessage(_message.Message):
    __slots__ = ("hello", "reply")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    hello: ProviderHello
    reply: ProviderReply
    def __init__(self, hello: _Optional[_Union[ProviderHello, _Mapping]] = ..., reply: _Optional[_Union[ProviderReply, _Mapping]] = ...) -> None: ...

class ProviderAttached(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    def __init__(self, bundle: _Optional[str] = ...) -> None: ...

class ProviderCall(_message.Message):
    __slots__ = ("call_id", "caller", "attached", "insert", "batch_insert", "update", "delete", "query", "batch_update")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    INSERT_FIELD_NUMBER: _ClassVar[int]
    BATCH_INSERT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    BATCH_UPDATE_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    caller: str
    attached: ProviderAttached
    insert: InsertRequest
    batch_insert: BatchInsertRequest
    update: UpdateRequest
    delete: DeleteRequest
    query: QueryRequest
    batch_update: BatchUpdateRequest
    def __init__(self, call_id: _Optional[int] = ..., caller: _Optional[str] = ..., attached: _Optional[_Union[ProviderAttached, _Mapping]] = ..., insert: _Optional[_Union[InsertRequest, _Mapping]] = ..., batch_insert: _Optional[_Union[BatchInsertRequest, _Mapping]] = ..., update: _Optional[_Union[UpdateRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteRequest, _Mapping]] = ..., query: _Optional[_Union[QueryRequest, _Mapping]] = ..., batch_update: _Optional[_Union[BatchUpdateRequest, _Mapping]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("uri", "query", "k", "predicates", "mode", "column", "columns")
    URI_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    PREDICATES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    query: str
    k: int
    predicates: Predicates
    mode: RetrieveMode
    column: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, uri: _Optional[str] = ..., query: _Optional[str] = ..., k: _Optional[int] = ..., predicates: _Optional[_Union[Predicates, _Mapping]] = ..., mode: _Optional[_Union[RetrieveMode, str]] = ..., column: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ...) -> None: ...

class RetrievedRow(_message.Message):
    __slots__ = ("row_id", "score", "values", "column")
    ROW_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    row_id: int
    score: float
    values: ValuesBucket
    column: str
    def __init__(self, row_id: _Optional[int] = ..., score: _Optional[float] = ..., values: _Optional[_Union[ValuesBucket, _Mapping]] = ..., column: _Optional[str] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("rows", "pending")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[RetrievedRow]
    pending: int
    def __init__(self, rows: _Optional[_Iterable[_Union[RetrievedRow, _Mapping]]] = ..., pending: _Optional[int] = ...) -> None: ...

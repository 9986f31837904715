from datamgr.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KvStoreType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KV_STORE_TYPE_UNSPECIFIED: _ClassVar[KvStoreType]
    KV_STORE_TYPE_DEVICE_COLLABORATION: _ClassVar[KvStoreType]
    KV_STORE_TYPE_SINGLE_VERSION: _ClassVar[KvStoreType]

class SecurityLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECURITY_LEVEL_UNSPECIFIED: _ClassVar[SecurityLevel]
    SECURITY_LEVEL_S1: _ClassVar[SecurityLevel]
    SECURITY_LEVEL_S2: _ClassVar[SecurityLevel]
    SECURITY_LEVEL_S3: _ClassVar[SecurityLevel]
    SECURITY_LEVEL_S4: _ClassVar[SecurityLevel]

class SubscribeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIBE_TYPE_UNSPECIFIED: _ClassVar[SubscribeType]
    SUBSCRIBE_TYPE_LOCAL: _ClassVar[SubscribeType]
    SUBSCRIBE_TYPE_REMOTE: _ClassVar[SubscribeType]
    SUBSCRIBE_TYPE_ALL: _ClassVar[SubscribeType]

class KvQueryOpType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KV_QUERY_OP_TYPE_UNSPECIFIED: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_EQUAL_TO: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_NOT_EQUAL_TO: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_GREATER_THAN: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_LESS_THAN: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_GREATER_THAN_OR_EQUAL_TO: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_LESS_THAN_OR_EQUAL_TO: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_IS_NULL: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_IS_NOT_NULL: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_IN_NUMBER: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_IN_STRING: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_NOT_IN_NUMBER: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_NOT_IN_STRING: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_LIKE: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_UNLIKE: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_AND: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_OR: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_BEGIN_GROUP: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_END_GROUP: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_ORDER_BY_ASC: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_ORDER_BY_DESC: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_LIMIT: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_PREFIX_KEY: _ClassVar[KvQueryOpType]
    KV_QUERY_OP_TYPE_DEVICE_ID: _ClassVar[KvQueryOpType]

class KvSyncMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KV_SYNC_MODE_UNSPECIFIED: _ClassVar[KvSyncMode]
    KV_SYNC_MODE_PULL_ONLY: _ClassVar[KvSyncMode]
    KV_SYNC_MODE_PUSH_ONLY: _ClassVar[KvSyncMode]
    KV_SYNC_MODE_PUSH_PULL: _ClassVar[KvSyncMode]

class KvSyncCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KV_SYNC_CODE_UNSPECIFIED: _ClassVar[KvSyncCode]
    KV_SYNC_CODE_OK: _ClassVar[KvSyncCode]
    KV_SYNC_CODE_PARTIAL: _ClassVar[KvSyncCode]
    KV_SYNC_CODE_SKIPPED: _ClassVar[KvSyncCode]
    KV_SYNC_CODE_ERROR: _ClassVar[KvSyncCode]
KV_STORE_TYPE_UNSPECIFIED: KvStoreType
KV_STORE_TYPE_DEVICE_COLLABORATION: KvStoreType
KV_STORE_TYPE_SINGLE_VERSION: KvStoreType
SECURITY_LEVEL_UNSPECIFIED: SecurityLevel
SECURITY_LEVEL_S1: SecurityLevel
SECURITY_LEVEL_S2: SecurityLevel
SECURITY_LEVEL_S3: SecurityLevel
SECURITY_LEVEL_S4: SecurityLevel
SUBSCRIBE_TYPE_UNSPECIFIED: SubscribeType
SUBSCRIBE_TYPE_LOCAL: SubscribeType
SUBSCRIBE_TYPE_REMOTE: SubscribeType
SUBSCRIBE_TYPE_ALL: SubscribeType
KV_QUERY_OP_TYPE_UNSPECIFIED: KvQueryOpType
KV_QUERY_OP_TYPE_EQUAL_TO: KvQueryOpType
KV_QUERY_OP_TYPE_NOT_EQUAL_TO: KvQueryOpType
KV_QUERY_OP_TYPE_GREATER_THAN: KvQueryOpType
KV_QUERY_OP_TYPE_LESS_THAN: KvQueryOpType
KV_QUERY_OP_TYPE_GREATER_THAN_OR_EQUAL_TO: KvQueryOpType
KV_QUERY_OP_TYPE_LESS_THAN_OR_EQUAL_TO: KvQueryOpType
KV_QUERY_OP_TYPE_IS_NULL: KvQueryOpType
KV_QUERY_OP_TYPE_IS_NOT_NULL: KvQueryOpType
KV_QUERY_OP_TYPE_IN_NUMBER: KvQueryOpType
KV_QUERY_OP_TYPE_IN_STRING: KvQueryOpType
KV_QUERY_OP_TYPE_NOT_IN_NUMBER: KvQueryOpType
KV_QUERY_OP_TYPE_NOT_IN_STRING: KvQueryOpType
KV_QUERY_OP_TYPE_LIKE: KvQueryOpType
KV_QUERY_OP_TYPE_UNLIKE: KvQueryOpType
KV_QUERY_OP_TYPE_AND: KvQueryOpType
KV_QUERY_OP_TYPE_OR: KvQueryOpType
KV_QUERY_OP_TYPE_BEGIN_GROUP: KvQueryOpType
KV_QUERY_OP_TYPE_END_GROUP: KvQueryOpType
KV_QUERY_OP_TYPE_ORDER_BY_ASC: KvQueryOpType
KV_QUERY_OP_TYPE_ORDER_BY_DESC: KvQueryOpType
KV_QUERY_OP_TYPE_LIMIT: KvQueryOpType
KV_QUERY_OP_TYPE_PREFIX_KEY: KvQueryOpType
KV_QUERY_OP_TYPE_DEVICE_ID: KvQueryOpType
KV_SYNC_MODE_UNSPECIFIED: KvSyncMode
KV_SYNC_MODE_PULL_ONLY: KvSyncMode
KV_SYNC_MODE_PUSH_ONLY: KvSyncMode
KV_SYNC_MODE_PUSH_PULL: KvSyncMode
KV_SYNC_CODE_UNSPECIFIED: KvSyncCode
KV_SYNC_CODE_OK: KvSyncCode
KV_SYNC_CODE_PARTIAL: KvSyncCode
KV_SYNC_CODE_SKIPPED: KvSyncCode
KV_SYNC_CODE_ERROR: KvSyncCode

class KvStoreInfo(_message.Message):
    __slots__ = ("name", "kind", "security_level")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: KvStoreType
    security_level: SecurityLevel
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[KvStoreType, str]] = ..., security_level: _Optional[_Union[SecurityLevel, str]] = ...) -> None: ...

class KvEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: _types_pb2.Value
    def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...

class KvQueryOp(_message.Message):
    __slots__ = ("type", "field", "values")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    type: KvQueryOpType
    field: str
    values: _containers.RepeatedCompositeFieldContainer[_types_pb2.Value]
    def __init__(self, type: _Optional[_Union[KvQueryOpType, str]] = ..., field: _Optional[str] = ..., values: _Optional[_Iterable[_Union[_types_pb2.Value, _Mapping]]] = ...) -> None: ...

class KvQuery(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[KvQueryOp]
    def __init__(self, ops: _Optional[_Iterable[_Union[KvQueryOp, _Mapping]]] = ...) -> None: ...

class GetKvStoreRequest(_message.Message):
    __slots__ = ("store", "kind", "security_level", "create_if_missing")
    STORE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CREATE_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
    store: str
    kind: KvStoreType
    security_level: SecurityLevel
    create_if_missing: bool
    def __init__(self, store: _Optional[str] = ..., kind: _Optional[_Union[KvStoreType, str]] = ..., security_level: _Optional[_Union[SecurityLevel, str]] = ..., create_if_missing: _Optional[bool] = ...) -> None: ...

class GetKvStoreResponse(_message.Message):
    __slots__ = ("store", "local_device_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    store: KvStoreInfo
    local_device_id: str
    def __init__(self, store: _Optional[_Union[KvStoreInfo, _Mapping]] = ..., local_device_id: _Optional[str] = ...) -> None: ...

class CloseKvStoreRequest(_message.Message):
    __slots__ = ("store",)
    STORE_FIELD_NUMBER: _ClassVar[int]
    store: str
    def __init__(self, store: _Optional[str] = ...) -> None: ...

class CloseKvStoreResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteKvStoreRequest(_message.Message):
    __slots__ = ("store",)
    STORE_FIELD_NUMBER: _ClassVar[int]
    store: str
    def __init__(self, store: _Optional[str] = ...) -> None: ...

class DeleteKvStoreResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKvStoresRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKvStoresResponse(_message.Message):
    __slots__ = ("stores",)
    STORES_FIELD_NUMBER: _ClassVar[int]
    stores: _containers.RepeatedCompositeFieldContainer[KvStoreInfo]
    def __init__(self, stores: _Optional[_Iterable[_Union[KvStoreInfo, _Mapping]]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("store", "key", "value", "transaction_id", "device_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    key: str
    value: _types_pb2.Value
    transaction_id: str
    device_id: str
    def __init__(self, store: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Value, _Mapping]] = ..., transaction_id: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PutBatchRequest(_message.Message):
    __slots__ = ("store", "entries", "transaction_id", "device_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    entries: _containers.RepeatedCompositeFieldContainer[KvEntry]
    transaction_id: str
    device_id: str
    def __init__(self, store: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[KvEntry, _Mapping]]] = ..., transaction_id: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class PutBatchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("store", "key", "device_id", "transaction_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    key: str
    device_id: str
    transaction_id: str
    def __init__(self, store: _Optional[str] = ..., key: _Optional[str] = ..., device_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: _types_pb2.Value
    def __init__(self, value: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...

class KvStoreServiceDeleteRequest(_message.Message):
    __slots__ = ("store", "key", "transaction_id", "device_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    key: str
    transaction_id: str
    device_id: str
    def __init__(self, store: _Optional[str] = ..., key: _Optional[str] = ..., transaction_id: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class KvStoreServiceDeleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteBatchRequest(_message.Message):
    __slots__ = ("store", "keys", "transaction_id", "device_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    transaction_id: str
    device_id: str
    def __init__(self, store: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., transaction_id: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class DeleteBatchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEntriesRequest(_message.Message):
    __slots__ = ("store", "prefix", "query", "device_id", "transaction_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    prefix: str
    query: KvQuery
    device_id: str
    transaction_id: str
    def __init__(self, store: _Optional[str] = ..., prefix: _Optional[str] = ..., query: _Optional[_Union[KvQuery, _Mapping]] = ..., device_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class GetEntriesResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[KvEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[KvEntry, _Mapping]]] = ...) -> None: ...

class GetResultSizeRequest(_message.Message):
    __slots__ = ("store", "prefix", "query", "device_id", "transaction_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    prefix: str
    query: KvQuery
    device_id: str
    transaction_id: str
    def __init__(self, store: _Optional[str] = ..., prefix: _Optional[str] = ..., query: _Optional[_Union[KvQuery, _Mapping]] = ..., device_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class GetResultSizeResponse(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class StartTransactionRequest(_message.Message):
    __slots__ = ("store",)
    STORE_FIELD_NUMBER: _ClassVar[int]
    store: str
    def __init__(self, store: _Optional[str] = ...) -> None: ...

class StartTransactionResponse(_message.Message):
    __slots__ = ("transaction_id",)
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    def __init__(self, transaction_id: _Optional[str] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("store", "transaction_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    transaction_id: str
    def __init__(self, store: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: int
    def __init__(self, applied: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("store", "transaction_id")
    STORE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    store: str
    transaction_id: str
    def __init__(self, store: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KvStoreServiceSubscribeRequest(_message.Message):
    __slots__ = ("store", "type")
    STORE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    store: str
    type: SubscribeType
    def __init__(self, store: _Optional[str] = ..., type: _Optional[_Union[SubscribeType, str]] = ...) -> None: ...

class KvStoreServiceSubscribeResponse(_message.Message):
    __slots__ = ("subscribed", "change")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    subscribed: KvSubscribed
    change: ChangeNotification
    def __init__(self, subscribed: _Optional[_Union[KvSubscribed, _Mapping]] = ..., change: _Optional[_Union[ChangeNotification, _Mapping]] = ...) -> None: ...

class KvSubscribed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChangeNotification(_message.Message):
    __slots__ = ("insert_entries", "update_entries", "delete_entries", "device_id")
    INSERT_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DELETE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    insert_entries: _containers.RepeatedCompositeFieldContainer[KvEntry]
    update_entries: _containers.RepeatedCompositeFieldContainer[KvEntry]
    delete_entries: _containers.RepeatedCompositeFieldContainer[KvEntry]
    device_id: str
    def __init__(self, insert_entries: _Optional[_Iterable[_Union[KvEntry, _Mapping]]] = ..., update_entries: _Optional[_Iterable[_Union[KvEntry, _Mapping]]] = ..., delete_entries: _Optional[_Iterable[_Union[KvEntry, _Mapping]]] = ..., device_id: _Optional[str] = ...) -> None: ...

class KvStoreServiceSyncRequest(_message.Message):
    __slots__ = ("store", "device_ids", "mode")
    STORE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    store: str
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    mode: KvSyncMode
    def __init__(self, store: _Optional[str] = ..., device_ids: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[KvSyncMode, str]] = ...) -> None: ...

class KvDeviceSyncStatus(_message.Message):
    __slots__ = ("device_id", "code", "message", "pushed", "pulled")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PUSHED_FIELD_NUMBER: _ClassVar[int]
    PULLED_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    code: KvSyncCode
    message: str
    pushed: int
    pulled: int
    def __init__(self, device_id: _Optional[str] = ..., code: _Optional[_Union[KvSyncCode, str]] = ..., message: _Optional[str] = ..., pushed: _Optional[int] = ..., pulled: _Optional[int] = ...) -> None: ...

class KvStoreServiceSyncResponse(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[KvDeviceSyncStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[KvDeviceSyncStatus, _Mapping]]] = ...) -> None: ...

"""The Python SDK of the DatamgrService: DataShare consumers and providers, KV stores, the admin client.

Its errors are `datamgr.errors` (where the rule all three SDKs follow is written); it reaches the
daemon through `datamgr.connection`, as `udmf.client` and `aicap.client` do."""

from datamgr.client.admin import AdminClient
from datamgr.client.datashare import (
    AsyncDataShareHelper,
    AsyncSubscription,
    ChangeInfo,
    DataShareHelper,
    PublishedDataChange,
    RetrievedRow,
    RetrieveResult,
    Subscription,
)
from datamgr.client.devices import DeviceClient
from datamgr.client.extension import AsyncDataShareExtension, DataShareExtension
from datamgr.client.kv import (
    AsyncKvStoreClient,
    AsyncSingleKVStore,
    ChangeNotification,
    KvEntry,
    KvStoreClient,
    KvStoreInfo,
    KvStoreType,
    SecurityLevel,
    SingleKVStore,
    SubscribeType,
    SyncMode,
    SyncResult,
)
from datamgr.client.pairing import PairingClient
from datamgr.client.resultset import DataShareResultSet, DataType
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.datashare.published_items import OperationResult, PublishedItem
from datamgr.kv.query import Query

__all__ = [
    "AdminClient",
    "AsyncDataShareExtension",
    "AsyncDataShareHelper",
    "AsyncKvStoreClient",
    "AsyncSingleKVStore",
    "AsyncSubscription",
    "ChangeInfo",
    "ChangeNotification",
    "DataShareExtension",
    "DataShareHelper",
    "DataSharePredicates",
    "DataShareResultSet",
    "DataType",
    "DeviceClient",
    "KvEntry",
    "KvStoreClient",
    "KvStoreInfo",
    "KvStoreType",
    "OperationResult",
    "PairingClient",
    "PublishedDataChange",
    "PublishedItem",
    "Query",
    "RetrieveResult",
    "RetrievedRow",
    "SecurityLevel",
    "SingleKVStore",
    "SubscribeType",
    "Subscription",
    "SyncMode",
    "SyncResult",
]

"""The SDK's public surface is explicit: everything in `__all__` exists, is sorted and is the list we mean."""

from __future__ import annotations

import datamgr.client


def test_client_exports() -> None:
    exported = datamgr.client.__all__
    assert exported == sorted(exported)
    assert all(hasattr(datamgr.client, name) for name in exported)
    assert set(exported) == {
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
    }

"""The Python SDK of the DatamgrService: DataShare consumers and providers, and the admin client."""

from datamgr.client.admin import AdminClient
from datamgr.client.datashare import (
    AsyncDataShareHelper,
    AsyncSubscription,
    ChangeInfo,
    DataShareHelper,
    PublishedDataChange,
    Subscription,
)
from datamgr.client.extension import AsyncDataShareExtension, DataShareExtension
from datamgr.client.resultset import DataShareResultSet, DataType
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.datashare.published import OperationResult, PublishedItem

__all__ = [
    "AdminClient",
    "AsyncDataShareExtension",
    "AsyncDataShareHelper",
    "AsyncSubscription",
    "ChangeInfo",
    "DataShareExtension",
    "DataShareHelper",
    "DataSharePredicates",
    "DataShareResultSet",
    "DataType",
    "OperationResult",
    "PublishedDataChange",
    "PublishedItem",
    "Subscription",
]

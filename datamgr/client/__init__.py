"""The Python SDK of the DatamgrService: DataShare consumers and providers, and the admin client."""

from datamgr.client.admin import AdminClient
from datamgr.client.datashare import (
    AsyncDataShareHelper,
    AsyncSubscription,
    ChangeInfo,
    DataShareHelper,
    Subscription,
)
from datamgr.client.resultset import DataShareResultSet, DataType
from datamgr.datashare.predicates import DataSharePredicates

__all__ = [
    "AdminClient",
    "AsyncDataShareHelper",
    "AsyncSubscription",
    "ChangeInfo",
    "DataShareHelper",
    "DataSharePredicates",
    "DataShareResultSet",
    "DataType",
    "Subscription",
]

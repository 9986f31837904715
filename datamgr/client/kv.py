"""KV stores from Python: KvStoreClient (OpenHarmony's KVManager) and SingleKVStore, sync and asyncio.

client = KvStoreClient.connect(token=...)                  # or AsyncKvStoreClient
store = client.get_kv_store("notes", kind=KvStoreType.SINGLE_VERSION, security_level=SecurityLevel.S2)
store.put("note/1", '{"title": "milk", "done": false}')
store.get("note/1")                                        # NotFound if the key has no value
store.get_entries(Query().prefix_key("note/").equal_to("$.done", False).order_by_asc("$.title"))
with store.transaction():                                  # all or nothing, committed on exit
    store.put("a", 1)
    store.delete("b")
with store.on_data_change(SubscribeType.LOCAL) as changes: # on('dataChange', ...)
    for note in changes:
        print(note.insert_entries, note.update_entries, note.delete_entries)
store.sync([peer_id], SyncMode.PUSH_PULL)                  # {peer_id: SyncResult(code="OK", ...)}

Values are str, bytes, int, float or bool. Between `start_transaction()` and `commit()`/`rollback()` the
store's writes go into the transaction (OpenHarmony's semantics) and its reads see them.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from datamgr import _stream
from datamgr.client._sync import SyncMode, SyncResult, sync_results
from datamgr.client.datashare import AsyncSubscription, Subscription
from datamgr.connection import (
    acall,
    call,
    metadata,
    open_aio_channel,
    open_channel,
    resolve_token,
)
from datamgr.errors import DatamgrError, InvalidArgument
from datamgr.kv._wire import query_to_proto
from datamgr.kv.query import Query
from datamgr.v1 import kv_pb2 as pb
from datamgr.v1 import kv_pb2_grpc as pb_grpc
from datamgr.v1 import types_pb2
from datamgr.values import from_value, set_value

KvValue = str | bytes | int | float | bool


class _Stub(pb_grpc.KvStoreServiceStub):
    """The generated stub, and PutBatch as a unary call: a batch that fits one message is sent as one,
    as before it streamed (a stream call of the blocking client spends a thread on each call)."""

    def __init__(self, channel: Any) -> None:
        super().__init__(channel)
        self.PutBatchOne = channel.unary_unary(
            "/datamgr.v1.KvStoreService/PutBatch",
            request_serializer=pb.PutBatchRequest.SerializeToString,
            response_deserializer=pb.PutBatchResponse.FromString,
        )


class KvStoreType(enum.IntEnum):
    DEVICE_COLLABORATION = pb.KV_STORE_TYPE_DEVICE_COLLABORATION
    SINGLE_VERSION = pb.KV_STORE_TYPE_SINGLE_VERSION


class SecurityLevel(enum.IntEnum):
    S1 = pb.SECURITY_LEVEL_S1
    S2 = pb.SECURITY_LEVEL_S2
    S3 = pb.SECURITY_LEVEL_S3
    S4 = pb.SECURITY_LEVEL_S4


class SubscribeType(enum.IntEnum):
    LOCAL = pb.SUBSCRIBE_TYPE_LOCAL
    REMOTE = pb.SUBSCRIBE_TYPE_REMOTE
    ALL = pb.SUBSCRIBE_TYPE_ALL


@dataclass(frozen=True, slots=True)
class KvEntry:
    """A key and its value (None only for a deleted entry whose old value is not known)."""

    key: str
    value: KvValue | None


@dataclass(frozen=True, slots=True)
class KvStoreInfo:
    name: str
    kind: KvStoreType
    security_level: SecurityLevel


@dataclass(frozen=True, slots=True)
class ChangeNotification:
    """One committed write of one device's key space (`device_id`)."""

    insert_entries: list[KvEntry]
    update_entries: list[KvEntry]
    delete_entries: list[KvEntry]
    device_id: str


# ---- conversions and request builders, shared by both flavours ----


def _value(value: KvValue) -> types_pb2.Value:
    msg = types_pb2.Value()
    if value is None:
        raise InvalidArgument("a value may not be None: store str, bytes, int, float or bool")
    set_value(msg, value)
    return msg


def _entries(entries: Mapping[str, KvValue] | Iterable[tuple[str, KvValue] | KvEntry]) -> list[pb.KvEntry]:
    pairs = entries.items() if isinstance(entries, Mapping) else entries
    out = []
    for item in pairs:
        key, value = (item.key, item.value) if isinstance(item, KvEntry) else item
        out.append(pb.KvEntry(key=key, value=_value(value)))  # type: ignore[arg-type]
    return out


def _entry(msg: pb.KvEntry) -> KvEntry:
    return KvEntry(msg.key, from_value(msg.value))  # type: ignore[arg-type]


def _info(msg: pb.KvStoreInfo) -> KvStoreInfo:
    return KvStoreInfo(msg.name, KvStoreType(msg.kind), SecurityLevel(msg.security_level))


def _notification(msg: pb.KvStoreServiceSubscribeResponse) -> ChangeNotification:
    c = msg.change
    return ChangeNotification(
        [_entry(e) for e in c.insert_entries],
        [_entry(e) for e in c.update_entries],
        [_entry(e) for e in c.delete_entries],
        c.device_id,
    )


def _filter(target: Any, prefix_or_query: str | Query) -> None:
    if isinstance(prefix_or_query, Query):
        target.query.CopyFrom(query_to_proto(prefix_or_query))
    elif isinstance(prefix_or_query, str):
        target.prefix = prefix_or_query
    else:
        raise InvalidArgument(f"expected a key prefix or a Query, got {type(prefix_or_query).__name__}")


def _get_store_request(
    name: str, kind: KvStoreType | None, security_level: SecurityLevel | None, create_if_missing: bool
) -> pb.GetKvStoreRequest:
    return pb.GetKvStoreRequest(
        store=name,
        kind=int(kind or 0),  # type: ignore[arg-type]
        security_level=int(security_level or 0),  # type: ignore[arg-type]
        create_if_missing=create_if_missing,
    )


class _StoreBase:
    """What both store flavours share: identity, transaction state, request building."""

    def __init__(self, stub: _Stub, md: Any, resp: pb.GetKvStoreResponse) -> None:
        self._stub = stub
        self._md = md
        self.info = _info(resp.store)
        self.local_device_id = resp.local_device_id
        self._tx = ""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def in_transaction(self) -> bool:
        return bool(self._tx)

    def _begin(self, tx_id: str) -> None:
        self._tx = tx_id

    def _check_no_tx(self) -> None:
        if self._tx:
            raise InvalidArgument(f"store {self.name} is in a transaction already: commit or roll back first")

    def _tx_id(self) -> str:
        if not self._tx:
            raise InvalidArgument(f"store {self.name} has no transaction: start_transaction() first")
        return self._tx

    def _put(self, key: str, value: KvValue) -> pb.PutRequest:
        return pb.PutRequest(store=self.name, key=key, value=_value(value), transaction_id=self._tx)

    def _put_batch(self, entries: Any) -> list[pb.PutBatchRequest]:
        """The messages of a batch: one when it fits `_stream.SEND_BYTES`, else slices of entries."""
        items = _entries(entries)
        if len(items) <= 1:
            return [pb.PutBatchRequest(store=self.name, entries=items, transaction_id=self._tx)]

        def build(lo: int, hi: int) -> pb.PutBatchRequest:
            return pb.PutBatchRequest(store=self.name, entries=items[lo:hi], transaction_id=self._tx)

        return _stream.split(build, len(items))

    def _get(self, key: str, device_id: str) -> pb.GetRequest:
        return pb.GetRequest(store=self.name, key=key, device_id=device_id, transaction_id=self._tx)

    def _delete(self, key: str) -> pb.KvStoreServiceDeleteRequest:
        return pb.KvStoreServiceDeleteRequest(store=self.name, key=key, transaction_id=self._tx)

    def _delete_batch(self, keys: Iterable[str]) -> pb.DeleteBatchRequest:
        if isinstance(keys, str):
            raise InvalidArgument("delete_batch takes a list of keys, not a string")
        return pb.DeleteBatchRequest(store=self.name, keys=list(keys), transaction_id=self._tx)

    def _sync(self, devices: Iterable[str], mode: SyncMode) -> pb.KvStoreServiceSyncRequest:
        if isinstance(devices, str):
            raise InvalidArgument("sync takes a list of device ids, not a string")
        return pb.KvStoreServiceSyncRequest(store=self.name, device_ids=list(devices), mode=int(mode))  # type: ignore[arg-type]

    def _entries_request(self, prefix_or_query: str | Query, device_id: str) -> pb.GetEntriesRequest:
        req = pb.GetEntriesRequest(store=self.name, device_id=device_id, transaction_id=self._tx)
        _filter(req, prefix_or_query)
        return req

    def _size_request(self, prefix_or_query: str | Query, device_id: str) -> pb.GetResultSizeRequest:
        req = pb.GetResultSizeRequest(store=self.name, device_id=device_id, transaction_id=self._tx)
        _filter(req, prefix_or_query)
        return req


class SingleKVStore(_StoreBase):
    """A blocking handle on one of the app's KV stores; get it from `KvStoreClient.get_kv_store`."""

    def put(self, key: str, value: KvValue) -> None:
        call(self._stub.Put, self._put(key, value), metadata=self._md)

    def put_batch(self, entries: Mapping[str, KvValue] | Iterable[tuple[str, KvValue] | KvEntry]) -> None:
        """At most 128 entries, written all or none."""
        requests = self._put_batch(entries)
        if len(requests) == 1:
            call(self._stub.PutBatchOne, requests[0], metadata=self._md)
        else:
            call(self._stub.PutBatch, iter(requests), metadata=self._md)

    def get(self, key: str, device_id: str = "") -> KvValue:
        """The key's value; NotFound if it has none. `device_id`: a peer's data (DEVICE_COLLABORATION)."""
        resp = call(self._stub.Get, self._get(key, device_id), metadata=self._md)
        return from_value(resp.value)  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        call(self._stub.Delete, self._delete(key), metadata=self._md)

    def delete_batch(self, keys: Iterable[str]) -> None:
        call(self._stub.DeleteBatch, self._delete_batch(keys), metadata=self._md)

    def get_entries(self, prefix_or_query: str | Query = "", device_id: str = "") -> list[KvEntry]:
        stream = self._stub.GetEntries(self._entries_request(prefix_or_query, device_id), metadata=self._md)
        pages: list[pb.GetEntriesResponse] = call(list, stream)
        return [_entry(e) for page in pages for e in page.entries]

    def get_result_size(self, prefix_or_query: str | Query = "", device_id: str = "") -> int:
        req = self._size_request(prefix_or_query, device_id)
        return int(call(self._stub.GetResultSize, req, metadata=self._md).size)

    def start_transaction(self) -> None:
        """From here until commit() or rollback(), this handle's writes wait in the daemon."""
        self._check_no_tx()
        req = pb.StartTransactionRequest(store=self.name)
        self._begin(call(self._stub.StartTransaction, req, metadata=self._md).transaction_id)

    def commit(self) -> int:
        """Applies the transaction's writes at once; returns how many keys it wrote or deleted."""
        req = pb.CommitRequest(store=self.name, transaction_id=self._tx_id())
        self._tx = ""
        return int(call(self._stub.Commit, req, metadata=self._md).applied)

    def rollback(self) -> None:
        req = pb.RollbackRequest(store=self.name, transaction_id=self._tx_id())
        self._tx = ""
        call(self._stub.Rollback, req, metadata=self._md)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SingleKVStore]:
        """Commits on success, rolls back if the block raises."""
        self.start_transaction()
        try:
            yield self
        except BaseException:
            if self._tx:
                with contextlib.suppress(DatamgrError):  # the block's error is the one to see
                    self.rollback()
            raise
        self.commit()

    def on_data_change(self, type: SubscribeType = SubscribeType.ALL) -> Subscription[ChangeNotification]:
        """Subscribes to committed writes (LOCAL: this device's, REMOTE: synced from peers); returns
        once the subscription is live. Iterate it; `close()` ends it (at most 8 per store)."""
        req = pb.KvStoreServiceSubscribeRequest(store=self.name, type=int(type))  # type: ignore[arg-type]
        stream = self._stub.Subscribe(req, metadata=self._md)
        first = call(next, stream)
        assert first.WhichOneof("event") == "subscribed"
        return Subscription(stream, _notification)

    def sync(self, devices: Iterable[str] = (), mode: SyncMode = SyncMode.PUSH_PULL) -> dict[str, SyncResult]:
        """Syncs the store with paired devices now (empty: all of them); returns once every session
        ended, one result per device. The app needs ohos.permission.DISTRIBUTED_DATASYNC."""
        return sync_results(call(self._stub.Sync, self._sync(devices, mode), metadata=self._md))

    def close(self) -> None:
        """Rolls back this app's open transactions on the store and ends its subscriptions."""
        self._tx = ""
        call(self._stub.CloseKvStore, pb.CloseKvStoreRequest(store=self.name), metadata=self._md)


class KvStoreClient:
    """The app's KVManager (blocking). Create with `KvStoreClient.connect(address, token)`."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self._channel = channel
        self._stub = _Stub(channel)
        self._md = metadata(token)

    @classmethod
    def connect(
        cls, address: str | None = None, token: str | None = None, tls_fingerprint: str | None = None
    ) -> KvStoreClient:
        """`tls_fingerprint` (or DATAMGR_TLS_FINGERPRINT): the certificate a TCP listener must present."""
        return cls(open_channel(address, tls_fingerprint), resolve_token(token))

    def get_kv_store(
        self,
        name: str,
        *,
        kind: KvStoreType | None = KvStoreType.DEVICE_COLLABORATION,
        security_level: SecurityLevel | None = None,
        create_if_missing: bool = True,
    ) -> SingleKVStore:
        """Opens (by default creates) a store. `security_level` is required to create one; `kind` or
        `security_level` None opens an existing store whatever it is."""
        req = _get_store_request(name, kind, security_level, create_if_missing)
        return SingleKVStore(self._stub, self._md, call(self._stub.GetKvStore, req, metadata=self._md))

    def close_kv_store(self, name: str) -> None:
        call(self._stub.CloseKvStore, pb.CloseKvStoreRequest(store=name), metadata=self._md)

    def delete_kv_store(self, name: str) -> None:
        call(self._stub.DeleteKvStore, pb.DeleteKvStoreRequest(store=name), metadata=self._md)

    def list_kv_stores(self) -> list[KvStoreInfo]:
        resp = call(self._stub.ListKvStores, pb.ListKvStoresRequest(), metadata=self._md)
        return [_info(s) for s in resp.stores]

    def get_all_kv_store_id(self) -> list[str]:
        return [s.name for s in self.list_kv_stores()]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> KvStoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSingleKVStore(_StoreBase):
    """The asyncio twin of SingleKVStore; get it from `AsyncKvStoreClient.get_kv_store`."""

    async def put(self, key: str, value: KvValue) -> None:
        await acall(self._stub.Put, self._put(key, value), metadata=self._md)

    async def put_batch(
        self, entries: Mapping[str, KvValue] | Iterable[tuple[str, KvValue] | KvEntry]
    ) -> None:
        requests = self._put_batch(entries)
        if len(requests) == 1:
            await acall(self._stub.PutBatchOne, requests[0], metadata=self._md)
        else:
            await acall(self._stub.PutBatch, iter(requests), metadata=self._md)

    async def get(self, key: str, device_id: str = "") -> KvValue:
        resp = await acall(self._stub.Get, self._get(key, device_id), metadata=self._md)
        return from_value(resp.value)  # type: ignore[return-value]

    async def delete(self, key: str) -> None:
        await acall(self._stub.Delete, self._delete(key), metadata=self._md)

    async def delete_batch(self, keys: Iterable[str]) -> None:
        await acall(self._stub.DeleteBatch, self._delete_batch(keys), metadata=self._md)

    async def get_entries(self, prefix_or_query: str | Query = "", device_id: str = "") -> list[KvEntry]:
        stream = self._stub.GetEntries(self._entries_request(prefix_or_query, device_id), metadata=self._md)

        async def pages() -> list[Any]:
            return [page async for page in stream]

        return [_entry(e) for page in await acall(pages) for e in page.entries]

    async def get_result_size(self, prefix_or_query: str | Query = "", device_id: str = "") -> int:
        req = self._size_request(prefix_or_query, device_id)
        return int((await acall(self._stub.GetResultSize, req, metadata=self._md)).size)

    async def start_transaction(self) -> None:
        self._check_no_tx()
        req = pb.StartTransactionRequest(store=self.name)
        self._begin((await acall(self._stub.StartTransaction, req, metadata=self._md)).transaction_id)

    async def commit(self) -> int:
        req = pb.CommitRequest(store=self.name, transaction_id=self._tx_id())
        self._tx = ""
        return int((await acall(self._stub.Commit, req, metadata=self._md)).applied)

    async def rollback(self) -> None:
        req = pb.RollbackRequest(store=self.name, transaction_id=self._tx_id())
        self._tx = ""
        await acall(self._stub.Rollback, req, metadata=self._md)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSingleKVStore]:
        await self.start_transaction()
        try:
            yield self
        except BaseException:
            if self._tx:
                with contextlib.suppress(DatamgrError):
                    await self.rollback()
            raise
        await self.commit()

    async def on_data_change(
        self, type: SubscribeType = SubscribeType.ALL
    ) -> AsyncSubscription[ChangeNotification]:
        req = pb.KvStoreServiceSubscribeRequest(store=self.name, type=int(type))  # type: ignore[arg-type]
        stream = self._stub.Subscribe(req, metadata=self._md)
        first = await acall(stream.read)
        assert first.WhichOneof("event") == "subscribed"
        return AsyncSubscription(stream, _notification)

    async def sync(
        self, devices: Iterable[str] = (), mode: SyncMode = SyncMode.PUSH_PULL
    ) -> dict[str, SyncResult]:
        resp = await acall(self._stub.Sync, self._sync(devices, mode), metadata=self._md)
        return sync_results(resp)

    async def close(self) -> None:
        self._tx = ""
        await acall(self._stub.CloseKvStore, pb.CloseKvStoreRequest(store=self.name), metadata=self._md)


class AsyncKvStoreClient:
    """The app's KVManager (asyncio). Create with `AsyncKvStoreClient.connect(address, token)`."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._channel = channel
        self._stub = _Stub(channel)
        self._md = metadata(token)

    @classmethod
    def connect(
        cls, address: str | None = None, token: str | None = None, tls_fingerprint: str | None = None
    ) -> AsyncKvStoreClient:
        return cls(open_aio_channel(address, tls_fingerprint), resolve_token(token))

    async def get_kv_store(
        self,
        name: str,
        *,
        kind: KvStoreType | None = KvStoreType.DEVICE_COLLABORATION,
        security_level: SecurityLevel | None = None,
        create_if_missing: bool = True,
    ) -> AsyncSingleKVStore:
        req = _get_store_request(name, kind, security_level, create_if_missing)
        resp = await acall(self._stub.GetKvStore, req, metadata=self._md)
        return AsyncSingleKVStore(self._stub, self._md, resp)

    async def close_kv_store(self, name: str) -> None:
        await acall(self._stub.CloseKvStore, pb.CloseKvStoreRequest(store=name), metadata=self._md)

    async def delete_kv_store(self, name: str) -> None:
        await acall(self._stub.DeleteKvStore, pb.DeleteKvStoreRequest(store=name), metadata=self._md)

    async def list_kv_stores(self) -> list[KvStoreInfo]:
        resp = await acall(self._stub.ListKvStores, pb.ListKvStoresRequest(), metadata=self._md)
        return [_info(s) for s in resp.stores]

    async def get_all_kv_store_id(self) -> list[str]:
        return [s.name for s in await self.list_kv_stores()]

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncKvStoreClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

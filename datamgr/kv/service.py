"""The KvStoreService servicer: an app's KV stores (OpenHarmony KVManager + SingleKVStore semantics).

A store belongs to the app that created it (store id `{bundle}/{name}`), so another app never reaches
it: it does not exist for them. Every request is checked before anything changes (`_checks`); a write
is one storage transaction on the database writer thread, and its change goes to the subscribers from
there right after the commit (`notify`). Queries run in Python (`query`) over the storage's streamed
scan, on a reader thread, within kv.max_query_ms and the call's deadline (`_run`). Transactions are
buffered here (`transactions`) until Commit writes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol

import grpc

from datamgr import _stream
from datamgr.apps import DISTRIBUTED_DATASYNC, App, AppRegistry
from datamgr.caller import Identify, app_of
from datamgr.config import KvSettings
from datamgr.errors import (
    DatamgrError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from datamgr.kv import _wire, sync_api
from datamgr.kv._checks import (
    KINDS,
    check_batch,
    check_key,
    check_query_size,
    check_writable,
    entry_pages,
    notifications,
    read_device,
    store_info,
    store_name,
    to_proto,
    to_storage,
    value_size,
)
from datamgr.kv._run import QueryBudget, head, select
from datamgr.kv.notify import KvNotifier, classify, remote_changes
from datamgr.kv.query import CompiledQuery, PatternLimits, compile_query
from datamgr.kv.storage import MAX_BATCH_SIZE, Change, KvStorage, StoreInfo, Value, key_limit
from datamgr.kv.sync_api import SyncMode, SyncStatus
from datamgr.kv.transactions import Pending, Transaction, Transactions
from datamgr.storage import Database
from datamgr.v1 import kv_pb2 as pb
from datamgr.v1 import kv_pb2_grpc as pb_grpc
from datamgr.v1 import types_pb2

log = logging.getLogger("datamgr.kv")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["KvStoreService"].full_name


class Syncer(Protocol):
    """What the service needs of the daemon's sync (`datamgr.sync.scheduler.SyncScheduler`)."""

    async def sync(self, store_id: str, devices: Sequence[str], mode: SyncMode) -> dict[str, SyncStatus]: ...

    def written(self, store_id: str) -> None: ...


class KvService(pb_grpc.KvStoreServiceServicer):
    def __init__(
        self,
        settings: KvSettings,
        db: Database,
        apps: AppRegistry,
        storage: KvStorage,
        loop: asyncio.AbstractEventLoop,
        identify: Identify,
    ) -> None:
        self._settings = settings
        self._identify = identify
        self._db = db
        self._apps = apps
        self._storage = storage
        self._device_id = storage.device_id
        self._loop = loop
        self._notifier = KvNotifier(
            loop,
            settings.max_subscriptions_per_store,
            settings.subscriber_queue,
            settings.subscriber_bytes,
            settings.app_subscriber_bytes,
        )
        self._txs: Transactions[Value] = Transactions(
            settings.transaction_idle_s,
            settings.max_transactions_per_app,
            MAX_BATCH_SIZE,
            settings.max_transaction_bytes,
            value_size,
        )
        self._stores: dict[str, StoreInfo] = {}  # store id -> info, of stores seen since start
        self._patterns = PatternLimits(settings.max_pattern_chars, settings.max_pattern_wildcards)
        self._sweeper: asyncio.Task[None] | None = None
        self._sync: Syncer | None = None

    def set_sync(self, sync: Syncer) -> None:
        """Connects the daemon's sync: Sync calls, and every local write is reported to it."""
        self._sync = sync

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_KvStoreServiceServicer_to_server(self, server)

    async def start(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def close(self) -> None:
        """Ends subscriptions and rolls back open transactions (daemon shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._notifier.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(self._settings.transaction_idle_s / 2, 5.0))
            for tx in self._txs.expire():
                log.info("transaction %s of %s rolled back after idling", tx.id, tx.store_id)

    # ---- what the sync engine and the admin service call ----

    def on_remote_changes(self, store_id: str, peer: str, changes: Sequence[Change]) -> None:
        """The sync engine's callback: changes applied from `peer`, after their commit (any thread).

        Which keys had a value before is not known, so every put is told as an update."""
        if changes and self._notifier.watched(store_id):
            for change in remote_changes(store_id, peer, changes):
                self._notifier.publish(change)

    def remove_app(self, bundle: str) -> None:
        """Deletes the stores of a removed app (on the writer thread, with the app's removal)."""
        gone = [store.store_id for store in self._storage.list_stores(bundle)]
        for store_id in gone:
            self._storage.delete_store(store_id)
        if gone:
            removed = Unauthenticated(f"app {bundle} was removed by the device owner")
            self._loop.call_soon_threadsafe(self._forget, gone, removed)

    def _forget(self, store_ids: Iterable[str], error: DatamgrError | None = None) -> None:
        for store_id in store_ids:
            self._stores.pop(store_id, None)
            self._txs.drop_store(store_id)
            self._notifier.end(store_id, error=error)

    def revoked(self, bundle: str) -> None:
        """The owner revoked a permission of `bundle` or removed it (on the loop): a removed app's
        subscriptions end now with UNAUTHENTICATED (its stores are its own: no permission guards them)."""
        self._notifier.recheck(bundle)

    # ---- checks ----

    async def _store(self, app: App, name: str) -> StoreInfo:
        store_id = f"{app.bundle}/{store_name(name)}"
        store = self._stores.get(store_id)
        if store is None:
            store = await self._db.read(self._storage.get_store, store_id)
            if store is None:
                raise NotFound(f"{app.bundle} has no KV store {name}: create it with GetKvStore first")
            self._stores[store_id] = store
        return store

    def _tx(self, app: App, store: StoreInfo, tx_id: str) -> Transaction[Value] | None:
        return self._txs.get(app.bundle, store.store_id, tx_id) if tx_id else None

    def _query(self, store: StoreInfo, request: Any) -> tuple[CompiledQuery, str | None]:
        which = request.WhichOneof("filter")
        if which == "query":
            check_query_size(request.query)
            query = compile_query(_wire.query_ops(request.query), self._patterns)
        else:
            query = CompiledQuery(prefix=request.prefix if which == "prefix" else "")
        device_id = request.device_id
        if query.device_id and device_id and query.device_id != device_id:
            raise InvalidArgument(f"the query reads device {query.device_id}, the request {device_id}")
        return query, read_device(store, self._device_id, query.device_id or device_id)

    # ---- writes ----

    def _apply(self, store: StoreInfo, puts: Sequence[tuple[bytes, Value]], deletes: Sequence[bytes]) -> int:
        """On the writer thread: one storage write, then its change to the subscribers."""
        watched = self._notifier.watched(store.store_id)
        before: dict[bytes, Value | None] = {}
        if watched:
            device = read_device(store, self._device_id, "")
            for key in (*(k for k, _ in puts), *deletes):
                before[key] = self._storage.get(store.store_id, key, device)
        changes = self._storage.write(store.store_id, puts, deletes)
        if watched:
            self._notifier.publish(classify(store.store_id, self._device_id, False, changes, before))
        if changes and self._sync is not None:
            self._sync.written(store.store_id)
        return len(changes)

    async def _write(
        self,
        app: App,
        request: Any,
        puts: Iterable[tuple[str, types_pb2.Value]] = (),
        deletes: Iterable[str] = (),
    ) -> None:
        store = await self._store(app, request.store)
        check_writable(self._device_id, request.device_id)
        staged_puts = {check_key(store, k): to_storage(v) for k, v in puts}  # a repeated key: the last
        staged_deletes = list(dict.fromkeys(check_key(store, k) for k in deletes))
        if request.transaction_id:
            tx = self._txs.get(app.bundle, store.store_id, request.transaction_id)
            self._txs.stage(tx, list(staged_puts.items()), staged_deletes)
        elif staged_puts or staged_deletes:
            await self._db.write(self._apply, store, list(staged_puts.items()), staged_deletes)

    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
        app = app_of(self._identify(context))
        await self._write(app, request, puts=[(request.key, request.value)])
        return pb.PutResponse()

    async def PutBatch(self, requests: Any, context: Any) -> pb.PutBatchResponse:
        """A client stream: entries past the first message follow in more (`datamgr._stream`); all of
        them written at once, as one message's."""
        request, others = await _stream.first(requests)
        app = app_of(self._identify(context))
        check_batch(len(request.entries))
        await self._store(app, request.store)  # the caller's own store, before the rest is read
        entries = [(e.key, e.value) for e in request.entries]
        limit = self._settings.max_batch_bytes
        async for more in _stream.rest(request, others, limit, "kv.max_batch_bytes", "the batch"):
            _stream.same("store", request.store, more.store)
            _stream.same("transaction_id", request.transaction_id, more.transaction_id)
            _stream.same("device_id", request.device_id, more.device_id)
            check_batch(len(entries) + len(more.entries))
            entries.extend((e.key, e.value) for e in more.entries)
        await self._write(app, request, puts=entries)
        return pb.PutBatchResponse()

    async def Delete(
        self, request: pb.KvStoreServiceDeleteRequest, context: Any
    ) -> pb.KvStoreServiceDeleteResponse:
        app = app_of(self._identify(context))
        await self._write(app, request, deletes=[request.key])
        return pb.KvStoreServiceDeleteResponse()

    async def DeleteBatch(self, request: pb.DeleteBatchRequest, context: Any) -> pb.DeleteBatchResponse:
        app = app_of(self._identify(context))
        check_batch(len(request.keys))
        await self._write(app, request, deletes=list(request.keys))
        return pb.DeleteBatchResponse()

    # ---- reads ----

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        key = check_key(store, request.key)
        device = read_device(store, self._device_id, request.device_id)
        tx = self._tx(app, store, request.transaction_id)
        found, value = (False, None)
        if tx is not None and device in (None, self._device_id):
            found, value = tx.lookup(key)
        if not found:
            value = await self._db.read(self._storage.get, store.store_id, key, device)
        if value is None:
            raise NotFound(f"store {store.name} has no value for key {request.key!r}")
        resp = pb.GetResponse()
        to_proto(value, resp.value)
        return resp

    def _pending(self, app: App, store: StoreInfo, tx_id: str, device: str | None) -> Pending[Value] | None:
        """A copy of the transaction's writes, if the read sees them (this device's key space only)."""
        tx = self._tx(app, store, tx_id)
        return dict(tx.ops) if tx is not None and device in (None, self._device_id) else None

    async def _select(self, app: App, store: StoreInfo, request: Any, context: Any) -> list[tuple[str, Any]]:
        """The request's query, run on a reader thread within kv.max_query_ms and the call's deadline;
        a cancelled call stops it at once."""
        query, device = self._query(store, request)
        pending = self._pending(app, store, request.transaction_id, device)
        budget = QueryBudget(self._settings.max_query_ms, "kv.max_query_ms", context.time_remaining())
        args = (self._storage, self._db.watchdog, budget, store.store_id, query, device, pending)
        try:
            return await self._db.read(select, *args)
        except asyncio.CancelledError:
            self._db.watchdog.cancel(budget)
            raise

    async def GetEntries(
        self, request: pb.GetEntriesRequest, context: Any
    ) -> AsyncIterator[pb.GetEntriesResponse]:
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        rows = await self._select(app, store, request, context)
        for page in await self._db.read(entry_pages, rows, self._settings.page_bytes):
            yield page

    async def entries_as(
        self, bundle: str, store: str, prefix: str, limit: int, max_bytes: int
    ) -> list[tuple[str, Any]]:
        """The first `limit` (key, value) of app `bundle`'s store `store` whose keys start with `prefix`,
        in key order, read as that app's GetEntries with the prefix reads them: its own stores only
        (another app's does not exist for it: NotFound), this device's key space, within kv.max_query_ms;
        reading stops after the value that brings the values to `max_bytes`. Unauthenticated once the app
        was removed. For daemon features that act for an app (the AI service's grounded chats)."""
        app = self._apps.current(bundle)
        if app is None:
            raise Unauthenticated(f"no app {bundle!r} is registered")
        info = await self._store(app, store)
        if len(raw := prefix.encode()) > (most := key_limit(info.kind)):
            raise InvalidArgument(f"the key prefix is {len(raw)} bytes, over the limit of {most} bytes")
        device = read_device(info, self._device_id, "")
        budget = QueryBudget(self._settings.max_query_ms, "kv.max_query_ms")
        args = (self._storage, self._db.watchdog, budget, info.store_id, prefix, device, limit, max_bytes)
        try:
            return await self._db.read(head, *args)
        except asyncio.CancelledError:
            self._db.watchdog.cancel(budget)
            raise

    async def GetResultSize(self, request: pb.GetResultSizeRequest, context: Any) -> pb.GetResultSizeResponse:
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        return pb.GetResultSizeResponse(size=len(await self._select(app, store, request, context)))

    # ---- stores ----

    async def GetKvStore(self, request: pb.GetKvStoreRequest, context: Any) -> pb.GetKvStoreResponse:
        app = app_of(self._identify(context))
        name = store_name(request.store)
        if request.kind not in (0, *KINDS):
            raise InvalidArgument(f"unknown store kind {request.kind}")
        if not 0 <= request.security_level <= 4:
            raise InvalidArgument(f"unknown security level {request.security_level}: S1-S4 are 1-4")
        store_id = f"{app.bundle}/{name}"
        store = await self._db.read(self._storage.get_store, store_id)
        if store is None:
            if not request.create_if_missing:
                raise NotFound(f"{app.bundle} has no KV store {name} (create_if_missing is off)")
            if not request.security_level:
                raise InvalidArgument("a security level (S1-S4) is required to create a store")
            kind = KINDS[request.kind or pb.KV_STORE_TYPE_DEVICE_COLLABORATION]
            store = await self._db.write(
                self._storage.create_store, app.bundle, name, kind, request.security_level
            )
            log.info("%s opened new KV store %s (%s, S%d)", app.bundle, name, kind, request.security_level)
        elif (request.kind and KINDS[request.kind] is not store.kind) or (
            request.security_level and request.security_level != store.security_level
        ):
            raise InvalidArgument(
                f"store {name} exists as {store.kind.value} S{store.security_level}; "
                "its options cannot change (OpenHarmony 15100002)"
            )
        self._stores[store_id] = store
        return pb.GetKvStoreResponse(store=store_info(store), local_device_id=self._device_id)

    async def CloseKvStore(self, request: pb.CloseKvStoreRequest, context: Any) -> pb.CloseKvStoreResponse:
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        self._txs.drop_store(store.store_id, app.bundle)
        self._notifier.end(store.store_id, app.bundle)
        return pb.CloseKvStoreResponse()

    async def DeleteKvStore(self, request: pb.DeleteKvStoreRequest, context: Any) -> pb.DeleteKvStoreResponse:
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        await self._db.write(self._storage.delete_store, store.store_id)
        self._stores.pop(store.store_id, None)
        self._txs.drop_store(store.store_id)
        self._notifier.end(store.store_id)
        log.info("%s deleted KV store %s", app.bundle, store.name)
        return pb.DeleteKvStoreResponse()

    async def ListKvStores(self, request: pb.ListKvStoresRequest, context: Any) -> pb.ListKvStoresResponse:
        app = app_of(self._identify(context))
        stores = await self._db.read(self._storage.list_stores, app.bundle)
        return pb.ListKvStoresResponse(stores=[store_info(s) for s in sorted(stores, key=lambda s: s.name)])

    # ---- transactions ----

    async def StartTransaction(
        self, request: pb.StartTransactionRequest, context: Any
    ) -> pb.StartTransactionResponse:
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        return pb.StartTransactionResponse(transaction_id=self._txs.start(app.bundle, store.store_id).id)

    async def Commit(self, request: pb.CommitRequest, context: Any) -> pb.CommitResponse:
        """Applies the transaction in one write; if that fails, nothing of it is applied and it ends."""
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        tx = self._txs.take(app.bundle, store.store_id, request.transaction_id)
        if tx.ops:
            await self._db.write(self._apply, store, tx.puts(), tx.deletes())
        return pb.CommitResponse(applied=len(tx.ops))

    async def Rollback(self, request: pb.RollbackRequest, context: Any) -> pb.RollbackResponse:
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        self._txs.take(app.bundle, store.store_id, request.transaction_id)
        return pb.RollbackResponse()

    # ---- change notification ----

    async def Subscribe(
        self, request: pb.KvStoreServiceSubscribeRequest, context: Any
    ) -> AsyncIterator[pb.KvStoreServiceSubscribeResponse]:
        app = app_of(self._identify(context))
        store = await self._store(app, request.store)
        kind = request.type or pb.SUBSCRIBE_TYPE_ALL
        if kind not in (pb.SUBSCRIBE_TYPE_LOCAL, pb.SUBSCRIBE_TYPE_REMOTE, pb.SUBSCRIBE_TYPE_ALL):
            raise InvalidArgument(f"unknown subscribe type {request.type}")
        sub = self._notifier.subscribe(app.bundle, store.store_id, self._apps.guard(app))
        try:
            yield pb.KvStoreServiceSubscribeResponse(subscribed=pb.KvSubscribed())
            while True:
                change = await sub.next()  # raises once a byte cap overflowed or the app was removed
                if change is None:
                    return  # the store was closed or deleted
                if kind == (pb.SUBSCRIBE_TYPE_LOCAL if change.remote else pb.SUBSCRIBE_TYPE_REMOTE):
                    continue
                for note in notifications(change, self._settings.page_bytes):
                    yield pb.KvStoreServiceSubscribeResponse(change=note)
        finally:
            self._notifier.unsubscribe(sub)

    # ---- sync ----

    async def Sync(
        self, request: pb.KvStoreServiceSyncRequest, context: Any
    ) -> pb.KvStoreServiceSyncResponse:
        app = app_of(self._identify(context))
        if DISTRIBUTED_DATASYNC not in app.permissions:
            raise PermissionDenied(f"{app.bundle} lacks {DISTRIBUTED_DATASYNC}, which sync needs")
        store = await self._store(app, request.store)
        mode, devices = sync_api.requested(request.mode, request.device_ids)
        if self._sync is None:
            raise Unavailable("sync between devices is not running on this device")
        statuses = await self._sync.sync(store.store_id, devices, mode)
        return pb.KvStoreServiceSyncResponse(statuses=sync_api.statuses(statuses))

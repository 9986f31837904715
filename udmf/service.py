"""The UdmfService gRPC servicer: identity, the channel rules (`udmf.access`), streamed writes and reads.

The daemon's composition root hands in what udmf must not import (`udmf._host`): `identify` (a call →
its caller: bundle, permissions, whether it is the device owner) and the database (its engine and its
`write`/`read` runners). Errors are udmf's own, carrying their status code: the server's edge maps
them. Writes are read part by part into rows and blob files (`udmf._ingest`) and committed in one
transaction; reads stream from the store (`udmf._reads`). Data that a read consumes is deleted only
after its last part was sent; a cancelled read consumes nothing; consuming reads of one key take turns
(`udmf._once`), so the first wins and the next finds nothing. Expired data is swept at start and every
`sweep_interval_s`.

With `replicate` (`udmf.replica`), CROSS_DEVICE data reaches paired devices: their data shows here as
remote rows, read by the same rules; a remote row's data comes from its device when it is not copied
here, and always when the read consumes it (that device consumes it, once). `serve_peer` is this
device's side of such a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeAlias

import grpc

from udmf import _ingest, _parts, access
from udmf._blobs import BlobDir
from udmf._catalog import TypeCatalog
from udmf._fastwire import decode_read, serialize_read
from udmf._host import Database, Identify
from udmf._ingest import Ingested, ingest
from udmf._lazy_drags import LazyDrags
from udmf._once import KeyLocks
from udmf._reads import stream_data
from udmf._wire import Assembler
from udmf.config import MANAGE_UDMF_ACCESS, UdmfConfig
from udmf.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from udmf.keys import Intention, Key, check_bundle, new_key, parse_key
from udmf.replica import Replication
from udmf.store import DataRow, UdmfStore
from udmf.text import record_text
from udmf.v1 import udmf_pb2 as pb
from udmf.v1 import udmf_pb2_grpc as pb_grpc
from udmf.validate import DataChecker, known_type

log = logging.getLogger("udmf.service")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["UdmfService"].full_name
_LIST_PAGE = 64  # rows a QueryData or DeleteData of a whole channel reads at once
_SWEEP_BATCH = 500  # expired data one write of the sweeper deletes

Context: TypeAlias = grpc.aio.ServicerContext
Limit: TypeAlias = tuple[int, str]  # most bytes of data a read takes, and the setting saying so


def _gone(key: Key) -> NotFound:
    if key.intention is Intention.DRAG:
        return NotFound(
            f"no drag data under {key}: drag data is read once, by its drop target (or it expired)"
        )
    if key.intention is Intention.DATA_HUB:
        return NotFound(f"no data under {key}")
    return NotFound(f"no data under {key}: {key.intention.name} data is deleted once read (or it expired)")


def _refusal(row: DataRow, caller: str) -> Exception:
    """Why `caller` may not read `row` (DATA_HUB data it may not see does not exist for it)."""
    key = parse_key(row.key)
    if row.intention is Intention.DATA_HUB:
        return _gone(key)
    if row.share_options is access.ShareOptions.IN_APP and caller != row.writer:
        return PermissionDenied(f"{key} is IN_APP data: only its writer {row.writer} may read it")
    if row.intention is Intention.DRAG and caller == row.writer:
        return PermissionDenied(f"{key} is drag data: the drop target reads it, not the drag source")
    return PermissionDenied(f"{caller} has no grant to read {key} (the system role grants one: GrantAccess)")


class UdmfService(pb_grpc.UdmfServiceServicer):
    def __init__(
        self,
        config: UdmfConfig,
        identify: Identify,
        db: Database,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._identify = identify
        self._write = db.write
        self._read = db.read
        self.blobs = BlobDir(config.blob_dir)
        self.store = UdmfStore(db.engine, self.blobs, config.entry_ttl_s, clock)
        self.types = TypeCatalog(self.store, db.write)
        self.lazy = LazyDrags(config.lazy_load_timeout_s, self._fill_lazy)
        self._sweeper: asyncio.Task[None] | None = None
        self._once = KeyLocks()
        self._replication: Replication | None = None

    def replicate(self, replication: Replication) -> None:
        """From now on CROSS_DEVICE data goes to paired devices and theirs is read here (`udmf.replica`)."""
        self._replication = replication
        self.store.replication = replication

    def add_to(self, server: grpc.aio.Server) -> None:
        """Registers every RPC of the proto; ReadResponse streams take pre-encoded chunks (_fastwire)."""
        factories = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }
        handlers = {}
        for m in pb.DESCRIPTOR.services_by_name["UdmfService"].methods:
            out = getattr(pb, m.output_type.name)
            handlers[m.name] = factories[m.client_streaming, m.server_streaming](
                getattr(self, m.name),
                request_deserializer=getattr(pb, m.input_type.name).FromString,
                response_serializer=serialize_read if out is pb.ReadResponse else out.SerializeToString,
            )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))

    async def start(self) -> None:
        """Drops what a previous run left (lazy drags, expired data, orphan blob files), starts sweeping."""
        try:
            dropped, orphans = await self._write(self.store.recover)
        except ResourceExhausted as exc:  # a full disk: start anyway, the sweeper tries again
            log.warning("udmf: dropping stale data at start failed, the sweeper retries: %s", exc.message)
        else:
            if dropped or orphans:
                log.info("udmf: dropped %d stale data and %d orphan blob files", dropped, orphans)
        self._sweeper = asyncio.create_task(self._sweep_loop())

    async def close(self) -> None:
        self.lazy.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def app_removed(self, bundle: str) -> None:
        """The owner removed `bundle` (on the loop): its lazy drag sources' streams end now."""
        self.lazy.end(bundle, Unauthenticated(f"app {bundle} was removed by the device owner"))

    async def sweep(self) -> int:
        """Deletes expired data now, `_SWEEP_BATCH` at a time: each batch is its own write, so other
        writes go between however much expired at once. Returns how many blob files that freed."""
        freed_files = 0
        while True:
            deleted, freed = await self._write(self.store.sweep_some, _SWEEP_BATCH)
            await self._remove_files(freed)
            freed_files += len(freed)
            if deleted < _SWEEP_BATCH:
                return freed_files

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.sweep()
            except ResourceExhausted as exc:  # a full disk: the next sweep tries again
                log.warning("udmf: sweeping expired data failed: %s", exc.message)
            except Exception:
                log.exception("udmf: sweeping expired data failed")

    # ---- identity ----

    def _app(self, context: Context) -> str:
        """The calling app's bundle: data calls are apps' (the device owner's token only grants)."""
        if (caller := self._identify(context)).is_admin:
            raise PermissionDenied("UDMF data calls need an app token; the admin token only grants access")
        return caller.bundle

    # ---- the stores ----

    async def _remove_files(self, names: Sequence[str]) -> None:
        if names:
            await asyncio.shield(asyncio.to_thread(self.blobs.remove, list(names)))

    async def _commit(self, fn: Callable[..., Any], row: DataRow, data: Ingested) -> Any:
        """Runs `fn(row, entries)` on the writer; if it fails, the data's blob files go. Shielded: a
        cancelled call cannot leave a committed row without its files (or files without a row)."""

        async def run() -> Any:
            try:
                return await self._write(fn, row, data.entries)
            except BaseException:
                await _ingest.discard(data, self.blobs)
                raise

        return await asyncio.shield(asyncio.ensure_future(run()))

    async def _delete(self, keys: Sequence[str]) -> None:
        async def run() -> None:
            await self._remove_files(await self._write(self.store.delete, keys))

        await asyncio.shield(asyncio.ensure_future(run()))

    async def _get(self, key: Key) -> DataRow:
        row = await self._read(self.store.get, str(key))
        if row is None:
            raise _gone(key)
        return row

    def _row(self, key: Key, writer: str, data: Ingested, visibility: access.Visibility) -> DataRow:
        props = data.header.properties
        return DataRow(
            key=str(key),
            intention=key.intention,
            writer=writer,
            record_count=data.header.record_count,
            summary=data.summary,
            total_size=data.total_size,
            visibility=visibility,
            share_options=_parts.share_options(props.share_options),
            tag=props.tag,
            extras=_parts.extras_to_json(props.extras),
        )

    async def _ingest(self, parts: AsyncIterator[pb.DataPart], writer: str) -> Ingested:
        usage = self.store.usage
        room = None if usage is None else functools.partial(usage.room, writer)
        return await ingest(parts, self.types.registry, self.config, self.blobs, room)

    # ---- writes ----

    async def InsertData(self, request_iterator: AsyncIterator[pb.WriteRequest], context: Context) -> Any:
        first, incoming = await _ingest.first(request_iterator)
        bundle = self._app(context)
        options, parts = _ingest.write_stream(first, incoming)
        intention = access.check_insert_intention(_parts.intention(options.intention, "options.intention"))
        visibility = _parts.visibility(options.visibility)
        if options.key:
            raise InvalidArgument("InsertData makes a new key; options.key names the data for UpdateData")
        key = new_key(intention, bundle)
        data = await self._ingest(parts, bundle)
        await self._commit(self.store.insert, self._row(key, bundle, data, visibility), data)
        return pb.InsertDataResponse(key=str(key))

    async def UpdateData(self, request_iterator: AsyncIterator[pb.WriteRequest], context: Context) -> Any:
        first, incoming = await _ingest.first(request_iterator)
        bundle = self._app(context)
        options, parts = _ingest.write_stream(first, incoming)
        key = access.check_update_target(
            parse_key(options.key) if options.key else None, _parts.intention(options.intention)
        )
        old = await self._get(key)
        rt = old.runtime()
        if not access.may_query(rt, bundle):
            raise _gone(key)
        if old.origin:
            raise PermissionDenied(
                f"{key} is CROSS_DEVICE data of device {old.origin}: only it updates the data"
            )
        if not access.may_update(rt, bundle):
            raise PermissionDenied(f"only {old.writer}, the writer of {key}, may update it")
        data = await self._ingest(parts, bundle)
        freed = await self._commit(self.store.replace, self._row(key, bundle, data, old.visibility), data)
        if freed is None:
            await _ingest.discard(data, self.blobs)
            raise _gone(key)
        await self._remove_files(freed)
        return pb.UpdateDataResponse()

    async def SetDragData(self, request_iterator: AsyncIterator[pb.WriteRequest], context: Context) -> Any:
        first, incoming = await _ingest.first(request_iterator)
        bundle = self._app(context)
        options, parts = _ingest.write_stream(first, incoming, options_required=False)
        access.check_drag_intention(_parts.intention(options.intention, "options.intention"))
        if options.key:
            raise InvalidArgument("SetDragData makes a new key; options.key is for UpdateData")
        key = new_key(Intention.DRAG, bundle)
        data = await self._ingest(parts, bundle)
        await self._commit(self.store.insert, self._row(key, bundle, data, access.Visibility.ALL), data)
        return pb.SetDragDataResponse(key=str(key))

    # ---- reads ----

    async def _channel_rows(self, request: Any, op: str, bundle: str, own: bool) -> AsyncIterator[DataRow]:
        """The data the request names: its key's, or the DATA_HUB data `bundle` may see (`own`: wrote),
        read a page at a time while the caller takes them, never all at once."""
        key = parse_key(request.key) if request.key else None
        access.check_channel_op(key, _parts.intention(request.intention), op)
        if key is not None:
            row = await self._read(self.store.get, str(key))
            if row is not None:
                yield row
            return
        after: tuple[float, str] | None = None
        while page := await self._read(
            self.store.listing, Intention.DATA_HUB, bundle, own, after, _LIST_PAGE
        ):
            for row in page:
                yield row
            if len(page) < _LIST_PAGE:
                return
            after = (page[-1].created_at, page[-1].key)

    async def QueryData(
        self, request: pb.QueryDataRequest, context: Context
    ) -> AsyncIterator[pb.ReadResponse]:
        bundle = self._app(context)
        found = False
        async for row in self._channel_rows(request, "QueryData", bundle, own=False):
            if not access.may_query(row.runtime(), bundle):
                continue
            found = True
            if row.origin and not row.copied:  # a paired device's data, read from it
                sent = False
                try:
                    async for msg in self._fetch(row, bundle):
                        sent = True
                        yield msg
                except (NotFound, Unavailable) as exc:
                    if request.key or sent:  # a listing goes on without a device that is away
                        raise
                    log.info("udmf: a query leaves out device %s's data: %s", row.origin, exc.message)
            else:
                async for msg in stream_data(row, self.store, self._read, self.config.chunk_bytes):
                    yield msg
        if request.key and not found:
            raise _gone(parse_key(request.key))

    async def DeleteData(
        self, request: pb.DeleteDataRequest, context: Context
    ) -> AsyncIterator[pb.ReadResponse]:
        """Each data is streamed whole and then deleted, so a cancelled call deletes only what it returned."""
        bundle = self._app(context)
        async for row in self._channel_rows(request, "DeleteData", bundle, own=True):
            if access.may_delete(row.runtime(), bundle):
                async for msg in stream_data(row, self.store, self._read, self.config.chunk_bytes):
                    yield msg
                await self._delete([row.key])

    async def GetData(self, request: pb.GetDataRequest, context: Context) -> AsyncIterator[pb.ReadResponse]:
        async for msg in self.read_as(self._app(context), request.key):
            yield msg

    async def read_as(self, bundle: str, key_text: str, limit: Limit | None = None) -> AsyncIterator[Any]:
        """GetData's stream for app `bundle`, under GetData's rules: a read that consumes the data
        (drag data, read once by its target) consumes it once the last part was taken. Data larger than
        `limit` (bytes, the setting's name) is ResourceExhausted, unread. Daemon features that act for
        an app read through it."""
        key = parse_key(key_text)
        check = functools.partial(self._readable, bundle, limit)
        row = check(await self._get(key))
        consumes = access.consumed_after_read(row.runtime(), bundle)
        async with self._once.hold(row.key) if consumes else contextlib.nullcontext():
            if consumes:
                row = check(await self._get(key))  # the reader before us may have consumed it
            if row.origin and (consumes or not row.copied):
                async for msg in self._fetch(row, bundle):
                    yield msg
            else:
                row = await self._loaded(row, bundle, check)
                async for msg in stream_data(row, self.store, self._read, self.config.chunk_bytes):
                    yield msg
            if consumes:
                await self._delete([row.key])

    def _readable(self, bundle: str, limit: Limit | None, row: DataRow) -> DataRow:
        if not access.may_read_by_key(row.runtime(), bundle):
            raise _refusal(row, bundle)
        if limit is not None and row.total_size > limit[0]:
            raise ResourceExhausted(
                f"{row.key} holds {row.total_size} bytes, over {limit[1]} ({limit[0]} bytes): it was not read"
            )
        return row

    async def check_read_as(self, bundle: str, key_text: str, limit: Limit | None = None) -> None:
        """Raises what `read_as` would for data `bundle` may not read (or over `limit`), reading nothing."""
        self._readable(bundle, limit, await self._get(parse_key(key_text)))

    async def texts_as(self, bundle: str, key_text: str, limit: Limit, max_chars: int) -> list[str]:
        """The text of each record of the data under the key (`udmf.text`; "" for a record without),
        at most `max_chars` each, read as `bundle` by `read_as` (so it consumes what GetData would)."""
        assembler = Assembler()
        async for msg in self.read_as(bundle, key_text, limit):
            assembler.feed(decode_read(msg) if isinstance(msg, bytes) else msg)
        records = [r for data in assembler.finish() for r in data.get_records()]
        registry = self.types.registry
        return await asyncio.to_thread(lambda: [record_text(r, registry, max_chars) for r in records])

    async def serve_peer(self, key: str, reader: str) -> AsyncIterator[Any]:
        """This device's data under `key` for a paired device, as GetData streams it, if it leaves the
        device (`access.may_serve_peer`); a drag is consumed. `reader`, the app the peer says reads,
        decides nothing (a lazy drag's source hears it). NotFound for data that does not leave."""
        parsed = parse_key(key)
        check_bundle(reader)

        def check(row: DataRow) -> DataRow:
            if not access.may_serve_peer(row.runtime()):
                raise _gone(parsed)
            return row

        row = check(await self._get(parsed))
        consumes = access.consumed_by_peer(row.runtime())
        async with self._once.hold(row.key) if consumes else contextlib.nullcontext():
            if consumes:
                row = check(await self._get(parsed))
            row = await self._loaded(row, reader, check)
            async for msg in stream_data(row, self.store, self._read, self.config.chunk_bytes):
                yield msg
            if consumes:
                await self._delete([row.key])
                log.info("udmf: %s was read by %s on a paired device, and is consumed", row.key, reader)

    async def _loaded(self, row: DataRow, reader: str, check: Callable[[DataRow], DataRow]) -> DataRow:
        """`row` with its data: a lazy drag's source delivers it first (checked again: its properties
        came with it)."""
        if not row.pending:
            return row
        await self.lazy.load(row.key, reader)
        return check(await self._get(parse_key(row.key)))

    async def _fetch(self, row: DataRow, reader: str) -> AsyncIterator[Any]:
        """A remote row's data from its device; gone there means gone here too."""
        if self._replication is None:
            raise Unavailable(f"{row.key} is device {row.origin}'s data, and cross-device reads are off")
        try:
            async for msg in self._replication.fetch(row.origin, row.key, reader):
                yield msg
        except NotFound:
            await self._delete([row.key])
            raise _gone(parse_key(row.key)) from None

    async def GetSummary(self, request: pb.GetSummaryRequest, context: Context) -> pb.GetSummaryResponse:
        bundle = self._app(context)
        row = await self._get(parse_key(request.key))
        if not access.may_read_summary(row.runtime(), bundle):
            raise _refusal(row, bundle)
        return pb.GetSummaryResponse(summary=_parts.summary(row), header=_parts.header(row))

    # ---- lazy drag ----

    async def StartLazyDrag(
        self, request_iterator: AsyncIterator[pb.LazySourceMessage], context: Context
    ) -> AsyncIterator[pb.LazySourceEvent]:
        first, incoming = await _ingest.first(request_iterator)
        bundle = self._app(context)
        if first is None or first.WhichOneof("msg") != "start":
            raise InvalidArgument("a lazy drag source opens the stream with LazySourceMessage{start}")
        row = self._lazy_row(new_key(Intention.DRAG, bundle), bundle, first.start)
        await self._write(self.store.insert, row, [])
        try:
            async for event in self.lazy.serve(bundle, row.key, incoming):
                yield event
        finally:
            await asyncio.shield(self._write(self.store.delete_pending, row.key))

    def _lazy_row(self, key: Key, bundle: str, start: pb.LazyDragStart) -> DataRow:
        DataChecker(self.types.registry, self.config).header(
            pb.DataHeader(properties=start.properties, record_count=start.record_count)
        )
        summary = dict(start.summary.summary)
        for type_id in summary:
            if not known_type(self.types.registry, type_id):
                raise InvalidArgument(f"the summary names unknown type {type_id!r}")
        total = start.summary.total_size or sum(summary.values())
        if total > self.config.max_data_bytes:
            raise InvalidArgument(
                f"the summary says {total} bytes; a UnifiedData holds at most {self.config.max_data_bytes}"
            )
        return DataRow(
            key=str(key),
            intention=Intention.DRAG,
            writer=bundle,
            record_count=start.record_count,
            summary=summary,
            total_size=total,
            share_options=_parts.share_options(start.properties.share_options),
            tag=start.properties.tag,
            extras=_parts.extras_to_json(start.properties.extras),
            pending=True,
        )

    async def _fill_lazy(self, key: str, parts: AsyncIterator[pb.DataPart]) -> None:
        """Stores what a lazy source sent, as SetDragData would."""
        pending = await self._get(parse_key(key))
        data = await self._ingest(parts, pending.writer)
        row = self._row(parse_key(key), pending.writer, data, access.Visibility.ALL)
        if not await self._commit(self.store.fill, row, data):
            await _ingest.discard(data, self.blobs)
            raise _gone(parse_key(key))

    # ---- grants ----

    async def GrantAccess(self, request: pb.GrantAccessRequest, context: Context) -> pb.GrantAccessResponse:
        caller = self._identify(context)
        if not access.may_grant(caller.is_admin, caller.permissions):
            raise PermissionDenied(
                f"GrantAccess is the system role's: the admin token or an app holding {MANAGE_UDMF_ACCESS}"
            )
        key = parse_key(request.key)
        check_bundle(request.bundle)
        access.check_grantable((await self._get(key)).runtime())
        if not await self._write(self.store.grant, str(key), request.bundle, request.keep):
            raise _gone(key)
        return pb.GrantAccessResponse()

    # ---- types ----

    async def QueryTypes(self, request: pb.QueryTypesRequest, context: Context) -> pb.QueryTypesResponse:
        self._app(context)
        return pb.QueryTypesResponse(types=self.types.query(request))

    async def RegisterTypes(
        self, request: pb.RegisterTypesRequest, context: Context
    ) -> pb.RegisterTypesResponse:
        bundle = self._app(context)
        await self.types.register(request.types, bundle)
        return pb.RegisterTypesResponse()

    async def UnregisterTypes(
        self, request: pb.UnregisterTypesRequest, context: Context
    ) -> pb.UnregisterTypesResponse:
        bundle = self._app(context)
        await self.types.unregister(request.type_ids, bundle)
        return pb.UnregisterTypesResponse()

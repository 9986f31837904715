"""The DataShare gRPC servicer: authentication, limits, routing (silent or extension), permission checks.

Silent access is used when the URI names a table the provider declared and silent access is on (or the
caller is the provider itself); otherwise the call goes to the provider's attached extension.
Published data (`datashareproxy://`) is written only by its app and read by it or by apps holding the
publisher manifest's `published_read_permission` (unset: nobody else, as silent access).
Distributed tables (`distributed`) sync with paired devices: declaring one, like syncing one on
request, needs ohos.permission.DISTRIBUTED_DATASYNC (OpenHarmony's setDistributedTables and sync).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from datamgr import _stream
from datamgr import values as codec
from datamgr.apps import DISTRIBUTED_DATASYNC, App, AppRegistry
from datamgr.budget import Budget
from datamgr.bundles import check_bundle
from datamgr.caller import Identify, app_of
from datamgr.changefeed import Change, Feed
from datamgr.config import DataShareSettings
from datamgr.datashare import policy
from datamgr.datashare._compile import PatternLimits, build_where_for_write, compile_predicates
from datamgr.datashare.distributed import DistributedTables
from datamgr.datashare.extension import ExtensionRouter
from datamgr.datashare.indexer import Indexer
from datamgr.datashare.manifest import Manifest, parse_manifest
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.datashare.published import (
    MAX_ITEMS,
    PublishedBatch,
    PublishedItem,
    PublishedStore,
    check_subscriber_id,
)
from datamgr.datashare.retrieval import RetrievedRow, check_predicates, plan, row_id
from datamgr.datashare.retrieve import Found, Retriever, Search
from datamgr.datashare.store import SilentStore, check_columns, check_values
from datamgr.datashare.tables import HostedTable, ProviderRegistry
from datamgr.datashare.targets import RETRIES, Targets, found_on_reader
from datamgr.datashare.uri import DataShareUri, parse_proxy_uri, parse_table_uri, parse_uri
from datamgr.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from datamgr.kv import sync_api
from datamgr.quota import Ledger
from datamgr.storage import Database, prefetched
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc
from datamgr.v1 import types_pb2

log = logging.getLogger("datamgr.datashare")
T = TypeVar("T")
_CHANGE_TYPES = {
    "INSERT": pb.CHANGE_TYPE_INSERT,
    "UPDATE": pb.CHANGE_TYPE_UPDATE,
    "DELETE": pb.CHANGE_TYPE_DELETE,
}
_DECLARED: dict[str, int] = {
    "integer": types_pb2.DATA_TYPE_LONG,
    "real": types_pb2.DATA_TYPE_DOUBLE,
    "text": types_pb2.DATA_TYPE_STRING,
    "blob": types_pb2.DATA_TYPE_BLOB,
    "boolean": types_pb2.DATA_TYPE_BOOL,
}


@dataclass(frozen=True, slots=True)
class _Route:
    """Where a call goes: a hosted table (silent) or the provider's extension (hosted is None)."""

    uri: DataShareUri
    hosted: HostedTable | None


def _extend(
    columns: list[list[Any]], absent: list[list[int]], cols: list[list[Any]], gaps: list[list[int]]
) -> tuple[list[list[Any]], list[list[int]]]:
    """A streamed batch's columns and absent rows so far, with one more message's appended."""
    if not columns:
        return cols, gaps
    offset = len(columns[0])
    for whole, part in zip(columns, cols, strict=True):
        whole.extend(part)
    for whole_gaps, part_gaps in zip(absent, gaps, strict=True):
        whole_gaps.extend(offset + i for i in part_gaps)
    return columns, absent


def _joined(chunks: Sequence[pb.BatchInsertRequest]) -> pb.BatchInsertRequest:
    """A streamed batch as one request (for an extension provider, which takes one message)."""
    columns: list[list[Any]] = []
    absent: list[list[int]] = []
    for chunk in chunks:
        if len(chunk.rows.columns) != len(chunks[0].columns):
            raise InvalidArgument(
                f"{len(chunks[0].columns)} column names for {len(chunk.rows.columns)} columns of values"
            )
        cols = codec.decode_page(chunk.rows)
        columns, absent = _extend(columns, absent, cols, codec.page_absent(chunk.rows))
    whole = pb.BatchInsertRequest(uri=chunks[0].uri, columns=chunks[0].columns)
    codec.encode_page(columns, whole.rows, absent=absent)
    return whole


def _item_from_proto(msg: pb.PublishedItem) -> PublishedItem:
    which = msg.WhichOneof("data")
    data: Any = getattr(msg, which) if which else None  # None: the store rejects the item
    return PublishedItem(msg.key, data, msg.subscriber_id)


def _item_to_proto(item: PublishedItem) -> pb.PublishedItem:
    if isinstance(item.data, str):
        return pb.PublishedItem(key=item.key, text=item.data, subscriber_id=item.subscriber_id)
    return pb.PublishedItem(key=item.key, blob=item.data, subscriber_id=item.subscriber_id)


class DataShareService(pb_grpc.DataShareServiceServicer):
    def __init__(
        self,
        settings: DataShareSettings,
        db: Database,
        apps: AppRegistry,
        identify: Identify,
        providers: ProviderRegistry,
        feed: Feed[Change],
        extensions: ExtensionRouter,
        published: PublishedStore,
        published_feed: Feed[PublishedBatch],
        distributed: DistributedTables | None = None,
        ledger: Ledger | None = None,
        indexer: Indexer | None = None,
    ) -> None:
        self._settings = settings
        self._indexer = indexer  # the indexed tables' background embedding and vector indexes
        self._retriever = Retriever(db)
        self._db = db
        self._apps = apps
        self._identify = identify
        self._providers = providers
        self._distributed = distributed
        self._store = SilentStore(db, feed, distributed, ledger)
        self._feed = feed
        self._extensions = extensions
        self._published = published
        self._published_feed = published_feed
        self._patterns = PatternLimits(settings.max_pattern_chars, settings.max_pattern_wildcards)

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_DataShareServiceServicer_to_server(self, server)

    # ---- helpers ----

    def _limit(self, request: Any, limit: int, what: str) -> None:
        size = request.ByteSize()
        if size > limit:
            raise TooLarge(f"{what} is {size} bytes, over the limit of {limit} bytes")

    def _route(self, app: App, uri_text: str, op: policy.Op) -> _Route:
        uri = parse_uri(uri_text)
        hosted = self._providers.resolve(uri)
        manifest = self._providers.manifest(uri.bundle)
        if hosted is not None and (hosted.manifest.silent_access or app.bundle == uri.bundle):
            permission = hosted.read_permission if op == "read" else hosted.write_permission
            policy.check_silent(
                app.bundle, app.permissions, uri.bundle, permission, hosted.allow_list, op, str(uri)
            )
            return _Route(uri, hosted)
        if self._extensions.attached(uri.bundle) or (manifest is not None and manifest.extension is not None):
            ext = manifest.extension if manifest is not None else None
            permission = (
                None if ext is None else (ext.read_permission if op == "read" else ext.write_permission)
            )
            policy.check_extension(app.bundle, app.permissions, uri.bundle, permission, op, str(uri))
            return _Route(uri, None)
        if hosted is not None:
            raise PermissionDenied(
                f"{uri.bundle} has turned silent access off and has no extension to answer {uri}"
            )
        self._providers.require(uri)  # raises NotFound with the reason
        raise Unavailable(f"no provider answers {uri}")  # pragma: no cover - require always raises

    async def _extension(self, route: _Route, app: App, op: str, request: Any) -> pb.ProviderReply:
        reply = await self._extensions.call(route.uri.bundle, app.bundle, op, request)
        if reply.WhichOneof("result") == "error":
            from datamgr.errors import BY_CODE, DatamgrError

            cls = BY_CODE.get(reply.error.code)
            message = f"provider {route.uri.bundle}: {reply.error.message}"
            raise cls(message) if cls else DatamgrError(message)
        return reply

    def _predicates(self, hosted: HostedTable, msg: pb.Predicates) -> Any:
        ops = DataSharePredicates.from_proto(msg).ops
        return compile_predicates(ops, hosted.table, self._db.dialect, self._patterns)

    def _budget(self, context: Any) -> Budget:
        """The call's statement budget: datashare.max_statement_ms, and never past its gRPC deadline."""
        return Budget(self._settings.max_statement_ms, "datashare.max_statement_ms", context.time_remaining())

    async def _write(self, budget: Budget, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, budget)` on the writer thread; a cancelled call stops its statement at once."""
        try:
            return await self._db.write(fn, *args, budget)
        except asyncio.CancelledError:
            self._db.watchdog.cancel(budget)
            raise

    async def _read(self, budget: Budget, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, budget)` on a reader thread; a cancelled call stops its statement at once."""
        try:
            return await self._db.read(fn, *args, budget)
        except asyncio.CancelledError:
            self._db.watchdog.cancel(budget)
            raise

    def _queued(self, *written: HostedTable) -> None:
        """A write of these tables committed: the indexer looks at their queues (after a pause)."""
        if self._indexer is not None and any(c.indexed for h in written for c in h.spec.columns):
            self._indexer.written()

    async def _write_found(
        self,
        budget: Budget,
        ops: Sequence[tuple[HostedTable, Any, Sequence[str] | None]],
        write: Callable[[Sequence[Targets | None], Budget], T | None],
        nothing: T,
    ) -> T:
        """`write(found, budget)` on the writer, with the rows of the operations (table, WHERE, columns
        set; None: deleted) that have a costly WHERE found on a reader first (`datashare.targets`), so
        that the writer never evaluates it. Found again while a table changes in between, then run
        as one statement on the writer. `nothing` is the result when no row matches."""
        marks = found_on_reader([(h, w, s or ()) for h, w, s in ops])
        if any(marks):
            asked = [op if marked else None for op, marked in zip(ops, marks, strict=True)]
            for _ in range(1 + RETRIES):
                found = await self._read(budget, self._store.find, asked)
                if all(f is not None and not f.keys for f in found):
                    return nothing  # no row matched in a snapshot taken during the call
                if all(f is None or f.at >= 0 for f in found):
                    done = await self._write(budget, write, found)
                    if done is not None:
                        return done
        done = await self._write(budget, write, [None] * len(ops))
        assert done is not None, "a write with nothing found beforehand always runs"
        return done

    # ---- providers ----

    async def RegisterProvider(
        self, request: pb.RegisterProviderRequest, context: Any
    ) -> pb.RegisterProviderResponse:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the manifest")
        manifest: Manifest = parse_manifest(request.manifest_json)
        if manifest.bundle != app.bundle:
            raise PermissionDenied(f"{app.bundle} may not register a manifest for {manifest.bundle}")
        distributed = [f"{s.name}/{t.name}" for s in manifest.stores for t in s.tables if t.distributed]
        if distributed and DISTRIBUTED_DATASYNC not in app.permissions:
            raise PermissionDenied(
                f"{app.bundle} lacks {DISTRIBUTED_DATASYNC}, which distributed tables need "
                f"({', '.join(distributed)})"
            )
        if distributed and self._distributed is None:
            raise Unavailable(
                "distributed tables need sync between devices, which is not running on this device"
            )
        register = self._distributed.register if self._distributed is not None else self._providers.register

        def register_and_count(manifest: Manifest) -> tuple[list[str], list[str]]:
            """On the writer: new columns change what a table's rows hold (datashare.targets)."""
            done = register(manifest)
            for hosted in self._providers.tables(manifest.bundle):
                self._store.counts.bump(hosted.table.name)
            return done

        uris, added = await self._db.write(register_and_count, manifest)
        log.info(
            "provider %s hosts %d table(s)%s", manifest.bundle, len(uris), f", added {added}" if added else ""
        )
        return pb.RegisterProviderResponse(uris=uris, added_columns=added)

    # ---- CRUD ----

    async def Insert(self, request: pb.InsertRequest, context: Any) -> pb.InsertResponse:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the insert")
        route = self._route(app, request.uri, "write")
        if route.hosted is None:
            return pb.InsertResponse(row_id=(await self._extension(route, app, "insert", request)).row_id)
        values = check_values(route.hosted, codec.from_bucket(request.values), inserting=True)
        row_id = await self._write(self._budget(context), self._store.insert, route.hosted, values)
        self._queued(route.hosted)
        return pb.InsertResponse(row_id=row_id)

    async def BatchInsert(self, requests: Any, context: Any) -> pb.BatchInsertResponse:
        """A client stream: rows past the first message follow in more (`datamgr._stream`); all of
        them in one transaction, as one message's."""
        request, others = await _stream.first(requests)
        app = app_of(self._identify(context))
        limit = self._settings.max_batch_bytes
        self._limit(request, limit, "the batch")
        route = self._route(app, request.uri, "write")  # permission before the rest is read
        chunks = [request]
        async for more in _stream.rest(request, others, limit, "datashare.max_batch_bytes", "the batch"):
            _stream.same("uri", request.uri, more.uri)
            if more.columns and list(more.columns) != list(request.columns):
                raise InvalidArgument("a later message of the batch names other columns than the first")
            chunks.append(more)
        if route.hosted is None:
            whole = request if len(chunks) == 1 else _joined(chunks)
            return pb.BatchInsertResponse(
                count=(await self._extension(route, app, "batch_insert", whole)).count
            )
        hosted = route.hosted
        max_text = self._settings.max_text_chars

        def decode_check_insert(budget: Budget) -> int:
            """On the writer thread: decoding and checking a large batch takes milliseconds of CPU
            that would otherwise stall every other call on the event loop."""
            names = list(request.columns)
            columns: list[list[Any]] = []
            absent: list[list[int]] = []
            for chunk in chunks:
                cols = codec.decode_page(chunk.rows)
                gaps = codec.page_absent(chunk.rows)
                check_columns(hosted, names, cols, [c.type for c in chunk.rows.columns], gaps, max_text)
                columns, absent = _extend(columns, absent, cols, gaps)
            return self._store.batch_insert(hosted, names, columns, absent, budget)

        count = await self._write(self._budget(context), decode_check_insert)
        self._queued(hosted)
        return pb.BatchInsertResponse(count=count)

    async def Update(self, request: pb.UpdateRequest, context: Any) -> pb.UpdateResponse:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the update")
        route = self._route(app, request.uri, "write")
        if route.hosted is None:
            return pb.UpdateResponse(count=(await self._extension(route, app, "update", request)).count)
        hosted = route.hosted
        values = check_values(hosted, codec.from_bucket(request.values), inserting=False)
        compiled = self._predicates(hosted, request.predicates)
        where = build_where_for_write(hosted.table, compiled, hosted.pk)

        def update(found: Sequence[Targets | None], budget: Budget) -> int | None:
            return self._store.update(hosted, compiled, values, budget, found[0])

        count = await self._write_found(self._budget(context), [(hosted, where, list(values))], update, 0)
        self._queued(hosted)
        return pb.UpdateResponse(count=count)

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the delete")
        route = self._route(app, request.uri, "write")
        if route.hosted is None:
            return pb.DeleteResponse(count=(await self._extension(route, app, "delete", request)).count)
        hosted = route.hosted
        compiled = self._predicates(hosted, request.predicates)
        where = build_where_for_write(hosted.table, compiled, hosted.pk)

        def delete(found: Sequence[Targets | None], budget: Budget) -> int | None:
            return self._store.delete(hosted, compiled, budget, found[0])

        count = await self._write_found(self._budget(context), [(hosted, where, None)], delete, 0)
        self._queued(hosted)
        return pb.DeleteResponse(count=count)

    async def BatchUpdate(self, requests: Any, context: Any) -> pb.BatchUpdateResponse:
        """Hosted tables change in one transaction (all or nothing); extension URIs go to their providers.
        A client stream: operations past the first message follow in more (`datamgr._stream`)."""
        request, others = await _stream.first(requests)
        app = app_of(self._identify(context))
        limit = self._settings.max_call_bytes
        self._limit(request, limit, "the batch update")
        groups = list(request.operations)
        n_ops = sum(len(u.operations) for u in groups)
        if n_ops > 4000:
            raise InvalidArgument("a batch update may hold at most 4000 operations")
        routes = [self._route(app, group.uri, "write") for group in groups]  # before the rest is read
        setting = "datashare.max_call_bytes"
        async for more in _stream.rest(request, others, limit, setting, "the batch update"):
            n_ops += sum(len(u.operations) for u in more.operations)
            if n_ops > 4000:
                raise InvalidArgument("a batch update may hold at most 4000 operations")
            groups.extend(more.operations)
            routes.extend(self._route(app, group.uri, "write") for group in more.operations)
        silent, remote = [], []
        for group, route in zip(groups, routes, strict=True):
            if route.hosted is None:
                remote.append((route, group))
                continue
            for op in group.operations:
                values = check_values(route.hosted, codec.from_bucket(op.values), inserting=False)
                silent.append(
                    (group.uri, (route.hosted, self._predicates(route.hosted, op.predicates), values))
                )
        results: dict[str, list[int]] = {}
        if silent:
            ops = [op for _, op in silent]
            wheres = [(h, build_where_for_write(h.table, c, h.pk), list(v)) for h, c, v in ops]

            def update(found: Sequence[Targets | None], budget: Budget) -> list[int] | None:
                return self._store.batch_update(ops, budget, found)

            counts = await self._write_found(self._budget(context), wheres, update, [0] * len(ops))
            self._queued(*(h for h, _, _ in ops))
            for (uri, _), count in zip(silent, counts, strict=True):
                results.setdefault(uri, []).append(count)
        for route, group in remote:
            reply = await self._extension(
                route, app, "batch_update", pb.BatchUpdateRequest(operations=[group])
            )
            for r in reply.batch_update.results:
                results.setdefault(r.uri, []).extend(r.counts)
        return pb.BatchUpdateResponse(
            results=[pb.UriUpdateResults(uri=u, counts=c) for u, c in results.items()]
        )

    async def Query(self, request: pb.QueryRequest, context: Any) -> AsyncIterator[pb.QueryResponse]:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_batch_bytes, "the query")
        route = self._route(app, request.uri, "read")
        page_rows = request.page_rows or self._settings.page_rows
        if route.hosted is None:
            reply = await self._extension(route, app, "query", request)
            columns = list(reply.query.columns)
            values = codec.decode_page(reply.query.page)
            rows = list(zip(*values, strict=True))
            types: list[int] = [c.type for c in columns]
            first = True
            for start in range(0, max(len(rows), 1), page_rows):
                for out in self._pages(rows[start : start + page_rows], len(columns), types):
                    if first:
                        out.columns.extend(columns)
                        first = False
                    yield out
            return
        hosted = route.hosted
        compiled = self._predicates(hosted, request.predicates)
        budget = self._budget(context)
        names, pages, conn = await self._open_query(
            budget, hosted, compiled, list(request.columns) or None, page_rows
        )
        try:
            declared = [_DECLARED[hosted.spec.column(n).type] for n in names]
            header = [
                pb.ColumnInfo(name=n, type=t)  # type: ignore[arg-type]  # DataType is an int
                for n, t in zip(names, declared, strict=True)
            ]
            ncols = len(names)

            def encode_next() -> list[pb.QueryResponse] | None:
                """On a reader thread: fetch the next page and encode it, off the event loop."""
                page = next(pages, None)
                return None if page is None else self._pages(page, ncols, declared)

            # one page is fetched and encoded while the previous one is on its way to the client
            sent_header = False
            stop = functools.partial(self._db.watchdog.cancel, budget)
            async with contextlib.aclosing(prefetched(self._db.read, encode_next, stop)) as batches:
                async for msgs in batches:
                    for msg in msgs:
                        if not sent_header:
                            msg.columns.extend(header)
                            sent_header = True
                        yield msg
            if not sent_header:
                msg = pb.QueryResponse(columns=header)
                codec.encode_rows([], ncols, msg.page, declared)
                yield msg
        finally:
            await self._db.read(_close_query, pages, conn, budget)

    async def _open_query(
        self, budget: Budget, hosted: HostedTable, compiled: Any, columns: list[str] | None, page_rows: int
    ) -> tuple[list[str], Iterator[Sequence[Any]], Any]:
        """Opens a query's cursor on a reader thread. A call cancelled meanwhile stops the statement,
        and the cursor it may still have opened is closed before the cancellation goes on."""
        opening = asyncio.ensure_future(
            self._db.read(self._store.query, hosted, compiled, columns, page_rows, budget)
        )
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            self._db.watchdog.cancel(budget)
            await asyncio.wait([opening])
            if not opening.cancelled() and opening.exception() is None:
                _, pages, conn = opening.result()
                await self._db.read(_close_query, pages, conn, budget)
            raise

    def _pages(self, rows: Sequence[Any], ncols: int, declared: list[int]) -> list[pb.QueryResponse]:
        """Encodes rows as one page, split in halves while a page is over the byte limit."""
        msg = pb.QueryResponse()
        codec.encode_rows(rows, ncols, msg.page, declared)
        if len(rows) > 1 and msg.page.ByteSize() > self._settings.max_page_bytes:
            half = len(rows) // 2
            return self._pages(rows[:half], ncols, declared) + self._pages(rows[half:], ncols, declared)
        return [msg]

    # ---- retrieval (indexed tables) ----

    async def Retrieve(self, request: pb.RetrieveRequest, context: Any) -> pb.RetrieveResponse:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the retrieve")
        hosted, found = await self._retrieve(app, request, self._budget(context))
        out = pb.RetrieveResponse(pending=found.pending)
        for hit, values in found.rows:
            row = out.rows.add(row_id=row_id(hosted, hit.key), score=hit.score, column=hit.column)
            codec.to_bucket(values, row.values.values)
        return out

    async def retrieve_as(
        self,
        bundle: str,
        uri: str,
        query: str,
        k: int = 0,
        predicates: pb.Predicates | bytes | None = None,
        mode: int = pb.RETRIEVE_MODE_UNSPECIFIED,
        column: str = "",
        columns: Sequence[str] = (),
    ) -> list[RetrievedRow]:
        """Retrieve as app `bundle` would call it, with its permissions (PermissionDenied where it may
        not read the table, Unauthenticated once it was removed): for daemon features that act for an
        app, such as the AI service's grounded answers. `predicates` may be serialized."""
        app = self._apps.current(bundle)
        if app is None:
            raise Unauthenticated(f"no app {bundle!r} is registered")
        request = pb.RetrieveRequest(uri=uri, query=query, k=k, column=column, columns=columns)
        request.mode = mode  # type: ignore[assignment]  # RetrieveMode is an int
        if isinstance(predicates, bytes):
            try:
                request.predicates.ParseFromString(predicates)
            except Exception:  # protobuf's DecodeError
                raise InvalidArgument("the predicates are not a serialized datamgr.v1.Predicates") from None
        elif predicates is not None:
            request.predicates.CopyFrom(predicates)
        self._limit(request, self._settings.max_call_bytes, "the retrieve")
        budget = Budget(self._settings.max_statement_ms, "datashare.max_statement_ms")
        hosted, found = await self._retrieve(app, request, budget)
        return [
            RetrievedRow(hosted.uri, row_id(hosted, hit.key), hit.key, hit.score, hit.column, values)
            for hit, values in found.rows
        ]

    async def _retrieve(
        self, app: App, request: pb.RetrieveRequest, budget: Budget
    ) -> tuple[HostedTable, Found]:
        """The read permission exactly as Query checks it, the call checked (`retrieval.plan`), the
        query embedded, the search run on a reader within `budget`."""
        route = self._route(app, request.uri, "read")
        if route.hosted is None:
            raise InvalidArgument(
                f"{route.uri} is served by the provider's extension; retrieve from hosted tables only"
            )
        hosted = route.hosted
        indexer = self._indexer
        embedder = indexer.embedder if indexer is not None else None
        checked = plan(
            self._settings,
            hosted,
            request.query,
            request.k,
            request.mode,
            request.column,
            request.columns,
            None if embedder is not None else indexer.unavailable if indexer is not None else "",
        )
        compiled = self._predicates(hosted, request.predicates)
        check_predicates(hosted, compiled)
        indexes, query_vector = {}, None
        if checked.vector:
            assert indexer is not None and embedder is not None
            for col in checked.vector:
                indexes[col] = await indexer.vector_index(hosted, col)
            query_vector = (await embedder.embed([checked.query]))[0]
        search = Search(
            hosted,
            compiled.where,
            checked.query,
            checked.k,
            checked.columns,
            indexes,
            checked.fulltext,
            query_vector,
        )
        return hosted, await self._read(budget, self._retriever.run, search)

    # ---- change notification ----

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Any
    ) -> AsyncIterator[pb.SubscribeResponse]:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the subscription")
        uri = parse_table_uri(request.uri)
        route = self._route(app, request.uri, "read")
        if route.hosted is None:
            raise InvalidArgument(
                f"{uri} is served by the provider's extension; subscribe to hosted tables only"
            )
        key = route.hosted.uri
        allowed = self._apps.guard(app, lambda now: self._route(now, request.uri, "read"))
        sub = self._feed.subscribe(app.bundle, key, allowed)
        try:
            yield pb.SubscribeResponse(subscribed=pb.Subscribed())
            chunk = self._settings.change_chunk_rows
            while True:
                change = await sub.next()  # raises once a byte cap overflowed or the app lost access
                if change is None:
                    return
                for start in range(0, max(len(change.rows), 1), chunk):
                    info = pb.ChangeInfo(
                        type=_CHANGE_TYPES[change.type], uri=change.uri, device_id=change.device
                    )
                    for row in change.rows[start : start + chunk]:
                        codec.to_bucket(row, info.values.add().values)
                    yield pb.SubscribeResponse(change=info)
        finally:
            self._feed.unsubscribe(sub)

    # ---- sync of distributed tables ----

    async def Sync(self, request: pb.SyncRequest, context: Any) -> pb.SyncResponse:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the sync")
        if DISTRIBUTED_DATASYNC not in app.permissions:
            raise PermissionDenied(f"{app.bundle} lacks {DISTRIBUTED_DATASYNC}, which sync needs")
        route = self._route(app, request.uri, "read")
        if route.hosted is None:
            raise InvalidArgument(
                f"{route.uri} is served by the provider's extension; only hosted tables sync"
            )
        mode, devices = sync_api.requested(request.mode, request.device_ids)
        if self._distributed is None:
            raise Unavailable("sync between devices is not running on this device")
        statuses = await self._distributed.sync(route.hosted, devices, mode)
        return pb.SyncResponse(statuses=sync_api.statuses(statuses))

    # ---- published data ----

    def _publisher(self, bundle: str) -> str:
        """The publisher's bundle name, checked; NotFound (OpenHarmony 15700012) when no such app exists."""
        check_bundle(bundle)
        try:
            self._apps.get(bundle)
        except NotFound:
            raise NotFound(f"the data area of {bundle} does not exist: no such app is registered") from None
        return bundle

    def _check_published_read(self, app: App, bundle: str) -> None:
        self._publisher(bundle)
        manifest = self._providers.manifest(bundle)
        permission = manifest.published_read_permission if manifest is not None else None
        policy.check_silent(
            app.bundle, app.permissions, bundle, permission, None, "read", f"the published data of {bundle}"
        )

    async def Publish(self, request: pb.PublishRequest, context: Any) -> pb.PublishResponse:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the publish")
        bundle = self._publisher(request.bundle)
        if app.bundle != bundle:
            raise PermissionDenied(f"{app.bundle} may not publish for {bundle}: apps publish their own data")
        if len(request.items) > MAX_ITEMS:
            raise InvalidArgument(f"a publish may carry at most {MAX_ITEMS} items, not {len(request.items)}")
        items = [_item_from_proto(m) for m in request.items]
        results = await self._db.write(self._published.publish, bundle, items, request.version)
        return pb.PublishResponse(
            results=[pb.OperationResult(key=r.key, result=r.result, message=r.message) for r in results]
        )

    async def GetPublishedData(
        self, request: pb.GetPublishedDataRequest, context: Any
    ) -> pb.GetPublishedDataResponse:
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the request")
        self._check_published_read(app, request.bundle)
        items = await self._db.read(self._published.get, request.bundle)
        return pb.GetPublishedDataResponse(items=[_item_to_proto(i) for i in items])

    async def SubscribePublishedData(
        self, request: pb.SubscribePublishedDataRequest, context: Any
    ) -> AsyncIterator[pb.SubscribePublishedDataResponse]:
        """`subscribed`, then the items already stored (as OpenHarmony emits on subscribe), then changes.

        One subscription covers one publisher. The read permission is checked again before each change
        and when the owner revokes one: losing it ends the stream with PERMISSION_DENIED.
        """
        app = app_of(self._identify(context))
        self._limit(request, self._settings.max_call_bytes, "the subscription")
        if not request.uris:
            raise InvalidArgument("subscribe to at least one datashareproxy:// uri")
        uris = [parse_proxy_uri(u) for u in request.uris]
        bundle = uris[0].bundle
        if any(u.bundle != bundle for u in uris):
            raise InvalidArgument("a subscription's uris must name one publisher; subscribe to each alone")
        subscriber_id = check_subscriber_id(request.subscriber_id)
        self._check_published_read(app, bundle)
        keys = frozenset((str(u), subscriber_id) for u in uris)

        def allowed() -> None:
            """The whole read check per batch (published data changes seldom), and on a revoke."""
            now = self._apps.current(app.bundle)
            if now is None:
                raise Unauthenticated(f"app {app.bundle} was removed by the device owner")
            self._check_published_read(now, bundle)

        sub = self._published_feed.subscribe(app.bundle, bundle, allowed)
        try:
            yield pb.SubscribePublishedDataResponse(subscribed=pb.Subscribed())
            seen, current = await self._db.write(self._published.snapshot, keys)
            for msg in self._published_changes(bundle, current):
                yield msg
            while True:
                batch = await sub.next()  # raises once a byte cap overflowed or the app lost access
                if batch is None:
                    return
                if batch.seq <= seen:
                    continue  # the snapshot holds it already
                data = [i for i in batch.items if (i.key, i.subscriber_id) in keys]
                if data:
                    for msg in self._published_changes(bundle, data):
                        yield msg
        finally:
            self._published_feed.unsubscribe(sub)

    def _published_changes(
        self, bundle: str, items: list[PublishedItem]
    ) -> list[pb.SubscribePublishedDataResponse]:
        """Items as PublishedDataChange messages, each at most about the call limit in size."""
        out: list[pb.SubscribePublishedDataResponse] = []
        size = 0
        for item in items:
            msg = _item_to_proto(item)
            if not out or size + msg.ByteSize() > self._settings.max_call_bytes:
                out.append(pb.SubscribePublishedDataResponse(change=pb.PublishedDataChange(bundle=bundle)))
                size = 0
            out[-1].change.data.append(msg)
            size += msg.ByteSize()
        return out

    # ---- extension mode ----

    async def AttachProvider(
        self, request_iterator: AsyncIterator[pb.ProviderMessage], context: Any
    ) -> AsyncIterator[pb.ProviderCall]:
        """A provider process attaches its live handler; it always attaches as its own app's bundle.

        The provider's hello is read before anything can fail: aborting while the client is still
        writing its first message makes grpc report "Internal error from Core" instead of our status."""
        incoming = aiter(request_iterator)
        first = await anext(incoming, None)
        app = app_of(self._identify(context))
        if first is None or first.WhichOneof("msg") != "hello":
            raise InvalidArgument("a provider opens the stream with ProviderMessage{hello}")
        async for call in self._extensions.attach(app.bundle, incoming, self._apps.guard(app)):
            yield call

    def revoked(self, bundle: str) -> None:
        """The owner revoked a permission of `bundle` or removed it (on the loop): its subscriptions
        that may no longer read end now, and a removed provider's extension is detached."""
        self._feed.recheck(bundle)
        self._published_feed.recheck(bundle)
        if self._apps.current(bundle) is None:
            self._extensions.end(bundle, Unauthenticated(f"app {bundle} was removed by the device owner"))


def _close_query(pages: Any, conn: Any, budget: Budget) -> None:
    """Ends a query's cursor, then its connection. A connection the watchdog interrupted is not reused:
    an interrupt that lands as a step finishes stays set in SQLite while a statement is active on the
    connection, and stopped the next call's statement there (INTERNAL "interrupted")."""
    pages.close()  # finalizes the statement (see store._tuple_pages)
    if budget.cancelled or budget.fired is not None:
        conn.invalidate()
    conn.close()

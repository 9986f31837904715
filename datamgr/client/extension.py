"""DataShareExtension: the provider side of extension mode (OpenHarmony's DataShareExtensionAbility).

An app subclasses it and overrides the callbacks it supports; the daemon routes consumers' calls on the
app's URIs to them. Each callback gets the consumer's bundle as `caller`.

    class Contacts(DataShareExtension):
        def insert(self, uri, values, *, caller):
            return my_db.add(values)

    ext = Contacts().start(token=...)      # returns once attached; or ext.serve(...) to block
    ...
    ext.stop()

A callback that raises a DatamgrError (NotFound, InvalidArgument, ...) gives the consumer that code and
message; any other exception gives UNKNOWN with "<ExcType>: <message>", and the provider keeps serving.
Callbacks not overridden raise Unsupported (UNIMPLEMENTED). The provider attaches as the bundle of its
token: the daemon never lets an app answer for another.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from datamgr import _stream
from datamgr import values as codec
from datamgr.connection import (
    error_from_rpc,
    metadata,
    open_aio_channel,
    open_channel,
    resolve_token,
)
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.errors import DatamgrError, TooLarge, Unavailable, Unsupported
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc
from datamgr.values import Cell

QueryResult = tuple[Sequence[str], Sequence[Sequence[Cell] | Mapping[str, Cell]]]
BatchUpdateOperations = dict[str, list[tuple[dict[str, Cell], DataSharePredicates]]]
_HELLO = pb.ProviderMessage(hello=pb.ProviderHello())


# ---- the wire, shared by both flavours ----


def _arguments(call: pb.ProviderCall) -> tuple[str, tuple[Any, ...]]:
    """The callback name and its positional arguments for one call from the daemon."""
    op = call.WhichOneof("op")
    req: Any = getattr(call, op) if op else None
    if op == "insert":
        return op, (req.uri, codec.from_bucket(req.values))
    if op == "batch_insert":
        columns = codec.decode_page(req.rows)
        rows = [dict(zip(req.columns, row, strict=True)) for row in zip(*columns, strict=True)]
        return op, (req.uri, rows if columns else [{} for _ in range(req.rows.row_count)])
    if op == "update":
        return op, (req.uri, DataSharePredicates.from_proto(req.predicates), codec.from_bucket(req.values))
    if op == "delete":
        return op, (req.uri, DataSharePredicates.from_proto(req.predicates))
    if op == "query":
        return op, (req.uri, DataSharePredicates.from_proto(req.predicates), list(req.columns))
    if op == "batch_update":
        operations: BatchUpdateOperations = {}
        for group in req.operations:
            operations.setdefault(group.uri, []).extend(
                (codec.from_bucket(o.values), DataSharePredicates.from_proto(o.predicates))
                for o in group.operations
            )
        return op, (operations,)
    raise Unsupported(f"this provider SDK does not know the operation {op!r}")


def _int(result: object, op: str) -> int:
    if isinstance(result, bool) or not isinstance(result, int):
        raise TypeError(f"{op}() must return an int, not {type(result).__name__}")
    return result


def _reply(call_id: int, op: str, result: Any) -> pb.ProviderReply:
    """Encodes a callback's return value as the reply to call `call_id`."""
    reply = pb.ProviderReply(call_id=call_id)
    if op == "insert":
        reply.row_id = _int(result, op)
    elif op in ("batch_insert", "update", "delete"):
        reply.count = _int(result, op)
    elif op == "query":
        names, rows = result
        names = list(names)
        cells = [tuple(r.get(n) for n in names) if isinstance(r, Mapping) else tuple(r) for r in rows]
        for i, row in enumerate(cells):
            if len(row) != len(names):
                raise TypeError(f"query() row {i} has {len(row)} values for {len(names)} columns")
        codec.encode_rows(cells, len(names), reply.query.page)
        reply.query.columns.extend(
            pb.ColumnInfo(name=n, type=c.type) for n, c in zip(names, reply.query.page.columns, strict=True)
        )
        if (size := reply.ByteSize()) > _stream.MESSAGE_BYTES - 1024:  # else the daemon ends the stream
            raise TooLarge(
                f"the query result is {size} bytes, over one message of the daemon (max_message_bytes, "
                f"{_stream.MESSAGE_BYTES} by default): the consumer should ask for fewer rows"
            )
    else:
        for uri, counts in dict(result).items():
            reply.batch_update.results.add(uri=uri, counts=[_int(c, op) for c in counts])
    return reply


def _error(call_id: int, exc: Exception) -> pb.ProviderReply:
    if isinstance(exc, DatamgrError):
        error = pb.ProviderError(code=exc.code, message=exc.message)
    else:
        error = pb.ProviderError(code="UNKNOWN", message=f"{type(exc).__name__}: {exc}")
    return pb.ProviderReply(call_id=call_id, error=error)


def _unsupported(op: str) -> Unsupported:
    return Unsupported(f"the provider does not support {op}")


# ---- blocking flavour ----


class DataShareExtension:
    """Base class of a provider's live handler; callbacks run on a pool of `max_workers` threads."""

    def __init__(self, max_workers: int = 4) -> None:
        self.bundle: str | None = None  # set once attached: the bundle the daemon routes to us
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._stream: Any = None
        self._outbox: queue.SimpleQueue[pb.ProviderMessage | None] = queue.SimpleQueue()
        self._stopping = False
        self._ready = threading.Event()  # attached, or serving ended
        self._done = threading.Event()  # serving ended
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ---- callbacks (override the ones the provider supports) ----

    def insert(self, uri: str, values: dict[str, Cell], *, caller: str) -> int:
        """Returns the new row's id."""
        raise _unsupported("insert")

    def batch_insert(self, uri: str, rows: list[dict[str, Cell]], *, caller: str) -> int:
        """Returns the number of rows inserted."""
        raise _unsupported("batch_insert")

    def update(
        self, uri: str, predicates: DataSharePredicates, values: dict[str, Cell], *, caller: str
    ) -> int:
        """Returns the number of rows changed."""
        raise _unsupported("update")

    def delete(self, uri: str, predicates: DataSharePredicates, *, caller: str) -> int:
        """Returns the number of rows deleted."""
        raise _unsupported("delete")

    def query(
        self, uri: str, predicates: DataSharePredicates, columns: list[str], *, caller: str
    ) -> QueryResult:
        """Returns (column names, rows); rows are tuples in column order or dicts by column name."""
        raise _unsupported("query")

    def batch_update(self, operations: BatchUpdateOperations, *, caller: str) -> dict[str, list[int]]:
        """`{uri: [(values, predicates), ...]}` → `{uri: [count, ...]}`, -1 for a failed operation."""
        raise _unsupported("batch_update")

    # ---- running ----

    def serve(self, address: str | None = None, token: str | None = None) -> None:
        """Attaches and answers calls until `stop()` or the daemon ends the connection.

        Raises the daemon's error when attaching fails (AlreadyExists: another process serves this
        bundle) or the connection breaks (Unavailable).
        """
        self._stopping = False
        self._serve(address, token)

    def start(
        self, address: str | None = None, token: str | None = None, timeout: float = 10.0
    ) -> DataShareExtension:
        """Serves on a background thread; returns once the daemon confirmed the attachment."""
        if self._thread is not None:
            raise DatamgrError("the extension is already started")
        self._stopping, self._error = False, None
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._run, args=(address, token), name="datashare-extension", daemon=True
        )
        self._thread.start()
        attached = self._ready.wait(timeout) and self._error is None and self._thread.is_alive()
        if not attached:
            error = self._error
            self.stop()
            if isinstance(error, DatamgrError):
                raise error
            raise Unavailable(f"the daemon did not confirm the attachment within {timeout:g} s") from error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Detaches; calls in flight are dropped (their consumers get UNAVAILABLE).

        Ends the stream and waits for the daemon to close it, so that once this returns the bundle is
        free to attach again; cancels the stream if the daemon does not answer within `timeout`.
        """
        with self._lock:
            self._stopping = True
            stream = self._stream
        if stream is not None:
            self._outbox.put(None)  # half-close: the daemon detaches us, then ends its side
            if not self._done.wait(timeout):
                stream.cancel()
                self._done.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> DataShareExtension:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, address: str | None, token: str | None) -> None:
        try:
            self._serve(address, token)
        except Exception as exc:
            self._error = exc
        finally:
            self._ready.set()

    def _serve(self, address: str | None, token: str | None) -> None:
        md = metadata(resolve_token(token))
        outbox: queue.SimpleQueue[pb.ProviderMessage | None] = queue.SimpleQueue()
        pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="datashare-extension-call")
        channel = open_channel(address)  # TLS to a TCP listener: DATAMGR_TLS_FINGERPRINT
        try:
            stream = pb_grpc.DataShareServiceStub(channel).AttachProvider(_outgoing(outbox), metadata=md)
            with self._lock:
                self._stream, self._outbox = stream, outbox
                self._done.clear()
                if self._stopping:
                    stream.cancel()
            for call in stream:
                if call.WhichOneof("op") == "attached":
                    self.bundle = call.attached.bundle
                    self._ready.set()
                else:
                    pool.submit(self._answer, call, outbox)
        except grpc.RpcError as exc:
            if not self._stopping:
                raise error_from_rpc(exc) from None
        finally:
            with self._lock:
                self._stream = None
            outbox.put(None)
            pool.shutdown(wait=False, cancel_futures=True)
            channel.close()
            self._done.set()

    def _answer(self, call: pb.ProviderCall, outbox: queue.SimpleQueue[pb.ProviderMessage | None]) -> None:
        try:
            op, args = _arguments(call)
            reply = _reply(call.call_id, op, getattr(self, op)(*args, caller=call.caller))
        except Exception as exc:
            reply = _error(call.call_id, exc)
        outbox.put(pb.ProviderMessage(reply=reply))


def _outgoing(outbox: queue.SimpleQueue[pb.ProviderMessage | None]) -> Iterator[pb.ProviderMessage]:
    yield _HELLO
    while (msg := outbox.get()) is not None:
        yield msg


# ---- asyncio flavour ----


class AsyncDataShareExtension:
    """DataShareExtension with `async def` callbacks, run as concurrent tasks on the caller's loop."""

    def __init__(self) -> None:
        self.bundle: str | None = None
        self._attached = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[pb.ProviderMessage | None] | None = None

    async def insert(self, uri: str, values: dict[str, Cell], *, caller: str) -> int:
        raise _unsupported("insert")

    async def batch_insert(self, uri: str, rows: list[dict[str, Cell]], *, caller: str) -> int:
        raise _unsupported("batch_insert")

    async def update(
        self, uri: str, predicates: DataSharePredicates, values: dict[str, Cell], *, caller: str
    ) -> int:
        raise _unsupported("update")

    async def delete(self, uri: str, predicates: DataSharePredicates, *, caller: str) -> int:
        raise _unsupported("delete")

    async def query(
        self, uri: str, predicates: DataSharePredicates, columns: list[str], *, caller: str
    ) -> QueryResult:
        raise _unsupported("query")

    async def batch_update(self, operations: BatchUpdateOperations, *, caller: str) -> dict[str, list[int]]:
        raise _unsupported("batch_update")

    async def serve(self, address: str | None = None, token: str | None = None) -> None:
        """Attaches and answers calls until cancelled or the daemon ends the connection."""
        md = metadata(resolve_token(token))
        outbox: asyncio.Queue[pb.ProviderMessage | None] = asyncio.Queue()
        self._outbox = outbox
        tasks: set[asyncio.Task[None]] = set()

        async def outgoing() -> AsyncIterator[pb.ProviderMessage]:
            yield _HELLO
            while (msg := await outbox.get()) is not None:
                yield msg

        async with open_aio_channel(address) as channel:  # TLS: DATAMGR_TLS_FINGERPRINT
            stream = pb_grpc.DataShareServiceStub(channel).AttachProvider(outgoing(), metadata=md)
            try:
                async for call in stream:
                    if call.WhichOneof("op") == "attached":
                        self.bundle = call.attached.bundle
                        self._attached.set()
                        continue
                    task = asyncio.create_task(self._answer(call, outbox))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            except grpc.RpcError as exc:
                raise error_from_rpc(exc) from None
            finally:
                self._attached.clear()
                for task in tasks:
                    task.cancel()

    async def start(
        self, address: str | None = None, token: str | None = None, timeout: float = 10.0
    ) -> AsyncDataShareExtension:
        """Serves in a task; returns once the daemon confirmed the attachment."""
        self._attached = asyncio.Event()
        self._task = asyncio.create_task(self.serve(address, token))
        attached = asyncio.create_task(self._attached.wait())
        done, _ = await asyncio.wait(
            {self._task, attached}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        attached.cancel()
        if self._task in done:
            task, self._task = self._task, None
            task.result()  # raises the daemon's error
            raise Unavailable("the daemon ended the connection before confirming the attachment")
        if not done:
            await self.stop()
            raise Unavailable(f"the daemon did not confirm the attachment within {timeout:g} s")
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Detaches like DataShareExtension.stop: half-closes, waits for the daemon, else cancels."""
        if self._task is None:
            return
        task, self._task = self._task, None
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _answer(self, call: pb.ProviderCall, outbox: asyncio.Queue[pb.ProviderMessage | None]) -> None:
        try:
            op, args = _arguments(call)
            reply = _reply(call.call_id, op, await getattr(self, op)(*args, caller=call.caller))
        except Exception as exc:
            reply = _error(call.call_id, exc)
        outbox.put_nowait(pb.ProviderMessage(reply=reply))

"""The Python SDK of UDMF: `UdmfClient` (blocking) and `AsyncUdmfClient` (asyncio), OpenHarmony's
`unifiedDataChannel` calls in snake case.

with UdmfClient.connect(token=...) as udmf:        # address: DATAMGR_ADDRESS or the daemon's socket
    key = udmf.insert_data(UnifiedData(UnifiedRecord(PlainText("hello"))))
    (data,) = udmf.query_data(key=key)

Data streams both ways in parts (`udmf._wire`), so a 100 MB value is never one message. `get_data`
reports progress (0-100) to a callback and can save blobs straight to files (`out_dir`). Cancelling:
the sync `get_data` takes a `cancel` threading.Event, which any thread may set (the call is cancelled
and raises udmf.errors.Cancelled; an exception raised by the progress callback also cancels
it, and propagates); the async one is cancelled with its task. Either way the daemon consumes nothing.
Errors raise the `udmf.errors` classes by gRPC status code (the rule every SDK follows is in
`datamgr.errors`); the connection is every SDK's, `datamgr.connection`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from datamgr.connection import metadata, open_aio_channel, open_channel, resolve_token
from udmf import _wire
from udmf._drag_source import AsyncLazyDrag, AsyncLoader, LazyDrag, Loader, start_message
from udmf._fastwire import decode_read
from udmf._rpc import (
    ERRORS,
    SummaryResult,
    TypeInfo,
    cancelled,
    checked,
    declaration_to_proto,
    error_from_rpc,
    one_data,
    query_types_request,
    summary_result,
    type_info_from_proto,
    watch_cancel,
)
from udmf.data import Intention, Summary, UnifiedData, UnifiedDataProperties, Visibility
from udmf.v1 import udmf_pb2 as pb
from udmf.v1 import udmf_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["UdmfService"].full_name

Progress = Callable[[int], object]


class _Base:
    def __init__(self, channel: Any, token: str, blob_threshold: int, chunk_bytes: int) -> None:
        self._channel = channel
        self._stub = pb_grpc.UdmfServiceStub(channel)
        for name, request in (
            ("GetData", pb.GetDataRequest),
            ("QueryData", pb.QueryDataRequest),
            ("DeleteData", pb.DeleteDataRequest),
        ):  # chunks arrive as RawChunk
            setattr(
                self._stub,
                name,
                channel.unary_stream(
                    f"/{SERVICE}/{name}",
                    request_serializer=request.SerializeToString,
                    response_deserializer=decode_read,
                ),
            )
        self._md = metadata(token)
        self._encoding = {"blob_threshold": blob_threshold, "chunk_bytes": chunk_bytes}

    def _writes(self, options: pb.WriteOptions | None, data: UnifiedData) -> Iterator[pb.WriteRequest]:
        if options is not None:
            yield pb.WriteRequest(options=options)
        for part in _wire.encode(data, **self._encoding):
            yield pb.WriteRequest(part=part)


class UdmfClient(_Base):
    """Blocking UDMF client. `grant_access` needs the system role (a client made with the admin token);
    `timeout=` (seconds) sets a call's deadline."""

    def __init__(
        self,
        channel: grpc.Channel,
        token: str,
        blob_threshold: int = _wire.BLOB_THRESHOLD,
        chunk_bytes: int = _wire.CHUNK_BYTES,
    ) -> None:
        super().__init__(channel, token, blob_threshold, chunk_bytes)

    @classmethod
    def connect(
        cls,
        address: str | None = None,
        token: str | None = None,
        tls_fingerprint: str | None = None,
        **kwargs: int,
    ) -> UdmfClient:
        """`tls_fingerprint` (or DATAMGR_TLS_FINGERPRINT): the certificate a TCP listener must present."""
        token = resolve_token(token, ERRORS)
        return cls(open_channel(address, tls_fingerprint, ERRORS), token, **kwargs)

    def _call(self, fn: Any, request: Any, timeout: float | None) -> Any:
        try:
            return fn(request, metadata=self._md, timeout=timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def _read(
        self,
        call: Any,
        progress: Progress | None = None,
        out_dir: Path | None = None,
        cancel: threading.Event | None = None,
    ) -> list[UnifiedData]:
        assembler = _wire.Assembler(_wire.file_sink(out_dir) if out_dir is not None else None)
        finished = threading.Event()
        if cancel is not None:
            threading.Thread(target=watch_cancel, args=(call, cancel, finished), daemon=True).start()
        try:
            last = -1
            for message in call:
                if cancel is not None and cancel.is_set():  # at once: the daemon may be parts ahead
                    call.cancel()
                    raise cancelled("get_data")
                assembler.feed(message)
                if progress is not None and assembler.progress != last:
                    last = assembler.progress
                    progress(last)
            return assembler.finish()
        except grpc.RpcError as exc:
            assembler.abort()
            if cancel is not None and cancel.is_set():
                raise cancelled("get_data") from None
            raise error_from_rpc(exc) from None
        except BaseException:
            assembler.abort()
            raise
        finally:
            finished.set()
            call.cancel()  # a no-op once the call is over

    # -- channels -------------------------------------------------------------------------------

    def insert_data(
        self,
        data: UnifiedData,
        intention: Intention = Intention.DATA_HUB,
        visibility: Visibility = Visibility.ALL,
        *,
        timeout: float | None = None,
    ) -> str:
        """Writes `data` into a channel (not DRAG); returns its key `udmf://{intention}/{bundle}/{id}`."""
        options = pb.WriteOptions(
            intention=_wire.intention_to_proto(intention),  # type: ignore[arg-type]
            visibility=_wire.visibility_to_proto(visibility),  # type: ignore[arg-type]
        )
        resp = self._call(self._stub.InsertData, self._writes(options, checked(data)), timeout)
        return str(resp.key)

    def update_data(self, key: str, data: UnifiedData, *, timeout: float | None = None) -> None:
        """Replaces the DATA_HUB data under `key`; only its writer may."""
        options = pb.WriteOptions(key=key)
        self._call(self._stub.UpdateData, self._writes(options, checked(data)), timeout)

    def query_data(
        self, key: str | None = None, intention: Intention | None = None, *, timeout: float | None = None
    ) -> list[UnifiedData]:
        """The DATA_HUB data under `key`, or all of the channel the caller may see."""
        req = pb.QueryDataRequest(key=key or "", intention=_wire.intention_to_proto(intention))  # type: ignore[arg-type]
        return self._read(self._stub.QueryData(req, metadata=self._md, timeout=timeout))

    def delete_data(
        self, key: str | None = None, intention: Intention | None = None, *, timeout: float | None = None
    ) -> list[UnifiedData]:
        """Deletes the caller's DATA_HUB data under `key` or in the channel; returns what it deleted."""
        req = pb.DeleteDataRequest(key=key or "", intention=_wire.intention_to_proto(intention))  # type: ignore[arg-type]
        return self._read(self._stub.DeleteData(req, metadata=self._md, timeout=timeout))

    def get_data(
        self,
        key: str,
        progress: Progress | None = None,
        out_dir: str | Path | None = None,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> UnifiedData:
        """Reads the data under `key` (a granted app: once, for DRAG and the system channels).

        `progress(percent)` is called as parts arrive. With `out_dir`, every blob is written to a file
        there and its value is that file's Path. Setting `cancel` stops the transfer (CANCELLED).
        """
        call = self._stub.GetData(pb.GetDataRequest(key=key), metadata=self._md, timeout=timeout)
        directory = Path(out_dir) if out_dir is not None else None
        return one_data(self._read(call, progress, directory, cancel), key)

    def get_summary(self, key: str, *, timeout: float | None = None) -> SummaryResult:
        """(summary, properties, intention, writer) of the data under `key`, without the data."""
        return summary_result(self._call(self._stub.GetSummary, pb.GetSummaryRequest(key=key), timeout))

    # -- drag and grants ------------------------------------------------------------------------

    def set_drag_data(self, data: UnifiedData, *, timeout: float | None = None) -> str:
        """The drag source's data; returns the key the drop target will be granted."""
        resp = self._call(self._stub.SetDragData, self._writes(None, checked(data)), timeout)
        return str(resp.key)

    def start_lazy_drag(
        self,
        properties: UnifiedDataProperties,
        summary: Summary | Iterable[str],
        loader: Loader,
        record_count: int = 1,
        *,
        timeout: float | None = 10.0,
    ) -> LazyDrag:
        """Starts a drag whose data `loader()` makes when a target reads; `close()` ends it.
        `summary` may be just the types, `record_count` is what the loader will make (the daemon wants at
        least 1); `timeout` bounds the wait for the key."""
        start = start_message(properties, summary, record_count)
        return LazyDrag(self._stub, self._md, start, loader, self._encoding, timeout)

    def grant_access(
        self, key: str, bundle: str, keep: bool = False, *, timeout: float | None = None
    ) -> None:
        """The system role lets `bundle` read `key` (once, unless `keep`)."""
        self._call(self._stub.GrantAccess, pb.GrantAccessRequest(key=key, bundle=bundle, keep=keep), timeout)

    # -- types ----------------------------------------------------------------------------------

    def query_types(
        self,
        type_id: str | None = None,
        filename_extension: str | None = None,
        mime_type: str | None = None,
        belongs_to: str | None = None,
        all: bool = False,
        *,
        timeout: float | None = None,
    ) -> list[TypeInfo]:
        """The type with `type_id`, or the first (`all`: every) type of an extension or MIME type."""
        req = query_types_request(type_id, filename_extension, mime_type, belongs_to, all)
        return [type_info_from_proto(t) for t in self._call(self._stub.QueryTypes, req, timeout).types]

    def register_types(
        self, declarations: Sequence[Mapping[str, Any]], *, timeout: float | None = None
    ) -> None:
        """Declares the caller's own types (ids prefixed with its bundle), all or none."""
        req = pb.RegisterTypesRequest(types=[declaration_to_proto(d) for d in declarations])
        self._call(self._stub.RegisterTypes, req, timeout)

    def unregister_types(self, type_ids: Iterable[str], *, timeout: float | None = None) -> None:
        self._call(self._stub.UnregisterTypes, pb.UnregisterTypesRequest(type_ids=list(type_ids)), timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> UdmfClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncUdmfClient(_Base):
    """asyncio UDMF client (grpc.aio): UdmfClient's methods as coroutines."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str,
        blob_threshold: int = _wire.BLOB_THRESHOLD,
        chunk_bytes: int = _wire.CHUNK_BYTES,
    ) -> None:
        super().__init__(channel, token, blob_threshold, chunk_bytes)

    @classmethod
    def connect(
        cls,
        address: str | None = None,
        token: str | None = None,
        tls_fingerprint: str | None = None,
        **kwargs: int,
    ) -> AsyncUdmfClient:
        token = resolve_token(token, ERRORS)
        return cls(open_aio_channel(address, tls_fingerprint, ERRORS), token, **kwargs)

    async def _call(self, fn: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await fn(request, metadata=self._md, timeout=timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    async def _read(
        self, call: Any, progress: Progress | None = None, out_dir: Path | None = None
    ) -> list[UnifiedData]:
        assembler = _wire.Assembler(_wire.file_sink(out_dir) if out_dir is not None else None)
        try:
            last = -1
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return assembler.finish()
                assembler.feed(message)
                if progress is not None and assembler.progress != last:
                    last = assembler.progress
                    progress(last)
        except grpc.RpcError as exc:
            assembler.abort()
            raise error_from_rpc(exc) from None
        except BaseException:  # the task's cancellation too
            assembler.abort()
            raise
        finally:
            call.cancel()

    async def insert_data(
        self,
        data: UnifiedData,
        intention: Intention = Intention.DATA_HUB,
        visibility: Visibility = Visibility.ALL,
        *,
        timeout: float | None = None,
    ) -> str:
        options = pb.WriteOptions(
            intention=_wire.intention_to_proto(intention),  # type: ignore[arg-type]
            visibility=_wire.visibility_to_proto(visibility),  # type: ignore[arg-type]
        )
        resp = await self._call(self._stub.InsertData, self._writes(options, checked(data)), timeout)
        return str(resp.key)

    async def update_data(self, key: str, data: UnifiedData, *, timeout: float | None = None) -> None:
        options = pb.WriteOptions(key=key)
        await self._call(self._stub.UpdateData, self._writes(options, checked(data)), timeout)

    async def query_data(
        self, key: str | None = None, intention: Intention | None = None, *, timeout: float | None = None
    ) -> list[UnifiedData]:
        req = pb.QueryDataRequest(key=key or "", intention=_wire.intention_to_proto(intention))  # type: ignore[arg-type]
        return await self._read(self._stub.QueryData(req, metadata=self._md, timeout=timeout))

    async def delete_data(
        self, key: str | None = None, intention: Intention | None = None, *, timeout: float | None = None
    ) -> list[UnifiedData]:
        req = pb.DeleteDataRequest(key=key or "", intention=_wire.intention_to_proto(intention))  # type: ignore[arg-type]
        return await self._read(self._stub.DeleteData(req, metadata=self._md, timeout=timeout))

    async def get_data(
        self,
        key: str,
        progress: Progress | None = None,
        out_dir: str | Path | None = None,
        *,
        timeout: float | None = None,
    ) -> UnifiedData:
        """As UdmfClient.get_data; cancel the task to stop the transfer."""
        call = self._stub.GetData(pb.GetDataRequest(key=key), metadata=self._md, timeout=timeout)
        directory = Path(out_dir) if out_dir is not None else None
        return one_data(await self._read(call, progress, directory), key)

    async def get_summary(self, key: str, *, timeout: float | None = None) -> SummaryResult:
        req = pb.GetSummaryRequest(key=key)
        return summary_result(await self._call(self._stub.GetSummary, req, timeout))

    async def set_drag_data(self, data: UnifiedData, *, timeout: float | None = None) -> str:
        resp = await self._call(self._stub.SetDragData, self._writes(None, checked(data)), timeout)
        return str(resp.key)

    async def start_lazy_drag(
        self,
        properties: UnifiedDataProperties,
        summary: Summary | Iterable[str],
        loader: AsyncLoader,
        record_count: int = 1,
    ) -> AsyncLazyDrag:
        """As UdmfClient.start_lazy_drag; `loader` may be a coroutine function (do slow work there)."""
        drag = AsyncLazyDrag(self._stub.StartLazyDrag(metadata=self._md), loader, self._encoding)
        await drag._begin(start_message(properties, summary, record_count))
        return drag

    async def grant_access(
        self, key: str, bundle: str, keep: bool = False, *, timeout: float | None = None
    ) -> None:
        req = pb.GrantAccessRequest(key=key, bundle=bundle, keep=keep)
        await self._call(self._stub.GrantAccess, req, timeout)

    async def query_types(
        self,
        type_id: str | None = None,
        filename_extension: str | None = None,
        mime_type: str | None = None,
        belongs_to: str | None = None,
        all: bool = False,
        *,
        timeout: float | None = None,
    ) -> list[TypeInfo]:
        req = query_types_request(type_id, filename_extension, mime_type, belongs_to, all)
        resp = await self._call(self._stub.QueryTypes, req, timeout)
        return [type_info_from_proto(t) for t in resp.types]

    async def register_types(
        self, declarations: Sequence[Mapping[str, Any]], *, timeout: float | None = None
    ) -> None:
        req = pb.RegisterTypesRequest(types=[declaration_to_proto(d) for d in declarations])
        await self._call(self._stub.RegisterTypes, req, timeout)

    async def unregister_types(self, type_ids: Iterable[str], *, timeout: float | None = None) -> None:
        req = pb.UnregisterTypesRequest(type_ids=list(type_ids))
        await self._call(self._stub.UnregisterTypes, req, timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncUdmfClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""DataShareHelper: the consumer (and provider) API of DataShare, sync and asyncio flavours.

helper = DataShareHelper.connect(token=...)             # or AsyncDataShareHelper
row_id = helper.insert("datashare:///com.example.contacts/main/people", {"name": "Ada"})
with helper.query(uri, DataSharePredicates().equal_to("name", "Ada"), ["id", "name"]) as rs:
    while rs.go_to_next_row():
        print(rs.get_long(0), rs.get_string(1))
for row in helper.retrieve(notes_uri, "how do I reset my password", k=5):  # an indexed table
    print(row.score, row.values["title"])
item = PublishedItem("datashareproxy://com.example.weather/today", "sunny")
helper.publish([item], "com.example.weather")          # an app publishes only its own data
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

from datamgr import _stream
from datamgr import values as codec
from datamgr.client._sync import SyncMode, SyncResult, sync_results
from datamgr.client.resultset import DataShareResultSet
from datamgr.connection import (
    acall,
    call,
    error_from_rpc,
    metadata,
    open_aio_channel,
    open_channel,
    resolve_token,
)
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.datashare.published_items import OperationResult, PublishedItem
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc
from datamgr.values import Cell

T = TypeVar("T")
_CHANGE_NAMES = {
    pb.CHANGE_TYPE_INSERT: "INSERT",
    pb.CHANGE_TYPE_UPDATE: "UPDATE",
    pb.CHANGE_TYPE_DELETE: "DELETE",
}


@dataclass(frozen=True, slots=True)
class ChangeInfo:
    """One committed change: type INSERT | UPDATE | DELETE, the table URI, the rows' values, and the
    paired device it came from ("" for a change made on this device)."""

    type: str
    uri: str
    values: list[dict[str, Cell]]
    device_id: str = ""


def change_info(msg: pb.ChangeInfo) -> ChangeInfo:
    return ChangeInfo(
        _CHANGE_NAMES.get(msg.type, "UNSPECIFIED"),
        msg.uri,
        [codec.from_bucket(b.values) for b in msg.values],
        msg.device_id,
    )


def _change_event(msg: pb.SubscribeResponse) -> ChangeInfo:
    return change_info(msg.change)


@dataclass(frozen=True, slots=True)
class PublishedDataChange:
    """Items one publish stored (first: those stored before) for a subscription (PublishedDataChangeNode)."""

    bundle: str
    data: list[PublishedItem]


def published_item(msg: pb.PublishedItem) -> PublishedItem:
    data = msg.blob if msg.WhichOneof("data") == "blob" else msg.text
    return PublishedItem(msg.key, data, msg.subscriber_id)


def published_change(msg: pb.SubscribePublishedDataResponse) -> PublishedDataChange:
    return PublishedDataChange(msg.change.bundle, [published_item(i) for i in msg.change.data])


# ---- request builders, shared by both flavours ----


def _preds(predicates: DataSharePredicates | None) -> pb.Predicates:
    return predicates.to_proto() if predicates is not None else pb.Predicates()


def insert_request(uri: str, values: Mapping[str, Cell]) -> pb.InsertRequest:
    req = pb.InsertRequest(uri=uri)
    codec.to_bucket(values, req.values)
    return req


def batch_insert_requests(uri: str, rows: Sequence[Mapping[str, Cell]]) -> list[pb.BatchInsertRequest]:
    """The messages of a batch insert: one when it fits `_stream.SEND_BYTES`, else slices of rows (the
    daemon takes one message of at most max_message_bytes; a batch streams in several)."""
    names, columns, absent = codec.rows_to_columns(rows)

    def build(lo: int, hi: int) -> pb.BatchInsertRequest:
        req = pb.BatchInsertRequest(uri=uri, columns=names)
        if lo == 0 and hi == len(rows):
            codec.encode_page(columns, req.rows, absent=absent)
        else:
            part = [[i - lo for i in a if lo <= i < hi] for a in absent]
            codec.encode_page([c[lo:hi] for c in columns], req.rows, absent=part)
        req.rows.row_count = hi - lo
        return req

    return _stream.split(build, len(rows))


def update_request(
    uri: str, predicates: DataSharePredicates | None, values: Mapping[str, Cell]
) -> pb.UpdateRequest:
    req = pb.UpdateRequest(uri=uri, predicates=_preds(predicates))
    codec.to_bucket(values, req.values)
    return req


def batch_update_requests(
    operations: Mapping[str, Sequence[tuple[Mapping[str, Cell], DataSharePredicates | None]]],
) -> list[pb.BatchUpdateRequest]:
    """The messages of a batch update: one when it fits `_stream.SEND_BYTES`, else slices of operations."""
    flat: list[tuple[str, pb.UpdateOperation | None]] = []  # None: a URI without operations
    for uri, ops in operations.items():
        if not ops:
            flat.append((uri, None))
        for values, predicates in ops:
            op = pb.UpdateOperation(predicates=_preds(predicates))
            codec.to_bucket(values, op.values)
            flat.append((uri, op))

    def build(lo: int, hi: int) -> pb.BatchUpdateRequest:
        req = pb.BatchUpdateRequest()
        group = None
        for uri, op in flat[lo:hi]:
            if group is None or group.uri != uri or op is None:
                group = req.operations.add(uri=uri)
            if op is not None:
                group.operations.append(op)
        return req

    return _stream.split(build, len(flat))


def query_request(
    uri: str, predicates: DataSharePredicates | None, columns: Sequence[str] | None, page_rows: int
) -> pb.QueryRequest:
    return pb.QueryRequest(
        uri=uri, predicates=_preds(predicates), columns=list(columns or ()), page_rows=page_rows
    )


def publish_request(items: Sequence[PublishedItem], bundle: str, version: int) -> pb.PublishRequest:
    req = pb.PublishRequest(bundle=bundle, version=version)
    for item in items:
        if isinstance(item.data, str):
            req.items.add(key=item.key, text=item.data, subscriber_id=item.subscriber_id)
        else:
            req.items.add(key=item.key, blob=bytes(item.data), subscriber_id=item.subscriber_id)
    return req


def operation_results(resp: pb.PublishResponse) -> list[OperationResult]:
    return [OperationResult(r.key, r.result, r.message) for r in resp.results]


def manifest_json(manifest: str | Path | Mapping[str, Any]) -> str:
    """A manifest given as a dict, a JSON string or a path to a JSON file."""
    if isinstance(manifest, Mapping):
        return json.dumps(manifest)
    if isinstance(manifest, Path) or not manifest.lstrip().startswith("{"):
        return Path(manifest).read_text()
    return manifest


RETRIEVE_MODES = {
    "auto": pb.RETRIEVE_MODE_UNSPECIFIED,  # hybrid where the column has both indexes, else the one it has
    "vector": pb.RETRIEVE_MODE_VECTOR,
    "fulltext": pb.RETRIEVE_MODE_FULLTEXT,
    "hybrid": pb.RETRIEVE_MODE_HYBRID,
}


@dataclass(frozen=True, slots=True)
class RetrievedRow:
    """A row Retrieve found: `row_id` as insert returns it (-1 when the primary key is not an
    integer: it is among the values), `score` higher is better (cosine similarity, BM25 relevance or
    the fused reciprocal-rank score), `column` the indexed column that matched best."""

    row_id: int
    score: float
    values: dict[str, Cell]
    column: str


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    """The rows found, best first (iterating yields them), and `pending`: rows whose indexes have
    not caught up with their last write yet (their new text is not found until they have)."""

    rows: list[RetrievedRow]
    pending: int

    def __iter__(self) -> Iterator[RetrievedRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def retrieve_request(
    uri: str,
    query: str,
    k: int,
    predicates: DataSharePredicates | None,
    mode: str,
    column: str,
    columns: Sequence[str] | None,
) -> pb.RetrieveRequest:
    if mode not in RETRIEVE_MODES:
        raise ValueError(f"mode must be one of {', '.join(RETRIEVE_MODES)}, not {mode!r}")
    return pb.RetrieveRequest(
        uri=uri,
        query=query,
        k=k,
        predicates=_preds(predicates),
        mode=RETRIEVE_MODES[mode],
        column=column,
        columns=list(columns or ()),
    )


def retrieve_result(resp: pb.RetrieveResponse) -> RetrieveResult:
    rows = [RetrievedRow(r.row_id, r.score, codec.from_bucket(r.values.values), r.column) for r in resp.rows]
    return RetrieveResult(rows, resp.pending)


def _sync_request(uri: str, devices: Sequence[str], mode: SyncMode) -> pb.SyncRequest:
    return pb.SyncRequest(uri=uri, device_ids=list(devices), mode=int(mode))  # type: ignore[arg-type]


class _Stub(pb_grpc.DataShareServiceStub):
    """The generated stub, and the batch methods as unary calls: a batch that fits one message is sent as
    one, as before it streamed (a stream call of the blocking client spends a thread on each call)."""

    def __init__(self, channel: Any) -> None:
        super().__init__(channel)
        service = "/datamgr.v1.DataShareService/"
        self.BatchInsertOne = channel.unary_unary(
            service + "BatchInsert",
            request_serializer=pb.BatchInsertRequest.SerializeToString,
            response_deserializer=pb.BatchInsertResponse.FromString,
        )
        self.BatchUpdateOne = channel.unary_unary(
            service + "BatchUpdate",
            request_serializer=pb.BatchUpdateRequest.SerializeToString,
            response_deserializer=pb.BatchUpdateResponse.FromString,
        )


class DataShareHelper:
    """Blocking DataShare client. Create with `DataShareHelper.connect(address, token)`."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self._channel = channel
        self._stub = _Stub(channel)
        self._md = metadata(token)

    @classmethod
    def connect(
        cls, address: str | None = None, token: str | None = None, tls_fingerprint: str | None = None
    ) -> DataShareHelper:
        """`tls_fingerprint` (or DATAMGR_TLS_FINGERPRINT): the certificate a TCP listener must present."""
        return cls(open_channel(address, tls_fingerprint), resolve_token(token))

    def register_provider(self, manifest: str | Path | Mapping[str, Any]) -> pb.RegisterProviderResponse:
        req = pb.RegisterProviderRequest(manifest_json=manifest_json(manifest))
        return call(self._stub.RegisterProvider, req, metadata=self._md)

    def insert(self, uri: str, values: Mapping[str, Cell]) -> int:
        return call(self._stub.Insert, insert_request(uri, values), metadata=self._md).row_id

    def batch_insert(self, uri: str, rows: Sequence[Mapping[str, Cell]]) -> int:
        requests = batch_insert_requests(uri, rows)
        if len(requests) == 1:
            return call(self._stub.BatchInsertOne, requests[0], metadata=self._md).count
        return call(self._stub.BatchInsert, iter(requests), metadata=self._md).count

    def update(self, uri: str, predicates: DataSharePredicates | None, values: Mapping[str, Cell]) -> int:
        return call(self._stub.Update, update_request(uri, predicates, values), metadata=self._md).count

    def delete(self, uri: str, predicates: DataSharePredicates | None = None) -> int:
        req = pb.DeleteRequest(uri=uri, predicates=_preds(predicates))
        return call(self._stub.Delete, req, metadata=self._md).count

    def batch_update(
        self, operations: Mapping[str, Sequence[tuple[Mapping[str, Cell], DataSharePredicates | None]]]
    ) -> dict[str, list[int]]:
        """`{uri: [(values, predicates), ...]}` → `{uri: [count, ...]}`."""
        requests = batch_update_requests(operations)
        if len(requests) == 1:
            resp = call(self._stub.BatchUpdateOne, requests[0], metadata=self._md)
        else:
            resp = call(self._stub.BatchUpdate, iter(requests), metadata=self._md)
        return {r.uri: list(r.counts) for r in resp.results}

    def query(
        self,
        uri: str,
        predicates: DataSharePredicates | None = None,
        columns: Sequence[str] | None = None,
        page_rows: int = 0,
    ) -> DataShareResultSet:
        stream = self._stub.Query(query_request(uri, predicates, columns, page_rows), metadata=self._md)
        return call(DataShareResultSet, _errors_mapped(stream), cancel=stream.cancel)

    def retrieve(
        self,
        uri: str,
        query: str,
        k: int = 0,
        predicates: DataSharePredicates | None = None,
        mode: str = "auto",
        column: str = "",
        columns: Sequence[str] | None = None,
    ) -> RetrieveResult:
        """The `k` rows (0: 10) of an indexed table best matching `query`, among those `predicates`
        select: by meaning ("vector"), by words ("fulltext"), both fused ("hybrid"), or "auto" (hybrid
        where the column has both indexes). `column`: the indexed column to search (default: all)."""
        req = retrieve_request(uri, query, k, predicates, mode, column, columns)
        return retrieve_result(call(self._stub.Retrieve, req, metadata=self._md))

    def subscribe(self, uri: str) -> Subscription[ChangeInfo]:
        """Subscribes to committed changes of `uri`; returns once the subscription is live."""
        stream = self._stub.Subscribe(pb.SubscribeRequest(uri=uri), metadata=self._md)
        first = call(next, stream)
        assert first.WhichOneof("event") == "subscribed"
        return Subscription(stream, _change_event)

    def sync(
        self, uri: str, devices: Sequence[str] = (), mode: SyncMode = SyncMode.PUSH_PULL
    ) -> dict[str, SyncResult]:
        """Syncs the distributed table `uri` with paired devices now (empty: all of them); one result
        per device. Needs ohos.permission.DISTRIBUTED_DATASYNC and read access to the table."""
        return sync_results(call(self._stub.Sync, _sync_request(uri, devices, mode), metadata=self._md))

    def publish(self, items: Sequence[PublishedItem], bundle: str, version: int = 0) -> list[OperationResult]:
        """Publishes this app's items (bundle = this app); one result per item, a failed one leaves the rest.

        An item stored with a newer version is kept (its result is VERSION_NOT_NEWER, 1045).
        """
        req = publish_request(items, bundle, version)
        return operation_results(call(self._stub.Publish, req, metadata=self._md))

    def get_published_data(self, bundle: str) -> list[PublishedItem]:
        resp = call(self._stub.GetPublishedData, pb.GetPublishedDataRequest(bundle=bundle), metadata=self._md)
        return [published_item(i) for i in resp.items]

    def subscribe_published_data(
        self, uris: Sequence[str], subscriber_id: str = ""
    ) -> Subscription[PublishedDataChange]:
        """Subscribes to one publisher's items; yields what is stored first, then each publish of them."""
        req = pb.SubscribePublishedDataRequest(uris=list(uris), subscriber_id=subscriber_id)
        stream = self._stub.SubscribePublishedData(req, metadata=self._md)
        first = call(next, stream)
        assert first.WhichOneof("event") == "subscribed"
        return Subscription(stream, published_change)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DataShareHelper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _errors_mapped(stream: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from stream
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            raise error_from_rpc(exc) from None


class Subscription(Generic[T]):
    """Committed changes (ChangeInfo, or PublishedDataChange), in commit order: iterate, `close()` to end."""

    def __init__(self, stream: Any, convert: Callable[[Any], T]) -> None:
        self._stream = stream
        self._convert = convert

    def __iter__(self) -> Iterator[T]:
        for msg in _errors_mapped(self._stream):
            yield self._convert(msg)

    def next(self) -> T:
        """The next change (blocking)."""
        return next(iter(self))

    def close(self) -> None:
        self._stream.cancel()

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDataShareHelper:
    """asyncio DataShare client. Create with `AsyncDataShareHelper.connect(address, token)`."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._channel = channel
        self._stub = _Stub(channel)
        self._md = metadata(token)

    @classmethod
    def connect(
        cls, address: str | None = None, token: str | None = None, tls_fingerprint: str | None = None
    ) -> AsyncDataShareHelper:
        return cls(open_aio_channel(address, tls_fingerprint), resolve_token(token))

    async def register_provider(
        self, manifest: str | Path | Mapping[str, Any]
    ) -> pb.RegisterProviderResponse:
        req = pb.RegisterProviderRequest(manifest_json=manifest_json(manifest))
        return await acall(self._stub.RegisterProvider, req, metadata=self._md)

    async def insert(self, uri: str, values: Mapping[str, Cell]) -> int:
        return (await acall(self._stub.Insert, insert_request(uri, values), metadata=self._md)).row_id

    async def batch_insert(self, uri: str, rows: Sequence[Mapping[str, Cell]]) -> int:
        requests = batch_insert_requests(uri, rows)
        if len(requests) == 1:
            return (await acall(self._stub.BatchInsertOne, requests[0], metadata=self._md)).count
        return (await acall(self._stub.BatchInsert, iter(requests), metadata=self._md)).count

    async def update(
        self, uri: str, predicates: DataSharePredicates | None, values: Mapping[str, Cell]
    ) -> int:
        return (
            await acall(self._stub.Update, update_request(uri, predicates, values), metadata=self._md)
        ).count

    async def delete(self, uri: str, predicates: DataSharePredicates | None = None) -> int:
        req = pb.DeleteRequest(uri=uri, predicates=_preds(predicates))
        return (await acall(self._stub.Delete, req, metadata=self._md)).count

    async def batch_update(
        self, operations: Mapping[str, Sequence[tuple[Mapping[str, Cell], DataSharePredicates | None]]]
    ) -> dict[str, list[int]]:
        requests = batch_update_requests(operations)
        if len(requests) == 1:
            resp = await acall(self._stub.BatchUpdateOne, requests[0], metadata=self._md)
        else:
            resp = await acall(self._stub.BatchUpdate, iter(requests), metadata=self._md)
        return {r.uri: list(r.counts) for r in resp.results}

    async def query_rows(
        self,
        uri: str,
        predicates: DataSharePredicates | None = None,
        columns: Sequence[str] | None = None,
        page_rows: int = 0,
    ) -> AsyncIterator[dict[str, Cell]]:
        """Streams the result rows as dicts, page by page."""
        stream = self._stub.Query(query_request(uri, predicates, columns, page_rows), metadata=self._md)
        names: list[str] = []
        try:
            async for msg in stream:
                if msg.columns:
                    names = [c.name for c in msg.columns]
                for row in zip(*codec.decode_page(msg.page), strict=True):
                    yield dict(zip(names, row, strict=True))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    async def query(
        self,
        uri: str,
        predicates: DataSharePredicates | None = None,
        columns: Sequence[str] | None = None,
        page_rows: int = 0,
    ) -> DataShareResultSet:
        """The whole result as a cursor (fetched before returning)."""
        stream = self._stub.Query(query_request(uri, predicates, columns, page_rows), metadata=self._md)
        try:
            messages = [msg async for msg in stream]
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return DataShareResultSet(iter(messages))

    async def retrieve(
        self,
        uri: str,
        query: str,
        k: int = 0,
        predicates: DataSharePredicates | None = None,
        mode: str = "auto",
        column: str = "",
        columns: Sequence[str] | None = None,
    ) -> RetrieveResult:
        """See DataShareHelper.retrieve."""
        req = retrieve_request(uri, query, k, predicates, mode, column, columns)
        return retrieve_result(await acall(self._stub.Retrieve, req, metadata=self._md))

    async def subscribe(self, uri: str) -> AsyncSubscription[ChangeInfo]:
        """Subscribes to committed changes of `uri`; returns once the subscription is live."""
        stream = self._stub.Subscribe(pb.SubscribeRequest(uri=uri), metadata=self._md)
        first = await acall(stream.read)
        assert first.WhichOneof("event") == "subscribed"
        return AsyncSubscription(stream, _change_event)

    async def sync(
        self, uri: str, devices: Sequence[str] = (), mode: SyncMode = SyncMode.PUSH_PULL
    ) -> dict[str, SyncResult]:
        """See DataShareHelper.sync."""
        req = _sync_request(uri, devices, mode)
        return sync_results(await acall(self._stub.Sync, req, metadata=self._md))

    async def publish(
        self, items: Sequence[PublishedItem], bundle: str, version: int = 0
    ) -> list[OperationResult]:
        """See DataShareHelper.publish."""
        req = publish_request(items, bundle, version)
        return operation_results(await acall(self._stub.Publish, req, metadata=self._md))

    async def get_published_data(self, bundle: str) -> list[PublishedItem]:
        req = pb.GetPublishedDataRequest(bundle=bundle)
        resp = await acall(self._stub.GetPublishedData, req, metadata=self._md)
        return [published_item(i) for i in resp.items]

    async def subscribe_published_data(
        self, uris: Sequence[str], subscriber_id: str = ""
    ) -> AsyncSubscription[PublishedDataChange]:
        """See DataShareHelper.subscribe_published_data."""
        req = pb.SubscribePublishedDataRequest(uris=list(uris), subscriber_id=subscriber_id)
        stream = self._stub.SubscribePublishedData(req, metadata=self._md)
        first = await acall(stream.read)
        assert first.WhichOneof("event") == "subscribed"
        return AsyncSubscription(stream, published_change)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncDataShareHelper:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncSubscription(Generic[T]):
    """Committed changes (ChangeInfo or PublishedDataChange) in commit order: `async for`, `close()` ends."""

    def __init__(self, stream: Any, convert: Callable[[Any], T]) -> None:
        self._stream = stream
        self._convert = convert

    async def __aiter__(self) -> AsyncIterator[T]:
        # read(), not `async for`: subscribe() already read the first message, and grpc.aio refuses to
        # mix its iterator and read APIs on one call.
        while True:
            try:
                msg = await self._stream.read()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    raise error_from_rpc(exc) from None
                return
            if msg is grpc.aio.EOF:
                return
            yield self._convert(msg)

    async def next(self) -> T:
        msg = await acall(self._stream.read)
        if msg is grpc.aio.EOF:
            raise StopAsyncIteration
        return self._convert(msg)

    def close(self) -> None:
        self._stream.cancel()

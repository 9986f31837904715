"""The UDMF SDK against an in-process fake UdmfService on a Unix socket: requests as sent, streaming
both ways, progress, blobs to files, cancellation, lazy drag, errors as udmf error classes.

The fake keeps data in memory and reuses the SDK's own encoder/assembler (tested in test_wire.py), so
these tests are about the clients: what they send, how they read, what they raise.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from udmf import _wire
from udmf.client import AsyncUdmfClient, UdmfClient
from udmf.data import Intention, Summary, UnifiedData, UnifiedDataProperties, UnifiedRecord, Visibility
from udmf.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    UdmfError,
    Unauthenticated,
)
from udmf.structs import HTML, FileUri, PlainText
from udmf.v1 import udmf_pb2 as pb
from udmf.v1 import udmf_pb2_grpc as pb_grpc

APP, ADMIN, TARGET = "Bearer app", "Bearer admin", "Bearer target"
BUNDLES = {APP: "com.example.src", TARGET: "com.example.dst"}
BIG = 3 * 1024 * 1024 + 5


def text_data(text: str = "hello") -> UnifiedData:
    record = UnifiedRecord(HTML(f"<p>{text}</p>", text))
    record.add_entry(PlainText(text))
    return UnifiedData(record)


def big_data() -> UnifiedData:
    data = UnifiedData(UnifiedRecord("general.png", bytes(range(256)) * (BIG // 256) + b"\x00" * (BIG % 256)))
    data.add_record(UnifiedRecord(FileUri("file:///a.png", "general.png")))
    return data


@dataclass
class Lazy:
    loads: queue.Queue[str | None] = field(default_factory=queue.Queue)
    answers: queue.Queue[pb.LazySourceMessage | None] = field(default_factory=queue.Queue)


@dataclass
class FakeUdmf(pb_grpc.UdmfServiceServicer):
    """Data by key in memory; `udmf://DataHub/slow` streams forever (for cancellation)."""

    data: dict[str, UnifiedData] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    grants: dict[str, set[str]] = field(default_factory=dict)
    options: list[pb.WriteOptions] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    lazy: dict[str, Lazy] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event)
    lazy_closed: threading.Event = field(default_factory=threading.Event)

    def _caller(self, context: grpc.ServicerContext) -> str:
        token = dict(context.invocation_metadata()).get("authorization", "")
        if token not in (APP, ADMIN, TARGET):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        return token

    def _store(self, requests: Iterator[pb.WriteRequest], context: Any, intention: str) -> str:
        caller = self._caller(context)
        assembler = _wire.Assembler()
        for request in requests:
            if request.WhichOneof("msg") == "options":
                self.options.append(request.options)
            else:
                assembler.feed(request.part)
        (data,) = assembler.finish()
        key = f"udmf://{intention}/{BUNDLES[caller]}/{len(self.data):032d}"
        self.data[key], self.owners[key] = data, caller
        return key

    def InsertData(self, request_iterator: Any, context: Any) -> pb.InsertDataResponse:
        return pb.InsertDataResponse(key=self._store(request_iterator, context, "DataHub"))

    def UpdateData(self, request_iterator: Any, context: Any) -> pb.UpdateDataResponse:
        caller = self._caller(context)
        first = next(request_iterator)
        key = first.options.key
        if self.owners.get(key) != caller:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the writer may update")
        self.options.append(first.options)
        assembler = _wire.Assembler()
        for request in request_iterator:
            assembler.feed(request.part)
        (self.data[key],) = assembler.finish()
        return pb.UpdateDataResponse()

    def _send(self, key: str, intention: int = pb.INTENTION_DATA_HUB) -> Iterator[pb.ReadResponse]:
        parts = list(_wire.encode(self.data[key], blob_threshold=1024, chunk_bytes=256 * 1024))
        parts[0].header.key, parts[0].header.writer = key, BUNDLES[self.owners[key]]
        parts[0].header.intention = intention
        for i, part in enumerate(parts):
            yield pb.ReadResponse(part=part, progress=100 * (i + 1) // len(parts))

    def QueryData(self, request: pb.QueryDataRequest, context: Any) -> Iterator[pb.ReadResponse]:
        self._caller(context)
        self.requests.append(request)
        if request.key and request.key not in self.data:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no data under {request.key}")
        for key in [request.key] if request.key else [k for k in self.data if "/DataHub/" in k]:
            yield from self._send(key)

    def DeleteData(self, request: pb.DeleteDataRequest, context: Any) -> Iterator[pb.ReadResponse]:
        caller = self._caller(context)
        mine = [k for k in self.data if self.owners[k] == caller and request.key in ("", k)]
        for key in mine:
            yield from self._send(key)
            del self.data[key]

    def GetData(self, request: pb.GetDataRequest, context: Any) -> Iterator[pb.ReadResponse]:
        caller = self._caller(context)
        key = request.key
        if key == "udmf://DataHub/slow":
            context.add_callback(self.cancelled.set)
            yield pb.ReadResponse(part=pb.DataPart(header=pb.DataHeader(record_count=1, key=key)))
            yield pb.ReadResponse(part=pb.DataPart(entry=pb.Entry(type="general.png", blob_size=10**8)))
            for n in range(1000):
                yield pb.ReadResponse(part=pb.DataPart(chunk=b"x" * 1000), progress=n // 10)
                time.sleep(0.01)
            return
        if key in self.lazy:
            self._load(key, BUNDLES[caller])
        if key not in self.data:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no data under {key}")
        if "/drag/" in key and BUNDLES.get(caller) not in self.grants.get(key, set()):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{key} was not granted to the caller")
        yield from self._send(key, pb.INTENTION_DRAG if "/drag/" in key else pb.INTENTION_DATA_HUB)
        if "/drag/" in key:
            del self.data[key]

    def _load(self, key: str, target: str) -> None:
        lazy = self.lazy[key]
        lazy.loads.put(target)
        assembler = _wire.Assembler()
        while (message := lazy.answers.get(timeout=5)) is not None and message.WhichOneof("msg") == "part":
            assembler.feed(message.part)
        (self.data[key],) = assembler.finish()
        self.owners[key] = APP

    def GetSummary(self, request: pb.GetSummaryRequest, context: Any) -> pb.GetSummaryResponse:
        self._caller(context)
        data = self.data.get(request.key)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no data under {request.key}")
        header = next(self._send(request.key)).part.header
        sizes = dict.fromkeys(data.get_types(), 10)
        return pb.GetSummaryResponse(
            summary=pb.Summary(summary=sizes, total_size=10 * len(sizes)), header=header
        )

    def SetDragData(self, request_iterator: Any, context: Any) -> pb.SetDragDataResponse:
        return pb.SetDragDataResponse(key=self._store(request_iterator, context, "drag"))

    def StartLazyDrag(self, request_iterator: Any, context: Any) -> Iterator[pb.LazySourceEvent]:
        self._caller(context)
        start = next(request_iterator).start
        self.requests.append(start)
        key = f"udmf://drag/com.example.src/lazy{len(self.lazy)}"
        lazy = self.lazy[key] = Lazy()
        self.owners[key] = APP

        def pump() -> None:
            try:
                for message in request_iterator:
                    lazy.answers.put(message)
            except grpc.RpcError:
                pass
            lazy.answers.put(None)
            lazy.loads.put(None)
            self.lazy_closed.set()

        threading.Thread(target=pump, daemon=True).start()
        yield pb.LazySourceEvent(key=key)
        while (target := lazy.loads.get()) is not None:
            yield pb.LazySourceEvent(load=pb.LoadRequest(key=key, target=target))

    def GrantAccess(self, request: pb.GrantAccessRequest, context: Any) -> pb.GrantAccessResponse:
        if self._caller(context) != ADMIN:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "GrantAccess is the system role's")
        self.grants.setdefault(request.key, set()).add(request.bundle)
        return pb.GrantAccessResponse()

    def QueryTypes(self, request: pb.QueryTypesRequest, context: Any) -> pb.QueryTypesResponse:
        self._caller(context)
        self.requests.append(request)
        if request.type_id == "slow":
            time.sleep(1)
        if request.type_id == "boom":
            context.abort(grpc.StatusCode.INTERNAL, "it broke")
        found = pb.TypeDescriptor(
            type_id="general.jpeg",
            belonging_to_types=["general.image"],
            filename_extensions=[".jpg", ".jpeg"],
        )
        return pb.QueryTypesResponse(types=[found, found] if request.all else [found])

    def RegisterTypes(self, request: pb.RegisterTypesRequest, context: Any) -> pb.RegisterTypesResponse:
        self._caller(context)
        self.requests.append(request)
        if any(t.type_id.startswith("general.") for t in request.types):
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "a preset type")
        return pb.RegisterTypesResponse()

    def UnregisterTypes(self, request: pb.UnregisterTypesRequest, context: Any) -> pb.UnregisterTypesResponse:
        self._caller(context)
        self.requests.append(request)
        return pb.UnregisterTypesResponse()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeUdmf, str]]:
    servicer = FakeUdmf()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_UdmfServiceServicer_to_server(servicer, server)
    address = f"unix:{tmp_path / 'udmf.sock'}"
    server.add_insecure_port(address)
    server.start()
    yield servicer, address
    server.stop(None).wait()


# ---- the sync client ----


def test_insert_query_update_delete(fake: tuple[FakeUdmf, str]) -> None:
    servicer, address = fake
    with UdmfClient.connect(address, "app") as udmf:
        data = text_data()
        data.properties.tag, data.properties.extras = "note", {"n": 1}
        key = udmf.insert_data(data, visibility=Visibility.OWN_PROCESS)
        assert key.startswith("udmf://DataHub/com.example.src/")
        assert (servicer.options[-1].intention, servicer.options[-1].visibility) == (
            pb.INTENTION_DATA_HUB,
            pb.VISIBILITY_OWN_PROCESS,
        )
        (back,) = udmf.query_data(key=key)
        assert back == data and back.has_type("general.text")
        assert back.runtime is not None
        assert (back.runtime.key, back.runtime.intention, back.runtime.writer) == (
            key,
            Intention.DATA_HUB,
            "com.example.src",
        )

        other = udmf.insert_data(big_data(), Intention.DATA_HUB)
        assert [d.runtime.key for d in udmf.query_data(intention=Intention.DATA_HUB) if d.runtime] == [
            key,
            other,
        ]
        assert servicer.requests[-1].intention == pb.INTENTION_DATA_HUB and not servicer.requests[-1].key

        udmf.update_data(key, text_data("changed"))
        assert servicer.options[-1].key == key
        assert udmf.query_data(key=key)[0] == text_data("changed")

        summary, props, intention, writer = udmf.get_summary(key)
        assert summary == Summary({"general.html": 10, "general.plain-text": 10}, 20)
        assert (props.tag, intention, writer) == ("", Intention.DATA_HUB, "com.example.src")

        deleted = udmf.delete_data(key=key)
        assert [d.runtime.key for d in deleted if d.runtime] == [key]
        with pytest.raises(NotFound, match="no data under"):
            udmf.query_data(key=key)


def test_get_data_streams_with_progress_and_to_files(fake: tuple[FakeUdmf, str], tmp_path: Path) -> None:
    _, address = fake
    with UdmfClient.connect(address, "app") as udmf:
        key = udmf.insert_data(big_data())
        seen: list[int] = []
        data = udmf.get_data(key, progress=seen.append)
        assert data == big_data()
        assert seen == sorted(seen) and seen[-1] == 100 and len(seen) > 3

        saved = udmf.get_data(key, out_dir=tmp_path / "out")
        png = saved.get_records()[0].get_value()
        assert isinstance(png, Path) and png.parent == tmp_path / "out"
        assert png.read_bytes() == big_data().get_records()[0].get_value()
        assert saved.get_records()[1].get_value() == FileUri(
            "file:///a.png", "general.png"
        )  # small: in memory


def test_setting_cancel_stops_get_data(fake: tuple[FakeUdmf, str], tmp_path: Path) -> None:
    servicer, address = fake
    cancel = threading.Event()
    with UdmfClient.connect(address, "app") as udmf:
        threading.Timer(0.3, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(UdmfError, match="cancelled") as info:
            udmf.get_data("udmf://DataHub/slow", out_dir=tmp_path / "out", cancel=cancel)
        assert info.value.code == "CANCELLED" and time.monotonic() - started < 5
        assert servicer.cancelled.wait(5), "the server never saw the cancellation"
        assert list((tmp_path / "out").iterdir()) == []  # the partial blob is removed


def test_raising_from_the_progress_callback_cancels_and_propagates(fake: tuple[FakeUdmf, str]) -> None:
    servicer, address = fake

    def progress(percent: int) -> None:
        if percent >= 2:
            raise KeyboardInterrupt

    with UdmfClient.connect(address, "app") as udmf, pytest.raises(KeyboardInterrupt):
        udmf.get_data("udmf://DataHub/slow", progress=progress)
    assert servicer.cancelled.wait(5)


def test_drag_set_grant_and_read_once(fake: tuple[FakeUdmf, str]) -> None:
    _, address = fake
    with (
        UdmfClient.connect(address, "app") as source,
        UdmfClient.connect(address, "admin") as system,
        UdmfClient.connect(address, "target") as target,
    ):
        key = source.set_drag_data(text_data("dragged"))
        assert key.startswith("udmf://drag/")
        with pytest.raises(PermissionDenied, match="not granted"):
            target.get_data(key)
        with pytest.raises(PermissionDenied, match="system role"):
            source.grant_access(key, "com.example.dst")
        system.grant_access(key, "com.example.dst")
        data = target.get_data(key)
        assert data == text_data("dragged") and data.runtime and data.runtime.intention is Intention.DRAG
        with pytest.raises(NotFound):
            target.get_data(key)


def test_lazy_drag_loads_on_read_and_ends_on_close(fake: tuple[FakeUdmf, str]) -> None:
    servicer, address = fake
    calls: list[int] = []

    def loader() -> UnifiedData:
        calls.append(1)
        return big_data()

    with UdmfClient.connect(address, "app") as source, UdmfClient.connect(address, "admin") as system:
        props = UnifiedDataProperties(tag="lazy")
        with source.start_lazy_drag(
            props, ["general.png", "general.file-uri"], loader, record_count=2
        ) as drag:
            start = servicer.requests[-1]
            assert (start.properties.tag, start.record_count) == ("lazy", 2)
            assert dict(start.summary.summary) == {"general.png": 0, "general.file-uri": 0}
            assert drag.key.startswith("udmf://drag/") and not calls
            system.grant_access(drag.key, "com.example.dst")
            with UdmfClient.connect(address, "target") as target:
                assert target.get_data(drag.key) == big_data()
            assert calls == [1] and drag.loads == 1 and drag.error is None
        assert servicer.lazy_closed.wait(5)


def test_a_failing_loader_ends_the_drag(fake: tuple[FakeUdmf, str]) -> None:
    servicer, address = fake

    def loader() -> UnifiedData:
        raise RuntimeError("no data after all")

    with UdmfClient.connect(address, "app") as source:
        drag = source.start_lazy_drag(UnifiedDataProperties(), Summary({"general.png": 5}, 5), loader)
        servicer.lazy[drag.key].loads.put("com.example.dst")
        assert servicer.lazy_closed.wait(5)
        assert isinstance(drag.error, RuntimeError)
        drag.close()


def test_types(fake: tuple[FakeUdmf, str]) -> None:
    servicer, address = fake
    with UdmfClient.connect(address, "app") as udmf:
        (jpeg,) = udmf.query_types(filename_extension=".jpg", belongs_to="general.image")
        assert (jpeg.type_id, jpeg.belonging_to_types, jpeg.filename_extensions) == (
            "general.jpeg",
            ("general.image",),
            (".jpg", ".jpeg"),
        )
        req = servicer.requests[-1]
        assert (req.filename_extension, req.belongs_to, req.all, req.type_id) == (
            ".jpg",
            "general.image",
            False,
            "",
        )
        assert len(udmf.query_types(mime_type="image/jpeg", all=True)) == 2
        with pytest.raises(InvalidArgument, match="exactly one"):
            udmf.query_types()
        with pytest.raises(InvalidArgument, match="exactly one"):
            udmf.query_types(type_id="a", mime_type="b")

        udmf.register_types(
            [
                {
                    "type_id": "com.example.src.note",
                    "belonging_to_types": ["general.text"],
                    "filename_extensions": [".note"],
                }
            ]
        )
        (sent,) = servicer.requests[-1].types
        assert (sent.type_id, list(sent.belonging_to_types), list(sent.filename_extensions)) == (
            "com.example.src.note",
            ["general.text"],
            [".note"],
        )
        for bad in (
            {"type_id": "x", "parents": []},
            {"belonging_to_types": []},
            {"type_id": "x", "mime_types": "a/b"},
        ):
            with pytest.raises(InvalidArgument):
                udmf.register_types([bad])
        udmf.unregister_types(["com.example.src.note"])
        assert list(servicer.requests[-1].type_ids) == ["com.example.src.note"]


def test_errors_map_to_udmf_classes(fake: tuple[FakeUdmf, str]) -> None:
    servicer, address = fake
    with UdmfClient.connect(address, "nobody") as udmf, pytest.raises(Unauthenticated, match="unknown token"):
        udmf.query_types(type_id="general.jpeg")
    with UdmfClient.connect(address, "app") as udmf:
        with pytest.raises(DeadlineExceeded):
            udmf.query_types(type_id="slow", timeout=0.2)
        with pytest.raises(UdmfError, match="it broke") as info:
            udmf.query_types(type_id="boom")
        assert info.value.code == "INTERNAL"
        with pytest.raises(PermissionDenied):
            udmf.update_data("udmf://DataHub/com.example.src/none", text_data())

        bad = UnifiedData(UnifiedRecord("general.object", {"ok": 1}))
        bad.get_records()[0].get_value()["ok"] = [1]  # made unsendable after it was added
        sent = len(servicer.data)
        with pytest.raises(InvalidArgument, match="list cannot be"):
            udmf.insert_data(bad)
        assert len(servicer.data) == sent


def test_address_and_token_from_the_environment(
    fake: tuple[FakeUdmf, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, address = fake
    monkeypatch.setenv("DATAMGR_ADDRESS", address)
    monkeypatch.setenv("DATAMGR_TOKEN", "app")
    with UdmfClient.connect() as udmf:
        assert udmf.query_types(type_id="general.jpeg")[0].type_id == "general.jpeg"
    monkeypatch.delenv("DATAMGR_TOKEN")
    with pytest.raises(Unauthenticated, match="DATAMGR_TOKEN"):
        UdmfClient.connect()


# ---- the async client ----


def test_async_client(fake: tuple[FakeUdmf, str], tmp_path: Path) -> None:
    servicer, address = fake

    async def loader() -> UnifiedData:
        await asyncio.sleep(0)
        return text_data("lazy")

    async def main() -> None:
        async with (
            AsyncUdmfClient.connect(address, "app") as udmf,
            AsyncUdmfClient.connect(address, "admin") as system,
            AsyncUdmfClient.connect(address, "target") as target,
        ):
            key = await udmf.insert_data(big_data())
            seen: list[int] = []
            assert await udmf.get_data(key, progress=seen.append) == big_data()
            assert seen[-1] == 100
            (back,) = await udmf.query_data(key=key)
            assert back == big_data()
            await udmf.update_data(key, text_data())
            assert (await udmf.get_summary(key))[3] == "com.example.src"
            assert [
                d.runtime.key for d in await udmf.delete_data(intention=Intention.DATA_HUB) if d.runtime
            ] == [key]
            assert (await udmf.query_types(type_id="general.jpeg"))[0].type_id == "general.jpeg"
            await udmf.register_types([{"type_id": "com.example.src.a"}])
            await udmf.unregister_types(["com.example.src.a"])

            drag_key = await udmf.set_drag_data(text_data("d"))
            with pytest.raises(PermissionDenied):
                await udmf.grant_access(drag_key, "com.example.dst")
            await system.grant_access(drag_key, "com.example.dst")
            assert await target.get_data(drag_key) == text_data("d")

            async with await udmf.start_lazy_drag(UnifiedDataProperties(), ["general.html"], loader) as drag:
                await system.grant_access(drag.key, "com.example.dst")
                assert await target.get_data(drag.key) == text_data("lazy")
                assert drag.loads == 1
            assert await asyncio.to_thread(servicer.lazy_closed.wait, 5)

            task = asyncio.create_task(udmf.get_data("udmf://DataHub/slow", out_dir=tmp_path / "o"))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(servicer.cancelled.wait, 5)
            assert list((tmp_path / "o").iterdir()) == []

            with pytest.raises(NotFound):
                await udmf.get_data("udmf://DataHub/com.example.src/none")

    asyncio.run(main())

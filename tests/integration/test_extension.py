"""Extension mode end to end: a real daemon process routes consumers' calls to a live provider handler."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import PEOPLE_URI, Daemon, contacts_manifest

from datamgr.client import AsyncDataShareExtension, DataShareExtension, DataSharePredicates
from datamgr.errors import (
    AlreadyExists,
    DatamgrError,
    DeadlineExceeded,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc

WEATHER = "com.example.weather"
URI = f"datashare:///{WEATHER}/forecast/today"
CONSUMER = "com.example.widget"  # holds no permission at all
READ_WEATHER = "com.example.permission.READ_WEATHER"


@dataclass
class Ext:
    """A daemon with the weather provider app (manifest: an extension, no permissions) and a consumer."""

    daemon: Daemon
    provider: str
    consumer: str


def _provider(daemon: Daemon, manifest: dict[str, Any]) -> str:
    """Registers the manifest's app and the manifest; returns the app's token."""
    token = daemon.add_app(manifest["bundle"])
    with daemon.helper(token) as h:
        h.register_provider(manifest)
    return token


def _setup(daemon: Daemon) -> Ext:
    provider = _provider(daemon, {"bundle": WEATHER, "extension": {}})
    return Ext(daemon, provider, daemon.add_app(CONSUMER))


@pytest.fixture(scope="module")
def ext(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ext]:
    """One daemon for the module: every test detaches its providers before it ends."""
    daemon = Daemon(tmp_path_factory.mktemp("extension") / "data").start()
    yield _setup(daemon)
    daemon.stop()


class Recorder(DataShareExtension):
    """Answers every callback with a value derived from its arguments and records each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []

    def insert(self, uri: str, values: dict, *, caller: str) -> int:
        self.calls.append(("insert", uri, values, caller))
        return 40 + len(values)

    def batch_insert(self, uri: str, rows: list, *, caller: str) -> int:
        self.calls.append(("batch_insert", uri, rows, caller))
        return len(rows) * 10

    def update(self, uri: str, predicates: DataSharePredicates, values: dict, *, caller: str) -> int:
        self.calls.append(("update", uri, predicates, values, caller))
        return 3

    def delete(self, uri: str, predicates: DataSharePredicates, *, caller: str) -> int:
        self.calls.append(("delete", uri, predicates, caller))
        return 5

    def query(self, uri: str, predicates: DataSharePredicates, columns: list, *, caller: str) -> Any:
        self.calls.append(("query", uri, predicates, columns, caller))
        return ["city", "temp", "caller"], [("Oslo", -3.5, caller), ("Lima", None, caller)]

    def batch_update(self, operations: dict, *, caller: str) -> dict:
        self.calls.append(("batch_update", operations, caller))
        return {uri: [len(vals) if preds else -1 for vals, preds in ops] for uri, ops in operations.items()}


@pytest.fixture
def recorder(ext: Ext) -> Iterator[Recorder]:
    provider = Recorder().start(ext.daemon.address, ext.provider)
    yield provider
    provider.stop()


def test_every_operation_reaches_the_provider_with_the_caller(ext: Ext, recorder: Recorder) -> None:
    assert recorder.bundle == WEATHER
    oslo = DataSharePredicates().equal_to("city", "Oslo").limit(3)
    with ext.daemon.helper(ext.consumer) as h:  # the consumer has no permission: unset means open
        assert h.insert(URI, {"city": "Oslo", "temp": 3.5, "raw": b"\x00"}) == 43
        assert h.batch_insert(URI, [{"city": "A"}, {"city": "B", "temp": 1}]) == 20
        assert h.update(URI, oslo, {"temp": 4}) == 3
        assert h.delete(URI, oslo) == 5
        assert h.batch_update({URI: [({"temp": 1, "wind": 2}, oslo), ({"temp": 2}, None)]}) == {URI: [2, -1]}
        with h.query(URI, oslo, ["city", "temp"]) as rs:
            assert rs.column_names == ["city", "temp", "caller"]
            assert list(rs.rows()) == [
                {"city": "Oslo", "temp": -3.5, "caller": CONSUMER},
                {"city": "Lima", "temp": None, "caller": CONSUMER},
            ]
    assert recorder.calls == [
        ("insert", URI, {"city": "Oslo", "temp": 3.5, "raw": b"\x00"}, CONSUMER),
        ("batch_insert", URI, [{"city": "A", "temp": None}, {"city": "B", "temp": 1}], CONSUMER),
        ("update", URI, oslo, {"temp": 4}, CONSUMER),
        ("delete", URI, oslo, CONSUMER),
        (
            "batch_update",
            {URI: [({"temp": 1, "wind": 2}, oslo), ({"temp": 2}, DataSharePredicates())]},
            CONSUMER,
        ),
        ("query", URI, oslo, ["city", "temp"], CONSUMER),
    ]


class Table(DataShareExtension):
    """Answers every query with `rows` (dicts, as a provider may return them)."""

    def __init__(self, names: list[str], rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.names, self.rows = names, rows

    def query(self, uri: str, predicates: DataSharePredicates, columns: list, *, caller: str) -> Any:
        return self.names, self.rows


def _pages(ext: Ext, page_rows: int) -> list[pb.QueryResponse]:
    with ext.daemon.helper(ext.consumer) as h:  # the raw stream, to see the daemon's pages
        stub = pb_grpc.DataShareServiceStub(h._channel)
        return list(stub.Query(pb.QueryRequest(uri=URI, page_rows=page_rows), metadata=h._md))


def test_a_large_provider_result_is_repaged_by_the_daemon_and_arrives_intact(ext: Ext) -> None:
    names = ["id", "name", "score", "photo", "flag"]
    rows = [
        {"id": i, "name": None if i % 7 == 0 else f"n{i}", "score": i / 4, "photo": bytes([i]), "flag": i % 2}
        for i in range(23)
    ]
    with Table(names, rows).start(ext.daemon.address, ext.provider), ext.daemon.helper(ext.consumer) as h:
        with h.query(URI, page_rows=4) as rs:
            assert rs.column_names == names
            assert list(rs.rows()) == rows
        pages = _pages(ext, page_rows=4)
    assert [m.page.row_count for m in pages] == [4, 4, 4, 4, 4, 3]
    assert [c.name for c in pages[0].columns] == names
    assert all(not m.columns for m in pages[1:])


def test_a_mixed_type_column_survives_repaging(ext: Ext) -> None:
    rows = [{"v": v} for v in (1, "two", None, None)]
    with (
        Table(["v"], rows).start(ext.daemon.address, ext.provider),
        ext.daemon.helper(ext.consumer) as h,
        h.query(URI, page_rows=2) as rs,
    ):
        assert list(rs.rows()) == rows


def test_a_provider_result_over_one_message_is_refused_and_the_provider_stays(ext: Ext) -> None:
    """The daemon reads one message of at most max_message_bytes (5 MiB), a provider's reply too: the SDK
    refuses a larger result with RESOURCE_EXHAUSTED instead of sending it (which would end its stream)."""
    big = Table(["photo"], [{"photo": b"x" * (1 << 20)} for _ in range(6)])
    with big.start(ext.daemon.address, ext.provider), ext.daemon.helper(ext.consumer) as h:
        with pytest.raises(ResourceExhausted, match="max_message_bytes"):
            list(h.query(URI).rows())
        big.rows = big.rows[:2]
        assert len(list(h.query(URI).rows())) == 2  # still attached


def test_an_extension_read_permission_is_enforced(ext: Ext) -> None:
    radar = "com.example.radar"
    uri = f"datashare:///{radar}/rain"
    provider = _provider(ext.daemon, {"bundle": radar, "extension": {"read_permission": READ_WEATHER}})
    reader = ext.daemon.add_app("com.example.reader", READ_WEATHER)
    with Recorder().start(ext.daemon.address, provider):
        with ext.daemon.helper(ext.consumer) as h:
            with pytest.raises(PermissionDenied, match=READ_WEATHER):
                h.query(uri)
            assert h.insert(uri, {"a": 1}) == 41  # the write permission is unset: open
        with ext.daemon.helper(reader) as h, h.query(uri) as rs:
            assert rs.row_count == 2


def test_tables_with_silent_access_off_route_to_the_extension(ext: Ext) -> None:
    daemon = ext.daemon
    provider = _provider(daemon, contacts_manifest(silent_access=False, extension={}))
    # the consumer lacks READ/WRITE_CONTACTS: the extension's unset permissions apply, not the tables'
    with Recorder().start(daemon.address, provider) as rec, daemon.helper(ext.consumer) as h:
        assert h.insert(PEOPLE_URI, {"name": "Ada"}) == 41
        with h.query(PEOPLE_URI) as rs:
            assert rs.column_names == ["city", "temp", "caller"]
    assert [c[0] for c in rec.calls] == ["insert", "query"]
    with daemon.helper(provider) as h, h.query(PEOPLE_URI) as rs:  # the provider itself reads its table
        assert rs.row_count == 0


def test_a_provider_that_is_not_attached_is_unavailable(ext: Ext) -> None:
    with ext.daemon.helper(ext.consumer) as h, pytest.raises(Unavailable, match=f"{WEATHER} is not attached"):
        h.insert(URI, {"a": 1})


def test_a_slow_provider_gives_deadline_exceeded_and_keeps_serving(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", env={"DATAMGR_DATASHARE__PROVIDER_TIMEOUT_S": "0.5"}).start()
    try:
        ext = _setup(daemon)
        release = threading.Event()

        class Slow(DataShareExtension):
            def insert(self, uri: str, values: dict, *, caller: str) -> int:
                if values["slow"]:
                    release.wait(10)
                return 1

        with Slow().start(daemon.address, ext.provider), daemon.helper(ext.consumer) as h:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match=r"within 0\.5 s"):
                h.insert(URI, {"slow": True})
            assert time.monotonic() - started < 3
            release.set()  # the late reply is dropped; the next call gets its own answer
            assert h.insert(URI, {"slow": False}) == 1
    finally:
        daemon.stop()


PROVIDER_PROCESS = """
import threading
from datamgr.client import DataShareExtension

class Stuck(DataShareExtension):
    def insert(self, uri, values, *, caller):
        print("insert", flush=True)
        threading.Event().wait()

ext = Stuck().start()
print("attached", ext.bundle, flush=True)
threading.Event().wait()
"""


@pytest.mark.timeout(30)
def test_a_killed_provider_process_is_unavailable_mid_call_and_after(ext: Ext) -> None:
    env = {**os.environ, "DATAMGR_ADDRESS": ext.daemon.address, "DATAMGR_TOKEN": ext.provider}
    cmd = [sys.executable, "-c", PROVIDER_PROCESS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["attached", WEATHER]
        with ext.daemon.helper(ext.consumer) as h, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(h.insert, URI, {"a": 1})
            assert proc.stdout.readline().strip() == "insert"
            proc.kill()
            with pytest.raises(Unavailable, match="went away"):
                pending.result(timeout=10)  # the daemon's provider timeout is 5 s: this is not a deadline
            with pytest.raises(Unavailable, match="not attached"):
                h.insert(URI, {"a": 1})
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


class Failing(DataShareExtension):
    def insert(self, uri: str, values: dict, *, caller: str) -> int:
        raise ValueError("temperature below absolute zero")

    def delete(self, uri: str, predicates: DataSharePredicates, *, caller: str) -> int:
        raise NotFound("no forecast for Oslo")

    def update(self, uri: str, predicates: DataSharePredicates, values: dict, *, caller: str) -> int:
        return 7

    def query(self, uri: str, predicates: DataSharePredicates, columns: list, *, caller: str) -> Any:
        return ["a", "b"], [(1,)]


def test_provider_errors_reach_the_consumer_and_both_keep_serving(ext: Ext) -> None:
    with Failing().start(ext.daemon.address, ext.provider), ext.daemon.helper(ext.consumer) as h:
        with pytest.raises(DatamgrError) as raised:
            h.insert(URI, {"temp": -300})
        assert type(raised.value) is DatamgrError
        assert raised.value.code == "UNKNOWN"
        assert "ValueError: temperature below absolute zero" in raised.value.message
        assert "Traceback" not in raised.value.message
        assert h.update(URI, None, {"temp": 1}) == 7
        with pytest.raises(NotFound, match="no forecast for Oslo"):
            h.delete(URI)
        with pytest.raises(Unsupported, match="does not support batch_insert"):
            h.batch_insert(URI, [{"a": 1}])
        with pytest.raises(DatamgrError, match=r"TypeError: query\(\) row 0 has 1 values for 2 columns"):
            h.query(URI)
        assert h.update(URI, None, {"temp": 2}) == 7


def test_a_second_attach_is_refused_until_the_first_detaches(ext: Ext, recorder: Recorder) -> None:
    with pytest.raises(AlreadyExists, match=WEATHER):
        Recorder().start(ext.daemon.address, ext.provider)
    with ext.daemon.helper(ext.consumer) as h:
        assert h.insert(URI, {"a": 1}) == 41
        assert len(recorder.calls) == 1
        recorder.stop()
        with Recorder().start(ext.daemon.address, ext.provider) as again:
            assert h.insert(URI, {"a": 1}) == 41
        assert len(again.calls) == 1
        assert len(recorder.calls) == 1


def test_an_app_attaches_only_as_itself(ext: Ext) -> None:
    with pytest.raises(Unauthenticated):
        Recorder().start(ext.daemon.address, "not-a-token")
    other = "com.example.game"
    with Recorder().start(ext.daemon.address, ext.daemon.add_app(other)) as impostor:
        assert impostor.bundle == other
        with ext.daemon.helper(ext.consumer) as h:
            with pytest.raises(Unavailable, match=f"{WEATHER} is not attached"):
                h.insert(URI, {"a": 1})
            assert impostor.calls == []
            assert h.insert(f"datashare:///{other}/scores", {"a": 1}) == 41
        assert impostor.calls == [("insert", f"datashare:///{other}/scores", {"a": 1}, CONSUMER)]


class AsyncWeather(AsyncDataShareExtension):
    async def insert(self, uri: str, values: dict, *, caller: str) -> int:
        await asyncio.sleep(0)
        return len(values)

    async def query(self, uri: str, predicates: DataSharePredicates, columns: list, *, caller: str) -> Any:
        return ["caller"], [{"caller": caller}]


def test_the_asyncio_flavour_serves_calls(ext: Ext) -> None:
    async def main() -> None:
        provider = await AsyncWeather().start(ext.daemon.address, ext.provider)
        try:
            assert provider.bundle == WEATHER
            with pytest.raises(AlreadyExists):
                await AsyncWeather().start(ext.daemon.address, ext.provider)
            async with ext.daemon.async_helper(ext.consumer) as h:
                assert await h.insert(URI, {"a": 1, "b": 2}) == 2
                assert [row async for row in h.query_rows(URI)] == [{"caller": CONSUMER}]
                with pytest.raises(Unsupported):
                    await h.delete(URI)
        finally:
            await provider.stop()

    asyncio.run(main())

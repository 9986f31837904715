"""The UDMF service in the real daemon over raw gRPC: channel rules, grants, drag once, bad input with the
store unchanged, large blobs as files with progress, cancellation, kill -9, expiry, lazy drag, custom types.

The parts are built by a small local helper (not the SDK), so this pins the wire contract itself.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from harness import Daemon

from udmf.v1 import udmf_pb2 as pb
from udmf.v1 import udmf_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration]

NO_AI = {"DATAMGR_AI__ENABLED": "false"}
SOURCE = "com.example.source"
TARGET = "com.example.target"
THIRD = "com.example.third"
SYSTEM = "com.example.dragframework"
MANAGE = "ohos.permission.MANAGE_UDMF_ACCESS"
HUB, DRAG, SHARE, PICKER = (
    pb.INTENTION_DATA_HUB,
    pb.INTENTION_DRAG,
    pb.INTENTION_SYSTEM_SHARE,
    pb.INTENTION_PICKER,
)
CODE = grpc.StatusCode
SERVICE = "udmf.v1.UdmfService"


# ---- a tiny part builder and reader ----


def v(x: Any) -> pb.Value:
    if x is None:
        return pb.Value(null_value=True)
    if isinstance(x, bool):
        return pb.Value(bool_value=x)
    if isinstance(x, int):
        return pb.Value(int_value=x)
    if isinstance(x, str):
        return pb.Value(string_value=x)
    if isinstance(x, bytes):
        return pb.Value(bytes_value=x)
    out = pb.Value(object_value=pb.Object())
    for name, item in x.items():
        out.object_value.fields[name].CopyFrom(v(item))
    return out


@dataclass
class E:
    """One entry: a value, and optionally a blob streamed after it (the whole value, or field `field`)."""

    type: str
    value: Any = ...
    blob: bytes | None = None
    field: str = ""
    text: bool = False
    blob_size: int | None = None  # to lie about the size


def parts(
    *records: list[E], chunk: int = 1 << 20, record_count: int | None = None, **props: Any
) -> list[pb.DataPart]:
    out = [
        pb.DataPart(
            header=pb.DataHeader(properties=pb.Properties(**props), record_count=record_count or len(records))
        )
    ]
    for r, entries in enumerate(records):
        for e in entries:
            entry = pb.Entry(record=r, type=e.type, blob_field=e.field, blob_text=e.text)
            if e.value is not ...:
                entry.value.CopyFrom(v(e.value))
            if e.blob is not None:
                entry.blob_size = len(e.blob) if e.blob_size is None else e.blob_size
            out.append(pb.DataPart(entry=entry))
            if e.blob is not None:
                out += [pb.DataPart(chunk=e.blob[i : i + chunk]) for i in range(0, len(e.blob), chunk)]
    return out


def text(s: str) -> list[E]:
    return [E("general.plain-text", s)]


def requests(data: Iterable[pb.DataPart], options: pb.WriteOptions | None) -> Iterator[pb.WriteRequest]:
    if options is not None:
        yield pb.WriteRequest(options=options)
    for p in data:
        yield pb.WriteRequest(part=p)


@dataclass
class Read:
    header: pb.DataHeader
    entries: list[tuple[pb.Entry, bytes]] = field(default_factory=list)
    progress: list[int] = field(default_factory=list)

    def values(self) -> list[tuple[int, str, Any]]:
        """(record, type, value or blob bytes) per entry."""
        out = []
        for e, blob in self.entries:
            has_blob = e.blob_size or e.blob_field
            out.append((e.record, e.type, blob if has_blob else _py(e.value)))
        return out


def _py(value: pb.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "object_value":
        return {k: _py(x) for k, x in value.object_value.fields.items()}
    return None if kind in (None, "null_value") else getattr(value, kind)


def collect(responses: Iterable[pb.ReadResponse]) -> list[Read]:
    out: list[Read] = []
    for r in responses:
        which = r.part.WhichOneof("part")
        if which == "header":
            out.append(Read(r.part.header))
        elif which == "entry":
            out[-1].entries.append((r.part.entry, b""))
        else:
            e, blob = out[-1].entries[-1]
            out[-1].entries[-1] = (e, blob + r.part.chunk)
        out[-1].progress.append(r.progress)
    return out


class Udmf:
    """A stub with one token's metadata."""

    def __init__(self, daemon: Daemon, token: str) -> None:
        self.channel = grpc.insecure_channel(daemon.address)
        self.stub = pb_grpc.UdmfServiceStub(self.channel)
        self.md = [("authorization", f"Bearer {token}")] if token else []

    def insert(self, data: Iterable[pb.DataPart], intention: int = HUB, visibility: int = 0) -> str:
        opts = pb.WriteOptions(intention=intention, visibility=visibility)
        return self.stub.InsertData(requests(data, opts), metadata=self.md, timeout=60).key

    def update(self, key: str, data: Iterable[pb.DataPart]) -> None:
        self.stub.UpdateData(requests(data, pb.WriteOptions(key=key)), metadata=self.md, timeout=60)

    def drag(self, data: Iterable[pb.DataPart]) -> str:
        return self.stub.SetDragData(requests(data, None), metadata=self.md, timeout=60).key

    def get(self, key: str) -> Read:
        (read,) = collect(self.stub.GetData(pb.GetDataRequest(key=key), metadata=self.md, timeout=60))
        return read

    def query(self, key: str = "", intention: int = 0) -> list[Read]:
        req = pb.QueryDataRequest(key=key, intention=intention)
        return collect(self.stub.QueryData(req, metadata=self.md, timeout=60))

    def delete(self, key: str = "", intention: int = 0) -> list[Read]:
        req = pb.DeleteDataRequest(key=key, intention=intention)
        return collect(self.stub.DeleteData(req, metadata=self.md, timeout=60))

    def summary(self, key: str) -> pb.GetSummaryResponse:
        return self.stub.GetSummary(pb.GetSummaryRequest(key=key), metadata=self.md, timeout=10)

    def grant(self, key: str, bundle: str, keep: bool = False) -> None:
        self.stub.GrantAccess(
            pb.GrantAccessRequest(key=key, bundle=bundle, keep=keep), metadata=self.md, timeout=10
        )

    def types(self, **query: Any) -> list[pb.TypeDescriptor]:
        return list(self.stub.QueryTypes(pb.QueryTypesRequest(**query), metadata=self.md, timeout=10).types)

    def close(self) -> None:
        self.channel.close()


def status(fn: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    err: Any = info.value
    return err.code(), err.details()


def store_state(d: Daemon) -> tuple[int, int, int, list[str]]:
    """Rows of data, entries and grants, and the blob files: what a refused call must not change."""
    con = sqlite3.connect(d.data_dir / "datamgr.db")
    try:
        counts = [
            con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("udmf_data", "udmf_entries", "udmf_grants")
        ]
    finally:
        con.close()
    return counts[0], counts[1], counts[2], sorted(os.listdir(d.data_dir / "udmf" / "blobs"))


def blob_files(d: Daemon) -> dict[str, int]:
    folder = d.data_dir / "udmf" / "blobs"
    return {name: (folder / name).stat().st_size for name in os.listdir(folder)}


# ---- fixtures ----


@dataclass
class World:
    daemon: Daemon
    source: Udmf
    target: Udmf
    third: Udmf
    system: Udmf
    admin: Udmf
    anonymous: Udmf


def _world(d: Daemon) -> World:
    admin_token = (d.data_dir / "admin.token").read_text().strip()
    return World(
        d,
        Udmf(d, d.add_app(SOURCE)),
        Udmf(d, d.add_app(TARGET)),
        Udmf(d, d.add_app(THIRD)),
        Udmf(d, d.add_app(SYSTEM, MANAGE)),
        Udmf(d, admin_token),
        Udmf(d, ""),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = {**NO_AI, "DATAMGR_UDMF__LAZY_LOAD_TIMEOUT_S": "3"}
    d = Daemon(tmp_path_factory.mktemp("udmf") / "data", env=env).start(service=SERVICE)
    w = _world(d)
    yield w
    for u in (w.source, w.target, w.third, w.system, w.admin, w.anonymous):
        u.close()
    assert d.stop() == 0
    assert "bug in" not in d.log(), d.log()


# ---- identity ----


def test_the_service_has_health_and_reflection(world: World) -> None:
    with grpc.insecure_channel(world.daemon.address) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        assert SERVICE in set(db.get_services())
        methods = {m.name for m in descriptor_pool.DescriptorPool(db).FindServiceByName(SERVICE).methods}
    assert methods == set(pb.DESCRIPTOR.services_by_name["UdmfService"].methods_by_name)


def test_calls_need_an_app_token(world: World) -> None:
    key = world.source.insert(parts(text("x")))
    stranger = Udmf(world.daemon, "dmapp_nope")
    for who, code in ((world.anonymous, CODE.UNAUTHENTICATED), (stranger, CODE.UNAUTHENTICATED)):
        assert status(lambda who=who: who.get(key))[0] == code
        assert status(lambda who=who: who.insert(parts(text("x"))))[0] == code
        assert status(lambda who=who: who.types(type_id="general.text"))[0] == code
        assert status(lambda who=who: who.grant(key, TARGET))[0] == code
    stranger.close()
    got = status(lambda: world.admin.insert(parts(text("x"))))
    assert got[0] == CODE.PERMISSION_DENIED
    assert "app token" in got[1]


# ---- DATA_HUB ----


def test_data_hub_insert_query_update_delete(world: World) -> None:
    before = int(time.time() * 1000)
    data = parts(
        [
            E("general.plain-text", {"textContent": "hello", "abstract": "h"}),
            E("general.html", {"htmlContent": "<b>hello</b>"}),
        ],
        [E("general.hyperlink", {"url": "https://example.com"})],
        tag="notes",
        extras={"n": v(7)},
    )
    key = world.source.insert(data)
    assert key.startswith(f"udmf://DataHub/{SOURCE}/")
    (got,) = world.target.query(key=key)
    h = got.header
    assert (h.key, h.intention, h.writer, h.record_count, h.properties.tag) == (key, HUB, SOURCE, 2, "notes")
    assert h.properties.extras["n"].int_value == 7
    assert before <= h.properties.timestamp_ms <= int(time.time() * 1000)
    assert h.properties.share_options == pb.SHARE_OPTIONS_CROSS_APP
    sizes = {p.entry.type: p.entry.value.ByteSize() for p in data[1:]}
    assert dict(h.summary.summary) == sizes
    assert h.summary.total_size == sum(sizes.values())
    assert got.values() == [
        (0, "general.plain-text", {"textContent": "hello", "abstract": "h"}),
        (0, "general.html", {"htmlContent": "<b>hello</b>"}),
        (1, "general.hyperlink", {"url": "https://example.com"}),
    ]
    assert got.progress[-1] == 100
    assert key in [r.header.key for r in world.third.query(intention=HUB)]
    assert world.target.get(key).values() == got.values()  # DATA_HUB reads never consume
    assert world.target.get(key).values() == got.values()

    code, msg = status(lambda: world.target.update(key, parts(text("mine now"))))
    assert code == CODE.PERMISSION_DENIED
    assert SOURCE in msg
    world.source.update(key, parts(text("updated")))
    assert world.target.get(key).values() == [(0, "general.plain-text", "updated")]

    assert world.target.delete(key=key) == []  # others' data is skipped, not refused
    assert world.target.delete(intention=HUB) == []  # the target wrote nothing
    assert world.third.query(key=key)
    (deleted,) = world.source.delete(key=key)
    assert deleted.header.key == key
    assert deleted.values() == [(0, "general.plain-text", "updated")]
    code, msg = status(lambda: world.target.query(key=key))
    assert code == CODE.NOT_FOUND
    assert world.source.delete(key=key) == []


def test_delete_by_intention_deletes_only_the_callers(world: World) -> None:
    mine = [world.third.insert(parts(text(f"third {i}"))) for i in range(3)]
    theirs = world.source.insert(parts(text("source's")))
    deleted = world.third.delete(intention=HUB)
    assert sorted(r.header.key for r in deleted) == sorted(mine)
    assert {r.header.writer for r in deleted} == {THIRD}
    assert world.target.query(key=theirs)
    for key in mine:
        assert status(lambda key=key: world.source.get(key))[0] == CODE.NOT_FOUND


def test_own_process_visibility_hides_from_everyone_but_the_writer(world: World) -> None:
    key = world.source.insert(parts(text("secret")), visibility=pb.VISIBILITY_OWN_PROCESS)
    assert key not in [r.header.key for r in world.target.query(intention=HUB)]
    assert status(lambda: world.target.query(key=key))[0] == CODE.NOT_FOUND
    assert status(lambda: world.target.get(key))[0] == CODE.NOT_FOUND
    assert status(lambda: world.target.summary(key))[0] == CODE.NOT_FOUND
    assert key in [r.header.key for r in world.source.query(intention=HUB)]
    assert world.source.get(key).values() == [(0, "general.plain-text", "secret")]
    world.source.update(key, parts(text("still secret")))  # visibility is kept (honoured on insert only)
    assert status(lambda: world.target.get(key))[0] == CODE.NOT_FOUND


def test_in_app_data_never_reaches_another_app(world: World) -> None:
    hub = world.source.insert(parts(text("in app"), share_options=pb.SHARE_OPTIONS_IN_APP))
    assert hub not in [r.header.key for r in world.target.query(intention=HUB)]
    assert status(lambda: world.target.get(hub))[0] == CODE.NOT_FOUND
    assert world.source.get(hub).header.properties.share_options == pb.SHARE_OPTIONS_IN_APP

    share = world.source.insert(parts(text("in app"), share_options=pb.SHARE_OPTIONS_IN_APP), intention=SHARE)
    world.system.grant(share, TARGET)
    code, msg = status(lambda: world.target.get(share))
    assert code == CODE.PERMISSION_DENIED
    assert "IN_APP" in msg
    assert world.source.get(share).values() == [(0, "general.plain-text", "in app")]


# ---- drag and the system channels ----


def test_drag_data_is_read_once_by_the_granted_target(world: World) -> None:
    key = world.source.drag(parts(text("dragged"), [E("general.file", {"uri": "file:///a.txt"})]))
    assert key.startswith(f"udmf://drag/{SOURCE}/")
    code, msg = status(lambda: world.target.get(key))
    assert code == CODE.PERMISSION_DENIED
    assert "grant" in msg
    assert status(lambda: world.source.get(key))[0] == CODE.PERMISSION_DENIED  # not even the source
    assert status(lambda: world.target.grant(key, TARGET))[0] == CODE.PERMISSION_DENIED  # apps do not grant
    assert status(lambda: world.source.query(key=key))[0] == CODE.INVALID_ARGUMENT
    world.admin.grant(key, TARGET)
    s = world.target.summary(key)
    assert set(s.summary.summary) == {"general.plain-text", "general.file"}
    assert s.header.writer == SOURCE
    assert s.header.intention == DRAG
    assert world.source.summary(key).summary == s.summary  # the source sees its own summary
    assert status(lambda: world.third.summary(key))[0] == CODE.PERMISSION_DENIED
    got = world.target.get(key)
    assert got.values() == [
        (0, "general.plain-text", "dragged"),
        (1, "general.file", {"uri": "file:///a.txt"}),
    ]
    code, msg = status(lambda: world.target.get(key))
    assert code == CODE.NOT_FOUND
    assert "read once" in msg


def test_a_kept_grant_reads_again_and_another_read_consumes(world: World) -> None:
    key = world.source.drag(parts(text("keep me")))
    world.system.grant(key, TARGET, keep=True)  # an app holding MANAGE_UDMF_ACCESS is the system role
    world.system.grant(key, THIRD)
    assert world.target.get(key).values() == [(0, "general.plain-text", "keep me")]
    assert world.target.get(key).values() == [(0, "general.plain-text", "keep me")]
    assert world.third.get(key).values() == [(0, "general.plain-text", "keep me")]
    assert status(lambda: world.target.get(key))[0] == CODE.NOT_FOUND


@pytest.mark.parametrize("intention", [SHARE, PICKER, pb.INTENTION_MENU])
def test_system_channels_are_read_by_key_by_a_granted_app_or_the_writer(world: World, intention: int) -> None:
    key = world.source.insert(parts(text("shared")), intention=intention)
    assert status(lambda: world.target.get(key))[0] == CODE.PERMISSION_DENIED
    assert status(lambda: world.target.query(key=key))[0] == CODE.INVALID_ARGUMENT
    assert status(lambda: world.target.query(intention=intention))[0] == CODE.INVALID_ARGUMENT
    assert status(lambda: world.source.update(key, parts(text("x"))))[0] == CODE.INVALID_ARGUMENT
    world.admin.grant(key, TARGET)
    assert world.target.get(key).values() == [(0, "general.plain-text", "shared")]
    code, msg = status(lambda: world.target.get(key))
    assert code == CODE.NOT_FOUND
    assert "deleted once read" in msg
    again = world.source.insert(parts(text("mine")), intention=intention)
    assert world.source.get(again).values() == [(0, "general.plain-text", "mine")]  # implicit privilege
    assert status(lambda: world.source.get(again))[0] == CODE.NOT_FOUND


def test_grants(world: World) -> None:
    hub = world.source.insert(parts(text("hub")))
    drag = world.source.drag(parts(text("drag")))
    before = store_state(world.daemon)
    missing = drag[:-4] + "zzzz"
    assert status(lambda: world.admin.grant(missing, TARGET))[0] == CODE.NOT_FOUND
    assert status(lambda: world.admin.grant("udmf://drag/nope", TARGET))[0] == CODE.INVALID_ARGUMENT
    assert status(lambda: world.admin.grant(drag, "not a bundle"))[0] == CODE.INVALID_ARGUMENT
    assert status(lambda: world.admin.grant(hub, TARGET))[0] == CODE.INVALID_ARGUMENT
    assert status(lambda: world.third.grant(drag, THIRD))[0] == CODE.PERMISSION_DENIED
    assert store_state(world.daemon) == before


# ---- bad input: the status, and nothing stored ----


def _insert_raw(u: Udmf, reqs: list[pb.WriteRequest], method: str = "InsertData") -> Any:
    return getattr(u.stub, method)(iter(reqs), metadata=u.md, timeout=30)


BIG = os.urandom(3 << 20)
BAD_WRITES: dict[str, tuple[Callable[[Udmf], Any], str]] = {
    "unknown type": (lambda u: u.insert(parts([E("general.nope", "x")])), "unknown type"),
    "type/value mismatch": (
        lambda u: u.insert(parts([E("general.hyperlink", 42)])),
        "expected a Hyperlink object",
    ),
    "drag through insert": (lambda u: u.insert(parts(text("x")), intention=DRAG), "SetDragData"),
    "no intention": (lambda u: u.insert(parts(text("x")), intention=0), "needs options.intention"),
    "unknown intention value": (
        lambda u: u.insert(parts(text("x")), intention=42),
        "unknown options.intention 42",
    ),
    "insert with a key": (
        lambda u: _insert_raw(u, [pb.WriteRequest(options=pb.WriteOptions(intention=HUB, key="udmf://x"))]),
        "options.key",
    ),
    "no options": (
        lambda u: _insert_raw(u, list(requests(parts(text("x")), None))),
        "opens with WriteRequest{options}",
    ),
    "options twice": (
        lambda u: _insert_raw(u, [pb.WriteRequest(options=pb.WriteOptions(intention=HUB))] * 2),
        "WriteOptions come once",
    ),
    "record count mismatch": (lambda u: u.insert(parts(text("a"), record_count=2)), "record_count says 2"),
    "blob smaller than blob_size": (
        lambda u: u.insert(parts([E("general.file", blob=BIG, blob_size=len(BIG) + 1)])),
        "came before the next part",
    ),
    "blob larger than blob_size": (
        lambda u: u.insert(parts([E("general.file", blob=BIG, blob_size=len(BIG) - 1)])),
        "more blob bytes than its blob_size",
    ),
    "small blob size mismatch": (
        lambda u: u.insert(parts([E("general.file", blob=b"abc", blob_size=4)])),
        "blob_size is 4 but 3 bytes came",
    ),
    "blob, then a bad entry": (
        lambda u: u.insert(parts([E("general.file", blob=BIG)], [E("general.nope", 1)])),
        "unknown type",
    ),
    "drag with a bad type": (lambda u: u.drag(parts([E("general.nope", "x")])), "unknown type"),
    "drag with another intention": (
        lambda u: _insert_raw(
            u, list(requests(parts(text("x")), pb.WriteOptions(intention=HUB))), "SetDragData"
        ),
        "SetDragData writes DRAG data",
    ),
    "no header": (lambda u: u.insert(parts(text("x"))[1:]), "starts with a header part"),
    "update of a malformed key": (lambda u: u.update("udmf://DataHub/x", parts(text("x"))), "malformed key"),
    "update of a drag key": (
        lambda u: u.update(f"udmf://drag/{SOURCE}/{'a' * 32}", parts(text("x"))),
        "DATA_HUB keys only",
    ),
}


@pytest.mark.parametrize("case", list(BAD_WRITES))
def test_bad_writes_store_nothing(world: World, case: str) -> None:
    call, message = BAD_WRITES[case]
    before = store_state(world.daemon)
    code, msg = status(lambda: call(world.source))
    assert code == CODE.INVALID_ARGUMENT, msg
    assert message in msg
    assert store_state(world.daemon) == before


BAD_READS: dict[str, tuple[Callable[[Udmf], Any], grpc.StatusCode, str]] = {
    "malformed key": (lambda u: u.get("udmf://DataHub/com.a"), CODE.INVALID_ARGUMENT, "malformed key"),
    "unknown intention": (
        lambda u: u.get(f"udmf://Clipboard/com.a/{'a' * 32}"),
        CODE.INVALID_ARGUMENT,
        "unknown intention",
    ),
    "no such key": (lambda u: u.get(f"udmf://DataHub/com.a/{'a' * 32}"), CODE.NOT_FOUND, "no data under"),
    "query drag": (lambda u: u.query(intention=DRAG), CODE.INVALID_ARGUMENT, "does not work on DRAG"),
    "query picker": (lambda u: u.query(intention=PICKER), CODE.INVALID_ARGUMENT, "DATA_HUB only"),
    "query nothing": (lambda u: u.query(), CODE.INVALID_ARGUMENT, "needs a key or an intention"),
    "key/intention mismatch": (
        lambda u: u.query(key=f"udmf://DataHub/com.a/{'a' * 32}", intention=SHARE),
        CODE.INVALID_ARGUMENT,
        "but the intention given is SYSTEM_SHARE",
    ),
    "delete drag": (lambda u: u.delete(intention=DRAG), CODE.INVALID_ARGUMENT, "does not work on DRAG"),
    "types: none given": (lambda u: u.types(), CODE.INVALID_ARGUMENT, "exactly one of"),
    "types: bad extension": (
        lambda u: u.types(filename_extension="txt"),
        CODE.INVALID_ARGUMENT,
        "must start with '.'",
    ),
    "types: unknown id": (lambda u: u.types(type_id="general.nope"), CODE.NOT_FOUND, "no type"),
}


@pytest.mark.parametrize("case", list(BAD_READS))
def test_bad_reads(world: World, case: str) -> None:
    call, expected, message = BAD_READS[case]
    world.source.insert(parts(text("something to find")))
    before = store_state(world.daemon)
    code, msg = status(lambda: call(world.target))
    assert code == expected, msg
    assert message in msg
    assert store_state(world.daemon) == before


def test_oversize_data_is_refused_as_soon_as_it_crosses_the_limit(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", env={**NO_AI, "DATAMGR_UDMF__MAX_DATA_BYTES": "1000000"}).start()
    try:
        u = Udmf(d, d.add_app(SOURCE))
        under = os.urandom(600_000)
        u.insert(parts([E("general.file", blob=under)]))
        before = store_state(d)
        code, msg = status(
            lambda: u.insert(parts([E("general.file", blob=under)], [E("general.file", blob=under)]))
        )
        assert code == CODE.RESOURCE_EXHAUSTED
        assert "1000000 bytes" in msg
        code, _ = status(lambda: u.insert(parts([E("general.file", blob=os.urandom(50 << 20))])))
        assert code == CODE.RESOURCE_EXHAUSTED
        code, _ = status(lambda: u.drag(parts(*[text("x" * 1000) for _ in range(1100)])))
        assert code == CODE.RESOURCE_EXHAUSTED
        assert store_state(d) == before
        u.close()
    finally:
        d.stop()


# ---- large data ----


def test_a_20_mb_blob_round_trips_through_a_file_with_progress(world: World) -> None:
    blob = os.urandom(20 << 20)
    before = blob_files(world.daemon)
    key = world.source.insert(parts([E("general.video", blob=blob)], chunk=256 << 10))
    new = {n: s for n, s in blob_files(world.daemon).items() if n not in before}
    assert list(new.values()) == [len(blob)]
    (name,) = new
    assert (world.daemon.data_dir / "udmf" / "blobs" / name).read_bytes() == blob
    got = world.target.get(key)
    ((entry, data),) = got.entries
    assert entry.blob_size == len(blob)
    assert data == blob
    assert got.header.summary.summary["general.video"] == len(blob) + entry.value.ByteSize()
    assert got.progress == sorted(got.progress)
    assert got.progress[0] == 0
    assert got.progress[-1] == 100
    assert len(set(got.progress)) >= 20  # 1 MiB chunks: one step each
    (deleted,) = world.source.delete(key=key)
    assert deleted.entries[0][1] == blob
    assert name not in blob_files(world.daemon)


def test_a_text_blob_in_a_field(world: World) -> None:
    html = ("<p>" + "é" * 100_000 + "</p>").encode()
    key = world.source.insert(
        parts([E("general.html", {"plainContent": "é"}, blob=html, field="htmlContent", text=True)])
    )
    ((entry, data),) = world.target.get(key).entries
    assert (entry.blob_field, entry.blob_text, entry.blob_size) == ("htmlContent", True, len(html))
    assert dict(entry.value.object_value.fields)["plainContent"].string_value == "é"
    assert data == html


def test_a_cancelled_get_consumes_nothing(world: World) -> None:
    blob = os.urandom(16 << 20)  # more than the transport buffers: the read is cut short
    key = world.source.drag(parts([E("general.file", blob=blob)]))
    world.admin.grant(key, TARGET)
    call = world.target.stub.GetData(pb.GetDataRequest(key=key), metadata=world.target.md, timeout=60)
    first = next(call)
    assert first.part.WhichOneof("part") == "header"
    call.cancel()
    assert status(lambda: list(call))[0] == CODE.CANCELLED
    time.sleep(0.3)
    ((_, data),) = world.target.get(key).entries
    assert data == blob
    assert status(lambda: world.target.get(key))[0] == CODE.NOT_FOUND


# ---- durability and expiry ----


def test_acknowledged_data_survives_kill_9(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", env=NO_AI).start()
    u = Udmf(d, d.add_app(SOURCE))
    blob = os.urandom(3 << 20)
    key = u.insert(parts([E("general.file", blob=blob)], text("small")))
    d.kill9()
    u.close()
    d.start()
    try:
        u = Udmf(d, d.add_app(TARGET))
        got = u.get(key)
        assert got.values() == [(0, "general.file", blob), (1, "general.plain-text", "small")]
        u.close()
    finally:
        d.stop()


def test_orphan_blob_files_are_removed_at_start(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", env=NO_AI).start()
    u = Udmf(d, d.add_app(SOURCE))
    key = u.insert(parts([E("general.file", blob=os.urandom(1 << 20))]))
    kept = set(blob_files(d))
    u.close()
    d.stop()
    orphan = d.data_dir / "udmf" / "blobs" / ("0" * 32 + ".blob")  # as a write cut short by a crash leaves
    orphan.write_bytes(b"half a blob")
    d.start()
    try:
        assert set(blob_files(d)) == kept
        u = Udmf(d, d.add_app(TARGET))
        assert u.get(key).entries[0][0].blob_size == 1 << 20
        u.close()
    finally:
        d.stop()


def test_expired_data_is_swept(tmp_path: Path) -> None:
    env = {**NO_AI, "DATAMGR_UDMF__ENTRY_TTL_S": "1.5", "DATAMGR_UDMF__SWEEP_INTERVAL_S": "0.2"}
    d = Daemon(tmp_path / "data", env=env).start()
    try:
        u = Udmf(d, d.add_app(SOURCE))
        key = u.insert(parts([E("general.file", blob=os.urandom(200_000))]))
        drag = u.drag(parts(text("x")))
        assert u.get(key).entries
        assert blob_files(d)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and blob_files(d):
            time.sleep(0.1)
        assert status(lambda: u.get(key))[0] == CODE.NOT_FOUND
        assert status(lambda: u.summary(drag))[0] == CODE.NOT_FOUND
        assert blob_files(d) == {}
        assert store_state(d)[:3] == (0, 0, 0)
        u.close()
    finally:
        d.stop()


# ---- lazy drag ----


class LazySource:
    """A lazy drag source on its own thread: answers LoadRequests by `mode` (serve, leave or stall)."""

    def __init__(
        self, u: Udmf, start: pb.LazyDragStart, data: list[pb.DataPart], mode: str = "serve"
    ) -> None:
        self.out: queue.Queue[pb.LazySourceMessage | None] = queue.Queue()
        self.out.put(pb.LazySourceMessage(start=start))
        self.data = data
        self.mode = mode
        self.loads: list[pb.LoadRequest] = []
        self.error: Any = None
        self.call = u.stub.StartLazyDrag(self._messages(), metadata=u.md, timeout=60)
        first = next(self.call)
        self.key = first.key
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _messages(self) -> Iterator[pb.LazySourceMessage]:
        while (msg := self.out.get()) is not None:
            yield msg

    def _run(self) -> None:
        try:
            for event in self.call:
                assert event.WhichOneof("event") == "load"
                self.loads.append(event.load)
                if self.mode == "serve":
                    for p in self.data:
                        self.out.put(pb.LazySourceMessage(part=p))
                    self.out.put(pb.LazySourceMessage(done=pb.LoadDone()))
                elif self.mode == "leave":
                    self.out.put(None)
        except grpc.RpcError as exc:
            self.error = exc

    def leave(self) -> None:
        self.out.put(None)
        self.thread.join(10)


def _start(record_count: int = 1) -> pb.LazyDragStart:
    return pb.LazyDragStart(
        properties=pb.Properties(tag="lazy"),
        record_count=record_count,
        summary=pb.Summary(summary={"general.plain-text": 10, "general.image": 5_000_000}),
    )


def test_lazy_drag_loads_from_the_source_when_the_target_reads(world: World) -> None:
    image = os.urandom(5_000_000)
    data = parts(text("lazy text"), [E("general.image", blob=image)])
    source = LazySource(world.source, _start(2), data)
    assert source.key.startswith(f"udmf://drag/{SOURCE}/")
    world.admin.grant(source.key, TARGET)
    s = world.target.summary(source.key)  # at once, before any data exists
    assert dict(s.summary.summary) == {"general.plain-text": 10, "general.image": 5_000_000}
    assert s.header.properties.tag == "lazy"
    assert source.loads == []
    got = world.target.get(source.key)
    assert [(load.key, load.target) for load in source.loads] == [(source.key, TARGET)]
    assert got.values() == [(0, "general.plain-text", "lazy text"), (1, "general.image", image)]
    assert got.progress[-1] == 100
    assert status(lambda: world.target.get(source.key))[0] == CODE.NOT_FOUND
    source.leave()
    assert source.error is None


def test_lazy_drag_without_its_source(world: World) -> None:
    leaving = LazySource(world.source, _start(), parts(text("x")), mode="leave")
    world.admin.grant(leaving.key, TARGET)
    code, msg = status(lambda: world.target.get(leaving.key))
    assert code == CODE.UNAVAILABLE
    assert "went away" in msg
    leaving.thread.join(10)
    assert status(lambda: world.target.get(leaving.key))[0] == CODE.NOT_FOUND  # the drag ended with it

    gone = LazySource(world.source, _start(), parts(text("x")))
    world.admin.grant(gone.key, TARGET)
    gone.leave()
    time.sleep(0.3)
    assert status(lambda: world.target.summary(gone.key))[0] == CODE.NOT_FOUND


def test_lazy_drag_source_that_does_not_deliver(world: World) -> None:
    stalled = LazySource(world.source, _start(), parts(text("x")), mode="stall")
    world.admin.grant(stalled.key, TARGET)
    t0 = time.monotonic()
    code, _ = status(lambda: world.target.get(stalled.key))
    assert code == CODE.DEADLINE_EXCEEDED
    assert 2.5 < time.monotonic() - t0 < 10  # the daemon's lazy_load_timeout_s is 3 here
    stalled.thread.join(10)
    assert stalled.error is not None
    assert stalled.error.code() == CODE.DEADLINE_EXCEEDED
    stalled.leave()


def test_lazy_drag_source_sending_bad_data(world: World) -> None:
    before = store_state(world.daemon)
    bad = LazySource(world.source, _start(), parts([E("general.nope", "x")]))
    world.admin.grant(bad.key, TARGET)
    code, msg = status(lambda: world.target.get(bad.key))
    assert code == CODE.UNAVAILABLE
    assert "unknown type" in msg
    bad.thread.join(10)
    assert bad.error.code() == CODE.INVALID_ARGUMENT
    assert store_state(world.daemon) == before  # the drag ended with its source: nothing of it is left
    bad.leave()


def test_lazy_drag_start_is_checked(world: World) -> None:
    bad_summary = pb.LazyDragStart(record_count=1, summary=pb.Summary(summary={"general.nope": 1}))
    call = world.source.stub.StartLazyDrag(
        iter([pb.LazySourceMessage(start=bad_summary)]), metadata=world.source.md
    )
    code, msg = status(lambda: list(call))
    assert code == CODE.INVALID_ARGUMENT
    assert "unknown type" in msg
    call = world.source.stub.StartLazyDrag(
        iter([pb.LazySourceMessage(done=pb.LoadDone())]), metadata=world.source.md
    )
    assert status(lambda: list(call))[0] == CODE.INVALID_ARGUMENT


# ---- custom types ----


def test_custom_types_persist_and_type_entries(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", env=NO_AI).start()
    notes = f"{SOURCE}.note"
    register = pb.RegisterTypesRequest(
        types=[
            pb.TypeDescriptor(
                type_id=notes, belonging_to_types=["general.plain-text"], filename_extensions=[".note"]
            )
        ]
    )
    unregister = pb.UnregisterTypesRequest(type_ids=[notes])
    try:
        source_token, target_token = d.add_app(SOURCE), d.add_app(TARGET)
        u, t = Udmf(d, source_token), Udmf(d, target_token)
        u.stub.RegisterTypes(register, metadata=u.md)
        assert status(lambda: u.stub.RegisterTypes(register, metadata=u.md))[0] == CODE.ALREADY_EXISTS
        bad = pb.RegisterTypesRequest(
            types=[pb.TypeDescriptor(type_id=f"{SOURCE}.a", belonging_to_types=["general.nope"])]
        )
        assert status(lambda: u.stub.RegisterTypes(bad, metadata=u.md))[0] == CODE.INVALID_ARGUMENT
        theirs = pb.RegisterTypesRequest(
            types=[pb.TypeDescriptor(type_id=f"{THIRD}.x", belonging_to_types=["general.text"])]
        )
        assert status(lambda: u.stub.RegisterTypes(theirs, metadata=u.md))[0] == CODE.INVALID_ARGUMENT
        (desc,) = t.types(type_id=notes)
        assert (desc.owner_bundle, list(desc.belonging_to_types)) == (SOURCE, ["general.plain-text"])
        assert [x.type_id for x in t.types(filename_extension=".note")] == [notes]
        assert status(lambda: u.insert(parts([E(notes, 42)])))[0] == CODE.INVALID_ARGUMENT  # a text type
        key = u.insert(parts([E(notes, "a note")]))
        u.close()
        t.close()
        d.stop()

        d.start()
        u, t = Udmf(d, source_token), Udmf(d, target_token)
        (desc,) = t.types(type_id=notes)
        assert desc.owner_bundle == SOURCE
        assert t.get(key).values() == [(0, notes, "a note")]
        t.insert(parts([E(notes, {"textContent": "after the restart"})]))
        assert status(lambda: t.stub.UnregisterTypes(unregister, metadata=t.md))[0] == CODE.PERMISSION_DENIED
        u.stub.UnregisterTypes(unregister, metadata=u.md)
        assert status(lambda: t.types(type_id=notes))[0] == CODE.NOT_FOUND
        assert status(lambda: t.insert(parts([E(notes, "x")])))[0] == CODE.INVALID_ARGUMENT
        u.close()
        t.close()
        d.stop()

        d.start()
        t = Udmf(d, target_token)
        assert status(lambda: t.types(type_id=notes))[0] == CODE.NOT_FOUND  # the unregistration persisted too
        t.close()
    finally:
        d.stop()


def test_query_types(world: World) -> None:
    (t,) = world.target.types(type_id="general.jpeg")
    assert "general.image" in t.belonging_to_types
    assert [x.type_id for x in world.target.types(mime_type="image/jpeg")] == ["general.jpeg"]
    flexible = world.target.types(filename_extension=".zzqq")
    assert flexible[0].type_id.startswith("flex.z")
    assert len(world.target.types(filename_extension=".ts", all=True)) >= 2
    key = world.source.insert(parts([E(flexible[0].type_id, {"uri": "file:///a.zzqq"})]))
    assert world.target.get(key).values() == [(0, flexible[0].type_id, {"uri": "file:///a.zzqq"})]

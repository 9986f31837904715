"""Distributed tables without a daemon: two devices (each a database with its KV storage, provider
registry, silent store and change feed) and the KV changes shipped between them by hand, as the sync
engine would. Local writes put their rows in the mirror in the same transaction; a peer's batch lands
in the table in the transaction that applies it and reaches the table's subscribers after the commit;
conflicts keep one winner on both; what a device cannot use is skipped, never raised."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamgr.bundles import SYSTEM_BUNDLE_PREFIX
from datamgr.changefeed import Change, Feed, Subscription
from datamgr.datashare import _rowcodec
from datamgr.datashare._compile import compile_predicates
from datamgr.datashare.distributed import DistributedTables
from datamgr.datashare.manifest import parse_manifest
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.datashare.store import SilentStore, check_values
from datamgr.datashare.tables import MIRROR_BUNDLE, HostedTable, ProviderRegistry, mirror_store_id
from datamgr.datashare.uri import parse_uri
from datamgr.errors import AlreadyExists, InvalidArgument, Unavailable
from datamgr.hlc import HLC, pack
from datamgr.kv.storage import STORE_NAME_RE, KvStorage, Value, VType
from datamgr.kv.storage import Change as KvChange
from datamgr.storage import Database, create_engine

BUNDLE = "com.example.notes"
URI = f"datashare:///{BUNDLE}/main/notes"
T0 = 1_800_000_000_000


def manifest(distributed: bool = True, extra: list[dict[str, Any]] = (), **table: Any) -> str:  # type: ignore[assignment]
    columns = [
        {"name": "uid", "type": "text"},
        {"name": "title", "type": "text", "nullable": False},
        {"name": "n", "type": "integer"},
        {"name": "done", "type": "boolean", "default": False},
        {"name": "photo", "type": "blob"},
        *extra,
    ]
    spec = {"name": "notes", "primary_key": "uid", "columns": columns, "distributed": distributed, **table}
    return json.dumps({"bundle": BUNDLE, "stores": [{"name": "main", "tables": [spec]}]})


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@dataclass
class Device:
    name: str
    engine: sa.Engine
    db: Database
    kv: KvStorage
    providers: ProviderRegistry
    feed: Feed[Change]
    tables: DistributedTables
    store: SilentStore
    clock: Clock
    written: list[str]
    loop: asyncio.AbstractEventLoop

    def hosted(self) -> HostedTable:
        return self.providers.require(parse_uri(URI))

    def rows(self) -> list[dict[str, Any]]:
        t = self.hosted().table
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(sa.select(t).order_by(t.c.uid))]

    def mirror(self) -> dict[str, dict[str, Any]]:
        """The mirror's live entries as {primary key: row}."""
        store_id = self.hosted().mirror
        assert store_id is not None
        out = {}
        for key, value, _ in self.kv.scan(store_id):
            assert value.vtype is VType.BYTES
            out[_rowcodec.decode_key("text", key)] = _rowcodec.decode_row(value.data)  # type: ignore[arg-type]
        return out

    def where(self, **eq: Any) -> Any:
        preds = DataSharePredicates()
        for k, v in eq.items():
            preds = preds.equal_to(k, v)
        return compile_predicates(preds, self.hosted().table, self.engine.dialect.name)


class _Recorder:
    def __init__(self, written: list[str]) -> None:
        self._written = written

    async def sync(self, store_id: str, devices: Any, mode: Any) -> dict[str, Any]:
        raise NotImplementedError

    def written(self, store_id: str) -> None:
        self._written.append(store_id)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _device(name: str, url: str, loop: asyncio.AbstractEventLoop) -> Device:
    engine = create_engine(url)
    db = Database(engine, 1)
    clock = Clock()
    kv = KvStorage(engine, name, HLC(clock))
    providers = ProviderRegistry(engine)
    feed: Feed[Change] = Feed(loop, max_per_app=8, queue_size=1000)
    tables = DistributedTables(kv, providers, feed)
    written: list[str] = []
    tables.set_sync(_Recorder(written))
    store = SilentStore(db, feed, tables)
    return Device(name, engine, db, kv, providers, feed, tables, store, clock, written, loop)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def pair(
    request: pytest.FixtureRequest, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> Iterator[tuple[Device, Device]]:
    """Device A on SQLite, B on SQLite or PostgreSQL, both with the notes manifest registered."""
    url_b = (
        f"sqlite:///{tmp_path / 'b.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    a, b = _device("devA", f"sqlite:///{tmp_path / 'a.db'}", loop), _device("devB", url_b, loop)
    for d in (a, b):
        d.tables.register(parse_manifest(manifest()))
    yield a, b
    for d in (a, b):
        d.db.close()
    if request.param == "postgres":  # the PostgreSQL database is shared by the session
        eng = create_engine(url_b)
        meta = sa.MetaData()
        meta.reflect(eng)
        meta.drop_all(eng)
        eng.dispose()


def ship(src: Device, dst: Device) -> list[KvChange]:
    """src's mirror changes dst does not hold yet, applied on dst (one sync push)."""
    store_id = src.hosted().mirror
    assert store_id is not None
    state = dst.kv.peer_state(store_id, src.name)
    received = state.received_seq if state else 0
    changes = src.kv.changes_since(store_id, received, 10_000)
    if not changes:
        return []
    epoch = src.kv.get_store(store_id).epoch  # type: ignore[union-attr]
    return dst.kv.apply_remote(store_id, src.name, epoch, changes, changes[-1].seq, since_seq=received)


def events(d: Device, sub: Subscription[Change]) -> list[Change]:
    d.loop.run_until_complete(asyncio.sleep(0))  # the feed's dispatch
    out = []
    while not sub.queue.empty():
        out.append(d.loop.run_until_complete(sub.next()))
    return out


# ---- the manifest ----


def test_a_distributed_table_with_an_integer_primary_key_is_refused() -> None:
    text = manifest().replace('"uid", "type": "text"', '"uid", "type": "integer"')
    with pytest.raises(InvalidArgument, match=r"auto-increment.*text primary key the app gives"):
        parse_manifest(text)
    parse_manifest(manifest(distributed=False).replace('"uid", "type": "text"', '"uid", "type": "integer"'))


def test_security_levels() -> None:
    assert parse_manifest(manifest()).stores[0].tables[0].label == 2
    assert parse_manifest(manifest(security_level=4)).stores[0].tables[0].label == 4
    for bad in (0, 5, "S2"):
        with pytest.raises(InvalidArgument, match="security_level"):
            parse_manifest(manifest(security_level=bad))
    with pytest.raises(InvalidArgument, match="sets security_level but is not distributed"):
        parse_manifest(manifest(distributed=False, security_level=3))


def test_mirror_store_ids_fit_and_do_not_collide() -> None:
    ids = {
        mirror_store_id("a.b_c", "s", "t"),
        mirror_store_id("a_b.c", "s", "t"),
        mirror_store_id("a", "b_s", "t"),
    }
    assert len(ids) == 3
    long = mirror_store_id("x" * 128, "y" * 64, "z" * 64)
    for store_id in (*ids, long):
        bundle, name = store_id.split("/")
        assert bundle == MIRROR_BUNDLE and bundle.startswith(SYSTEM_BUNDLE_PREFIX)
        assert STORE_NAME_RE.fullmatch(name)
    assert mirror_store_id("a.b_c", "s", "t") == mirror_store_id(
        "a.b_c", "s", "t"
    )  # the same on every device


def test_registration_creates_the_mirror_and_refuses_to_undo_it(pair: tuple[Device, Device]) -> None:
    a, _ = pair
    info = a.kv.get_store(a.hosted().mirror)  # type: ignore[arg-type]
    assert info is not None and (info.kind.value, info.security_level) == ("SINGLE_VERSION", 2)
    with pytest.raises(InvalidArgument, match="stops distributing"):
        a.tables.register(parse_manifest(manifest(distributed=False)))
    with pytest.raises(InvalidArgument, match="from S2 to S3"):
        a.tables.register(parse_manifest(manifest(security_level=3)))
    # the same manifest again, and one adding a column, keep the mirror (no new epoch)
    a.tables.register(parse_manifest(manifest(extra=[{"name": "tag", "type": "text"}])))
    assert a.kv.get_store(a.hosted().mirror).epoch == info.epoch  # type: ignore[arg-type, union-attr]


def test_a_failed_registration_leaves_no_mirror(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    d = _device("devA", f"sqlite:///{tmp_path / 'a.db'}", loop)
    d.tables.register(parse_manifest(manifest(distributed=False)))
    bad = manifest(extra=[{"name": "req", "type": "text", "nullable": False}])  # a new NOT NULL column
    with pytest.raises(InvalidArgument, match="must be nullable or have a default"):
        d.tables.register(parse_manifest(bad))
    assert d.kv.list_stores(MIRROR_BUNDLE) == [] and d.hosted().mirror is None
    d.db.close()


def test_an_existing_table_that_becomes_distributed_sends_its_rows(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    a, b = (
        _device("devA", f"sqlite:///{tmp_path / 'a.db'}", loop),
        _device("devB", f"sqlite:///{tmp_path / 'b.db'}", loop),
    )
    a.tables.register(parse_manifest(manifest(distributed=False)))
    uids = [f"u{i:04d}" for i in range(2500)]  # more than one read of the table
    a.store.batch_insert(a.hosted(), ["uid", "title"], [uids, ["t"] * len(uids)])
    a.tables.register(parse_manifest(manifest()))
    b.tables.register(parse_manifest(manifest()))
    assert sorted(a.mirror()) == uids
    assert len(ship(a, b)) == len(uids)
    assert b.rows() == a.rows()
    for d in (a, b):
        d.db.close()


def test_removing_the_app_drops_the_mirrors(pair: tuple[Device, Device]) -> None:
    a, _ = pair
    assert len(a.kv.list_stores(MIRROR_BUNDLE)) == 1
    a.tables.remove(BUNDLE)
    assert a.kv.list_stores(MIRROR_BUNDLE) == [] and a.providers.manifest(BUNDLE) is None


# ---- local writes ----


def test_every_local_write_puts_its_rows_in_the_mirror(pair: tuple[Device, Device]) -> None:
    a, _ = pair
    h = a.hosted()
    a.store.insert(h, {"uid": "u1", "title": "milk", "photo": b"\x00\xff"})
    a.store.batch_insert(h, ["uid", "title", "n"], [["u2", "u3"], ["eggs", "jam"], [2, None]])
    assert a.mirror() == {
        "u1": {"uid": "u1", "title": "milk", "n": None, "done": False, "photo": b"\x00\xff"},
        "u2": {"uid": "u2", "title": "eggs", "n": 2, "done": False, "photo": None},
        "u3": {"uid": "u3", "title": "jam", "n": None, "done": False, "photo": None},
    }
    assert a.store.update(h, a.where(uid="u2"), {"done": True, "n": 7}) == 1
    assert a.mirror()["u2"] == {"uid": "u2", "title": "eggs", "n": 7, "done": True, "photo": None}
    assert a.store.delete(h, a.where(title="jam")) == 1
    assert sorted(a.mirror()) == ["u1", "u2"]
    assert {r["uid"]: r for r in a.rows()} == a.mirror()
    assert a.written == [h.mirror] * 4  # each commit tells the scheduler


def test_a_batch_insert_with_absent_columns_mirrors_their_defaults(pair: tuple[Device, Device]) -> None:
    a, _ = pair
    h = a.hosted()
    # row 1 leaves `done` out (its default), row 0 gives it
    a.store.batch_insert(h, ["uid", "title", "done"], [["u1", "u2"], ["a", "b"], [True, None]], [[], [], [1]])
    assert {r["uid"]: r for r in a.rows()} == a.mirror()
    assert a.mirror()["u2"]["done"] is False


def test_a_failed_write_leaves_the_mirror_alone(pair: tuple[Device, Device]) -> None:
    a, _ = pair
    h = a.hosted()
    a.store.insert(h, {"uid": "u1", "title": "milk"})
    with pytest.raises(AlreadyExists):
        a.store.batch_insert(h, ["uid", "title"], [["u2", "u1"], ["x", "dup"]])
    assert sorted(a.mirror()) == ["u1"] and len(a.rows()) == 1
    with pytest.raises(InvalidArgument, match="cannot change"):
        a.store.update(h, a.where(uid="u1"), {"uid": "u9"})
    with pytest.raises(InvalidArgument, match=r"column uid of .* is required"):
        check_values(h, {"title": "no key"}, inserting=True)
    with pytest.raises(InvalidArgument, match="at most 1023"):
        a.store.insert(h, {"uid": "k" * 1024, "title": "long key"})
    assert sorted(a.mirror()) == ["u1"] and len(a.rows()) == 1


def test_a_distributed_table_is_not_written_without_its_mirrors(pair: tuple[Device, Device]) -> None:
    a, _ = pair
    bare = SilentStore(a.db, a.feed)
    with pytest.raises(Unavailable, match="is distributed"):
        bare.insert(a.hosted(), {"uid": "u1", "title": "milk"})
    assert a.rows() == []


# ---- remote changes ----


def test_a_peers_writes_reach_the_table_and_its_subscribers(pair: tuple[Device, Device]) -> None:
    a, b = pair
    ha = a.hosted()
    sub = b.feed.subscribe("com.example.reader", URI)
    a.store.insert(ha, {"uid": "u1", "title": "milk", "photo": b"\x01"})
    a.store.insert(ha, {"uid": "u2", "title": "eggs"})
    counted = b.tables.counts.get(b.hosted().table.name)
    assert len(ship(a, b)) == 2
    assert b.rows() == a.rows()
    # rows found on a reader beforehand are known to be stale (datashare.targets)
    assert b.tables.counts.get(b.hosted().table.name) == counted + 1
    [inserted] = events(b, sub)
    assert (inserted.type, inserted.device) == ("INSERT", "devA")
    assert sorted(r["uid"] for r in inserted.rows) == ["u1", "u2"]

    a.store.update(ha, a.where(uid="u1"), {"title": "oat milk", "photo": None})
    a.store.delete(ha, a.where(uid="u2"))
    ship(a, b)
    assert (
        b.rows() == a.rows() == [{"uid": "u1", "title": "oat milk", "n": None, "done": False, "photo": None}]
    )
    got = events(b, sub)
    assert [(e.type, e.device, [r["uid"] for r in e.rows]) for e in got] == [
        ("DELETE", "devA", ["u2"]),
        ("UPDATE", "devA", ["u1"]),
    ]
    assert got[1].rows[0]["title"] == "oat milk"
    assert b.written == []  # remote changes are not pushed again as local writes
    assert ship(a, b) == []  # nothing new


def test_devices_that_declare_different_columns_keep_what_they_know(pair: tuple[Device, Device]) -> None:
    a, b = pair
    a.tables.register(parse_manifest(manifest(extra=[{"name": "tag", "type": "text"}])))  # A is updated first
    a.store.insert(a.hosted(), {"uid": "u1", "title": "milk", "tag": "food"})
    ship(a, b)
    assert b.rows() == [{"uid": "u1", "title": "milk", "n": None, "done": False, "photo": None}]
    b.store.update(b.hosted(), b.where(uid="u1"), {"n": 2})  # B's row has no tag ...
    ship(b, a)
    assert a.rows()[0] == {"uid": "u1", "title": "milk", "n": 2, "done": False, "photo": None, "tag": "food"}
    # ... and once B declares it too, A's next write brings it
    b.tables.register(parse_manifest(manifest(extra=[{"name": "tag", "type": "text"}])))
    a.store.update(a.hosted(), a.where(uid="u1"), {"tag": "dairy"})
    ship(a, b)
    assert b.rows() == a.rows()


def test_concurrent_updates_of_one_row_keep_the_same_winner_on_both(pair: tuple[Device, Device]) -> None:
    a, b = pair
    a.store.insert(a.hosted(), {"uid": "u1", "title": "first"})
    ship(a, b)
    a.clock.ms, b.clock.ms = T0 + 1000, T0 + 2000  # B writes later
    a.store.update(a.hosted(), a.where(uid="u1"), {"title": "alpha's", "n": 1})
    b.store.update(b.hosted(), b.where(uid="u1"), {"title": "bravo's"})
    ship(a, b)  # A's older write loses on B ...
    ship(b, a)  # ... and B's wins on A
    assert a.rows() == b.rows() and a.rows()[0]["title"] == "bravo's" and a.rows()[0]["n"] is None
    # a delete competes as a tombstone: the later write wins, here the delete
    a.clock.ms, b.clock.ms = T0 + 4000, T0 + 3000
    a.store.delete(a.hosted(), a.where(uid="u1"))
    b.store.update(b.hosted(), b.where(uid="u1"), {"title": "too late"})
    ship(b, a)
    ship(a, b)
    assert a.rows() == b.rows() == []


def test_what_a_device_cannot_use_is_skipped_and_the_sync_goes_on(
    pair: tuple[Device, Device], caplog: pytest.LogCaptureFixture
) -> None:
    _, b = pair
    store_id = b.hosted().mirror
    assert store_id is not None

    def change(seq: int, key: bytes, value: Value | None) -> KvChange:
        return KvChange(store_id, "", key, value, pack(T0, seq), "devA", seq)

    def row(**values: Any) -> Value:
        return Value(VType.BYTES, _rowcodec.encode_row(values))

    batch = [
        change(1, b"sgood", row(uid="good", title="ok", later_column="ignored")),
        change(2, b"i\x00\x00\x00\x00\x00\x00\x00\x01", row(title="an integer key")),
        change(3, b"sbadjson", Value(VType.BYTES, b"{nope")),
        change(4, b"swrongtype", row(title=5)),
        change(5, b"snotitle", row(n=1)),
        change(6, b"sstring", Value.of('{"title": "a str value"}')),
    ]
    applied = b.kv.apply_remote(store_id, "devA", "e1", batch, 6, since_seq=0)
    assert len(applied) == 6  # the mirror holds them all ...
    assert [r["uid"] for r in b.rows()] == ["good"]  # ... the table what fits
    assert b.kv.peer_state(store_id, "devA").received_seq == 6  # type: ignore[union-attr]
    assert "skipped 5 of 6 synced row(s)" in caplog.text


def test_rows_the_database_refuses_are_skipped_one_by_one(
    pair: tuple[Device, Device], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, b = pair
    sub = b.feed.subscribe("com.example.reader", URI)
    monkeypatch.setattr("datamgr.datashare.distributed.fit_row", lambda spec, row, pk: {**row, "uid": pk})
    store_id = b.hosted().mirror
    assert store_id is not None
    good = Value(VType.BYTES, _rowcodec.encode_row({"title": "fine"}))
    bad = Value(VType.BYTES, _rowcodec.encode_row({"title": None}))  # NOT NULL: the database refuses it
    entries = [(b"sa", good), (b"sb", bad), (b"sc", good)]
    batch = [KvChange(store_id, "", k, v, pack(T0, i), "devA", i) for i, (k, v) in enumerate(entries, 1)]
    b.kv.apply_remote(store_id, "devA", "e1", batch, 3, since_seq=0)
    assert [r["uid"] for r in b.rows()] == ["a", "c"]
    assert "failed together" in caplog.text and "skipped 1 synced row(s) the database refused" in caplog.text
    assert sorted(r["uid"] for e in events(b, sub) for r in e.rows) == ["a", "c"]


def test_changes_of_a_mirror_without_a_table_are_skipped(pair: tuple[Device, Device]) -> None:
    a, _ = pair
    name = "orphan"
    a.kv.create_store(MIRROR_BUNDLE, name, "SINGLE_VERSION", 2)
    store_id = f"{MIRROR_BUNDLE}/{name}"
    change = KvChange(store_id, "", b"sk", Value(VType.BYTES, b"{}"), pack(T0, 0), "devB", 1)
    assert len(a.kv.apply_remote(store_id, "devB", "e1", [change], 1)) == 1

"""The UDMF runtime store on a temporary SQLite database: rows, blob files, grants, expiry, recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from udmf import access
from udmf._blobs import BlobDir
from udmf.access import ShareOptions, Visibility
from udmf.keys import Intention, new_key
from udmf.store import DataRow, EntryRow, UdmfStore
from udmf.utd import UtdRegistry

WRITER = "com.example.notes"


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> UdmfStore:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    return UdmfStore(engine, BlobDir(tmp_path / "udmf" / "blobs"), ttl_s=10.0, clock=clock)


def row(intention: Intention = Intention.DATA_HUB, **kw: object) -> DataRow:
    fields: dict[str, object] = {
        "key": str(new_key(intention, WRITER)),
        "intention": intention,
        "writer": WRITER,
        "record_count": 1,
        "summary": {"general.plain-text": 3},
        "total_size": 3,
        **kw,
    }
    return DataRow(**fields)  # type: ignore[arg-type]


def blob_file(store: UdmfStore, data: bytes) -> str:
    """Writes a blob file as the ingest does, chunk by chunk."""

    async def write() -> str:
        w = store.blobs.writer()
        for start in range(0, len(data), 1000):
            await w.write(data[start : start + 1000])
        await w.finish()
        await asyncio.to_thread(store.blobs.sync)
        return w.name

    return asyncio.run(write())


def test_insert_get_entries(store: UdmfStore, clock: Clock) -> None:
    r = row(tag="t", extras={"e": {"stringValue": "x"}}, share_options=ShareOptions.IN_APP)
    entries = [
        EntryRow(0, "general.plain-text", b"\x22\x01a"),
        EntryRow(0, "general.html", b"", blob_size=3, blob_field="htmlContent", blob_text=True, blob=b"<b>"),
        EntryRow(1, "general.plain-text", b"\x22\x01b"),
    ]
    stamped = store.insert(r, entries)
    assert (stamped.timestamp_ms, stamped.created_at, stamped.expires_at) == (1_000_000, 1_000.0, 1_010.0)
    got = store.get(r.key)
    assert got == stamped
    assert got is not None
    assert got.runtime().share_options is ShareOptions.IN_APP
    assert [e for _, e in store.entries(r.key)] == entries
    assert [seq for seq, _ in store.entries(r.key)] == [0, 1, 2]
    assert [seq for seq, _ in store.entries(r.key, after_seq=0, limit=1)] == [1]
    assert store.get(str(new_key(Intention.DATA_HUB, WRITER))) is None


def test_blobs_are_files_and_deleting_data_frees_them(store: UdmfStore) -> None:
    data = bytes(range(256)) * 40
    name = blob_file(store, data)
    assert (store.blobs.path / name).read_bytes() == data
    r = row()
    store.insert(r, [EntryRow(0, "general.file", b"", blob_size=len(data), blob_file=name)])

    async def read_back() -> bytes:
        return b"".join([c async for c in store.blobs.chunks(name, 777)])

    assert asyncio.run(read_back()) == data
    freed = store.delete([r.key])
    assert freed == [name]
    assert store.get(r.key) is None
    assert store.entries(r.key) == []
    store.blobs.remove(freed)
    assert not (store.blobs.path / name).exists()


def test_replace_keeps_grants_and_frees_old_files(store: UdmfStore, clock: Clock) -> None:
    old = blob_file(store, b"x" * 5000)
    r = row()
    store.insert(r, [EntryRow(0, "general.file", b"", blob_size=5000, blob_file=old)])
    store.grant(r.key, "com.other", True)
    clock.now = 2_000.0
    freed = store.replace(row(key=r.key, tag="new"), [EntryRow(0, "general.plain-text", b"\x22\x01n")])
    assert freed == [old]
    got = store.get(r.key)
    assert got is not None
    assert (got.tag, got.created_at, got.grants) == ("new", 2_000.0, {"com.other": True})
    assert [e.type for _, e in store.entries(r.key)] == ["general.plain-text"]
    assert store.replace(row(), []) is None  # no such key


def test_grants(store: UdmfStore) -> None:
    r = row(Intention.DRAG)
    store.insert(r, [])
    assert not store.grant(str(new_key(Intention.DRAG, WRITER)), "com.target", False)
    assert store.grant(r.key, "com.target", False)
    assert store.grant(r.key, "com.keeper", True)
    got = store.get(r.key)
    assert got is not None
    assert got.grants == {"com.target": False, "com.keeper": True}
    assert store.grant(r.key, "com.target", True)  # a repeated grant updates keep
    got = store.get(r.key)
    assert got is not None
    assert got.grants["com.target"] is True
    store.delete([r.key])
    assert store.grant(r.key, "com.target", True) is False


def test_expiry_with_an_injected_clock(store: UdmfStore, clock: Clock) -> None:
    name = blob_file(store, b"y" * 3000)
    early = row()
    store.insert(early, [EntryRow(0, "general.file", b"", blob_size=3000, blob_file=name)])
    clock.now = 1_005.0
    late = row()
    store.insert(late, [])
    clock.now = 1_009.9
    assert store.sweep() == []
    clock.now = 1_010.0
    assert store.sweep() == [name]  # the caller removes the freed files
    assert store.get(early.key) is None
    assert store.get(late.key) is not None
    clock.now = 1_015.0
    assert store.sweep() == []
    assert store.get(late.key) is None


def test_the_sweeper_deletes_in_bounded_batches_longest_expired_first(store: UdmfStore, clock: Clock) -> None:
    rows = []
    for _ in range(5):
        rows.append(store.insert(row(), []))
        clock.now += 1
    clock.now += 100
    assert store.sweep_some(2) == (2, [])
    assert [store.get(r.key) is None for r in rows] == [True, True, False, False, False]
    assert store.sweep_some(2)[0] == 2
    assert store.sweep_some(2)[0] == 1
    assert store.sweep_some(2)[0] == 0


def test_lazy_rows_fill_once(store: UdmfStore) -> None:
    pending = row(
        Intention.DRAG, pending=True, record_count=2, summary={"general.plain-text": 10}, total_size=10
    )
    store.insert(pending, [])
    store.grant(pending.key, "com.target", False)
    loaded = row(Intention.DRAG, key=pending.key, record_count=1, total_size=3, tag="loaded")
    assert store.fill(loaded, [EntryRow(0, "general.plain-text", b"\x22\x01a")])
    got = store.get(pending.key)
    assert got is not None
    assert (got.pending, got.record_count, got.total_size, got.tag) == (False, 1, 3, "loaded")
    assert got.grants == {"com.target": False}
    assert not store.fill(loaded, [])  # no longer pending
    assert not store.delete_pending(pending.key)  # loaded data outlives its source
    assert len(store.entries(pending.key)) == 1


def test_delete_pending(store: UdmfStore) -> None:
    pending = row(Intention.DRAG, pending=True)
    store.insert(pending, [])
    store.grant(pending.key, "com.target", False)
    assert store.delete_pending(pending.key)
    assert store.get(pending.key) is None
    assert not store.delete_pending(pending.key)


def test_recover_drops_pending_expired_and_orphans(store: UdmfStore, clock: Clock, tmp_path: Path) -> None:
    kept_file = blob_file(store, b"k" * 2000)
    kept = row()
    store.insert(kept, [EntryRow(0, "general.file", b"", blob_size=2000, blob_file=kept_file)])
    pending = row(Intention.DRAG, pending=True)
    store.insert(pending, [])
    blob_file(store, b"o" * 2000)  # an orphan: a write that crashed before its row committed
    expired_file = blob_file(store, b"e" * 2000)
    clock.now = 500.0
    expired = row()
    store.insert(expired, [EntryRow(0, "general.file", b"", blob_size=2000, blob_file=expired_file)])
    clock.now = 1_001.0
    stranger = store.blobs.path / "notes.txt"  # not a blob file name: left alone
    stranger.write_text("mine")
    dropped, orphans = store.recover()
    assert dropped == 1
    assert orphans == 1
    assert store.get(pending.key) is None
    assert store.get(expired.key) is None
    assert store.get(kept.key) is not None
    assert store.blobs.names() == {kept_file}
    assert stranger.exists()


def test_by_intention_and_cross_device(store: UdmfStore, clock: Clock) -> None:
    a = row(share_options=ShareOptions.CROSS_DEVICE)
    clock.now += 1
    b = row(visibility=Visibility.OWN_PROCESS)
    clock.now += 1
    c = row(Intention.PICKER, share_options=ShareOptions.CROSS_DEVICE)
    d = row(Intention.DRAG, share_options=ShareOptions.CROSS_DEVICE, pending=True)
    e = row(Intention.DRAG, share_options=ShareOptions.IN_APP)
    f = row(share_options=ShareOptions.CROSS_DEVICE, visibility=Visibility.OWN_PROCESS)
    g = row(Intention.DRAG, share_options=ShareOptions.CROSS_DEVICE)
    for r in (a, b, c, d, e, f, g):
        store.insert(r, [])
    # in created_at order; these were all stored at one clock reading, so in key order
    assert [r.key for r in store.by_intention(Intention.DATA_HUB)] == sorted([a.key, b.key, f.key])
    assert [r.key for r in store.by_intention(Intention.PICKER)] == [c.key]
    # what leaves the device: never IN_APP, OWN_PROCESS or share-channel data, never unloaded
    assert {r.key for r in store.cross_device()} == {a.key, g.key}


def test_a_listing_pages_through_what_the_caller_may_see_or_wrote(store: UdmfStore, clock: Clock) -> None:
    """The SQL filter of `listing` is `access.may_query` (or the caller's own data), page by page."""
    other = "com.example.game"
    rows = []
    for i in range(40):
        clock.now += i % 3  # some rows share a created_at: the key breaks ties
        kw: dict[str, object] = {
            "writer": (WRITER, other)[i % 2],
            "visibility": (Visibility.ALL, Visibility.OWN_PROCESS)[i // 2 % 2],
            "share_options": (ShareOptions.IN_APP, ShareOptions.CROSS_DEVICE, ShareOptions.CROSS_APP)[i % 3],
        }
        rows.append(store.insert(row(Intention.DATA_HUB, **kw), []))
    store.insert(row(Intention.PICKER), [])
    order = sorted(rows, key=lambda r: (r.created_at, r.key))
    for caller in (WRITER, other, "com.example.third"):
        for own in (False, True):
            want = [
                r.key for r in order if (r.writer == caller if own else access.may_query(r.runtime(), caller))
            ]
            got: list[str] = []
            after = None
            while page := store.listing(Intention.DATA_HUB, caller, own, after, 7):
                got += [r.key for r in page]
                after = (page[-1].created_at, page[-1].key)
            assert got == want
            assert want or caller == "com.example.third"


def test_custom_types_persist(store: UdmfStore) -> None:
    reg = UtdRegistry()
    reg.register_types(
        [
            {"type_id": "com.example.notes.note", "belonging_to_types": ["general.plain-text"]},
            {"type_id": "com.example.notes.rich", "belonging_to_types": ["com.example.notes.note"]},
        ],
        "com.example.notes",
    )
    store.add_types(reg.custom_declarations()[:1])
    store.add_types(reg.custom_declarations()[1:])
    assert store.load_types() == reg.custom_declarations()
    again = UtdRegistry(custom_declarations=store.load_types())
    assert "general.plain-text" in again.ancestors("com.example.notes.rich")
    store.remove_types(["com.example.notes.rich"])
    assert [d["type_id"] for d in store.load_types()] == ["com.example.notes.note"]


def test_a_failed_blob_write_leaves_no_file(store: UdmfStore) -> None:
    async def run() -> None:
        w = store.blobs.writer()
        await w.write(b"z" * (3 << 20))  # flushes a batch, in flight
        await w.write(b"z" * 10)
        await w.discard()

    asyncio.run(run())
    assert store.blobs.names() == set()


def test_a_cancelled_blob_write_cleans_up(store: UdmfStore) -> None:
    async def writer(started: asyncio.Event) -> None:
        w = store.blobs.writer()
        try:
            while True:
                await w.write(b"c" * (1 << 20))
                started.set()
        except asyncio.CancelledError:
            await w.discard()
            raise

    async def run() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(writer(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert store.blobs.names() == set()

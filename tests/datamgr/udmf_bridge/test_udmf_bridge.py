"""The UDMF bridge on two in-process devices (each a SQLite database with its KV and UDMF stores), whose
system-store batches are handed over by hand as the sync engine would: descriptors move with the UDMF
writes in one transaction, only CROSS_DEVICE data gets one, peers' descriptors become remote rows (and
never replace a device's own data), unusable ones are skipped, and stale ones are tombstoned at start."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from datamgr.hlc import HLC
from datamgr.kv.storage import Change, KvStorage, Value
from datamgr.storage import Database, create_engine
from datamgr.udmf_bridge.bridge import UdmfBridge, UdmfSyncConfig
from datamgr.udmf_bridge.records import STORE_ID, encode
from udmf.access import ShareOptions, Visibility
from udmf.config import UdmfConfig
from udmf.errors import ResourceExhausted
from udmf.keys import Intention, new_key
from udmf.service import UdmfService
from udmf.store import DataRow, EntryRow
from udmf.v1 import udmf_pb2

WRITER = "com.example.source"
CROSS = ShareOptions.CROSS_DEVICE
INLINE = 2000


class NoFetch:
    async def fetch(self, *args: Any) -> Any:
        raise AssertionError("no reads from peers here")
        yield  # pragma: no cover

    async def close(self) -> None:
        pass


@dataclass
class Device:
    name: str
    kv: KvStorage
    udmf: UdmfService
    db: Database
    bridge: UdmfBridge
    notified: list[str] = field(default_factory=list)
    received: int = 0  # the peer seq this device holds

    def live(self) -> dict[bytes, bytes]:
        """The live descriptors in the system store."""
        return {k: v.data for k, v, _ in self.kv.scan(STORE_ID)}  # type: ignore[misc]

    def start(self) -> None:
        asyncio.run(self.bridge.start(self.notified.append))


def _device(tmp: Path, name: str, start: bool = True) -> Device:
    engine = create_engine(f"sqlite:///{tmp / name}.db")
    db = Database(engine, 1)
    kv = KvStorage(engine, name, HLC())
    udmf = UdmfService(UdmfConfig(data_dir=tmp / name), lambda context: None, db)
    bridge = UdmfBridge(UdmfSyncConfig(INLINE), kv, udmf, db, NoFetch())  # type: ignore[arg-type]
    dev = Device(name, kv, udmf, db, bridge)
    if start:
        dev.start()
    return dev


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Device, Device]]:
    a, b = _device(tmp_path, "devA"), _device(tmp_path, "devB")
    yield a, b
    for d in (a, b):
        d.db.close()


def _ship(src: Device, dst: Device) -> list[Change]:
    """Everything in src's system store that dst does not hold yet, applied as one pushed batch."""
    changes = src.kv.changes_since(STORE_ID, dst.received, 10_000)
    if not changes:
        return []
    info = src.kv.get_store(STORE_ID)
    assert info is not None
    applied = dst.kv.apply_remote(STORE_ID, src.name, info.epoch, changes, changes[-1].seq)
    dst.received = changes[-1].seq
    return applied


def _row(intention: Intention = Intention.DATA_HUB, share: ShareOptions = CROSS, **kw: Any) -> DataRow:
    fields: dict[str, Any] = {
        "key": str(new_key(intention, WRITER)),
        "intention": intention,
        "writer": WRITER,
        "record_count": 1,
        "summary": {"general.plain-text": 7},
        "total_size": 7,
        "share_options": share,
        **kw,
    }
    return DataRow(**fields)


def _text(s: str) -> list[EntryRow]:
    return [EntryRow(0, "general.plain-text", udmf_pb2.Value(string_value=s).SerializeToString())]


def test_only_cross_device_data_gets_a_descriptor_and_it_moves_with_the_data(
    two: tuple[Device, Device],
) -> None:
    a, _ = two
    store = a.udmf.store
    shared = store.insert(_row(), _text("shared"))
    for share in (ShareOptions.CROSS_APP, ShareOptions.IN_APP):
        store.insert(_row(share=share), _text("home"))
    store.insert(_row(visibility=Visibility.OWN_PROCESS), _text("the writer's only"))
    for intention in (Intention.SYSTEM_SHARE, Intention.PICKER, Intention.MENU):
        store.insert(_row(intention), _text("for a reader named here"))
    assert set(a.live()) == {shared.key.encode()}
    assert a.notified == [STORE_ID]  # after the one commit that wrote a descriptor

    # an update that makes it CROSS_APP takes the descriptor away; one back to CROSS_DEVICE restores it
    store.replace(dataclasses.replace(shared, share_options=ShareOptions.CROSS_APP), _text("home now"))
    assert a.live() == {}
    store.replace(shared, _text("shared again"))
    assert set(a.live()) == {shared.key.encode()}
    store.delete([shared.key])
    assert a.live() == {} and len(a.notified) == 4

    # made OWN_PROCESS, data leaves no more: its descriptor goes
    hub = store.insert(_row(), _text("public"))
    store.replace(dataclasses.replace(hub, visibility=Visibility.OWN_PROCESS), _text("mine now"))
    assert a.live() == {} and len(a.notified) == 6

    # a descriptor that cannot sync refuses the write: nothing of it is stored
    fat = _row(extras={"big": {"stringValue": "z" * 4_200_000}})
    with pytest.raises(ResourceExhausted):
        store.insert(fat, _text("fat"))
    assert store.get(fat.key) is None and a.live() == {}


def test_expiry_and_consumption_tombstone_the_descriptor(two: tuple[Device, Device]) -> None:
    a, b = two
    store = a.udmf.store
    drag = store.insert(_row(Intention.DRAG), _text("drag me"))
    hub = store.insert(_row(expires_at=0), _text("hub"))
    _ship(a, b)
    assert {r.key for r in b.udmf.store.by_intention(Intention.DATA_HUB)} == {hub.key}
    store.delete([drag.key])  # consumed by its reader
    store._clock = lambda: hub.expires_at + 1  # type: ignore[method-assign]
    store.sweep()
    assert a.live() == {}
    assert len(_ship(a, b)) == 2  # two tombstones
    assert b.udmf.store.get(drag.key) is None and b.udmf.store.get(hub.key) is None


def test_peers_descriptors_become_remote_rows(two: tuple[Device, Device]) -> None:
    a, b = two
    small = a.udmf.store.insert(_row(tag="small"), _text("fits"))
    blob = EntryRow(
        0, "general.octet-stream", udmf_pb2.Value().SerializeToString(), 5000, "", False, b"q" * 5000
    )
    big = a.udmf.store.insert(_row(summary={"general.octet-stream": 5000}, total_size=5000), [blob])
    drag = a.udmf.store.insert(_row(Intention.DRAG), _text("dragged"))
    assert len(_ship(a, b)) == 3

    got = b.udmf.store.get(small.key)
    assert got == dataclasses.replace(small, origin="devA", copied=True, grants={})
    assert [e for _, e in b.udmf.store.entries(small.key)] == _text("fits")
    for key in (big.key, drag.key):  # too large to carry; drag data never is: both read from devA
        row = b.udmf.store.get(key)
        assert row is not None and row.origin == "devA" and not row.copied
        assert b.udmf.store.entries(key) == []
    assert b.live().keys() == a.live().keys()
    assert b.notified == []  # bravo wrote nothing of its own

    # grants given on bravo stay when the descriptor changes; bravo's own deletes write nothing
    assert b.udmf.store.grant(drag.key, "com.example.target", keep=False)
    a.udmf.store.replace(dataclasses.replace(small, tag="changed"), _text("changed"))
    _ship(a, b)
    assert b.udmf.store.get(small.key).tag == "changed"  # type: ignore[union-attr]
    b.udmf.store.delete([drag.key])  # the drop target on bravo consumed it (through devA)
    assert b.notified == [] and drag.key.encode() in b.live()  # devA's tombstone is on its way


def test_a_descriptor_never_replaces_own_data_and_unusable_ones_are_skipped(
    two: tuple[Device, Device],
) -> None:
    a, b = two
    mine = b.udmf.store.insert(_row(), _text("bravo's own"))
    forged = encode(dataclasses.replace(mine, tag="forged"), "devA", None)
    a.kv.write(STORE_ID, [(mine.key.encode(), Value.of(forged)), (b"udmf://junk", Value.of(b"\x00junk"))])
    a.kv.write(STORE_ID, [(str(new_key(Intention.DATA_HUB, WRITER)).encode(), Value.of("a string"))])
    applied = _ship(a, b)  # applied whole: skipped descriptors do not stop the sync
    assert len(applied) == 3 and b.kv.peer_state(STORE_ID, "devA").received_seq == 3  # type: ignore[union-attr]
    assert b.udmf.store.get(mine.key) == dataclasses.replace(mine, grants={})  # untouched
    assert [r.key for r in b.udmf.store.by_intention(Intention.DATA_HUB)] == [mine.key]
    a.kv.write(STORE_ID, [], [mine.key.encode()])  # nor does a tombstone delete it
    _ship(a, b)
    assert b.udmf.store.get(mine.key) is not None


def test_stale_descriptors_are_tombstoned_at_start(tmp_path: Path) -> None:
    a = _device(tmp_path, "devA")
    kept = a.udmf.store.insert(_row(), _text("kept"))
    gone = a.udmf.store.insert(_row(), _text("gone"))
    other = encode(_row(), "devB", None)  # a peer's descriptor: not ours to tombstone
    a.kv.apply_remote(
        STORE_ID, "devB", "e", [Change(STORE_ID, "", b"udmf://x", Value.of(other), 1 << 40, "devB", 1)], 1
    )
    a.udmf.store.replication = None  # deleted while the bridge is not attached (the store's recovery)
    a.udmf.store.delete([gone.key])
    a.db.close()
    again = _device(tmp_path, "devA", start=False)
    again.start()
    try:
        assert set(again.live()) == {kept.key.encode(), b"udmf://x"}
        assert again.notified == [STORE_ID]
    finally:
        again.db.close()

"""UDMF's side of the storage quotas: what the store reports of each writer's data (checked against
its own measure), refusals inside the write transaction, and the start-up clean-up and the expiry
sweeper surviving a full disk (the fault injected in the database runner)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from udmf._blobs import BlobDir
from udmf.config import UdmfConfig
from udmf.errors import ResourceExhausted
from udmf.keys import Intention, new_key
from udmf.service import UdmfService
from udmf.store import ROW_OVERHEAD, DataRow, EntryRow, UdmfStore

A, B = "com.example.a", "com.example.b"


class Ledger:
    """A Usage that keeps exact counts and refuses growth past `quota`."""

    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.used: dict[str, int] = {}

    def refusal(self, conn: sa.Connection, bundle: str, grow: int) -> str | None:
        if self.used.get(bundle, 0) + grow > self.quota:
            return f"{bundle} over quota"
        return None

    def add(self, bundle: str, delta: int) -> None:
        self.used[bundle] = self.used.get(bundle, 0) + delta

    def room(self, bundle: str, total: int, new: int) -> str | None:
        return None


def data(writer: str, size: int, pending: bool = False) -> DataRow:
    key = new_key(Intention.DRAG if pending else Intention.DATA_HUB, writer)
    return DataRow(str(key), key.intention, writer, 1, {"general.plain-text": size}, size, pending=pending)


def entries(size: int) -> list[EntryRow]:
    return [EntryRow(0, "general.plain-text", b"v", size, "text", True, b"x" * size)]


@pytest.fixture
def store(tmp_path: Path) -> tuple[UdmfStore, Ledger, sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    s = UdmfStore(engine, BlobDir(tmp_path / "blobs"), ttl_s=3600)
    ledger = Ledger(quota=10_000)
    s.usage = ledger
    return s, ledger, engine


def measured(engine: sa.Engine, bundle: str) -> int:
    with engine.connect() as conn:
        return UdmfStore.bytes_of(conn, bundle)


def test_every_write_reports_what_the_measure_finds(store: tuple[UdmfStore, Ledger, sa.Engine]) -> None:
    s, ledger, engine = store
    one = s.insert(data(A, 1000), entries(1000))
    two = s.insert(data(A, 2000), entries(2000))
    s.insert(data(B, 500), entries(500))
    lazy = s.insert(data(A, 3000, pending=True), [])  # a lazy drag counts its row until it is filled
    assert ledger.used == {A: 3000 + 3 * ROW_OVERHEAD, B: 500 + ROW_OVERHEAD}
    assert s.fill(data(A, 3000), entries(3000)) is False  # no such pending key: nothing counted
    filled = DataRow(lazy.key, Intention.DRAG, A, 1, {"general.plain-text": 2500}, 2500)
    assert s.fill(filled, entries(2500))
    assert s.replace(DataRow(**{**_fields(two), "total_size": 100}), entries(100)) == []
    assert ledger.used[A] == measured(engine, A) == 1000 + 100 + 2500 + 3 * ROW_OVERHEAD
    s.delete([one.key, lazy.key])
    assert ledger.used[A] == measured(engine, A) == 100 + ROW_OVERHEAD
    assert ledger.used[B] == measured(engine, B) == 500 + ROW_OVERHEAD


def _fields(row: DataRow) -> dict[str, Any]:
    return {f: getattr(row, f) for f in row.__dataclass_fields__}


def test_a_write_past_the_quota_is_refused_and_stores_nothing(
    store: tuple[UdmfStore, Ledger, sa.Engine],
) -> None:
    s, ledger, engine = store
    s.insert(data(A, 9000), entries(9000))
    with pytest.raises(ResourceExhausted, match="over quota"):
        s.insert(data(A, 2000), entries(2000))
    assert ledger.used[A] == measured(engine, A) == 9000 + ROW_OVERHEAD
    s.insert(data(B, 2000), entries(2000))  # another writer is not touched


class FullDisk:
    """A database runner that fails like a full disk while `full` is set."""

    def __init__(self) -> None:
        self.full = True
        self.calls = 0

    async def __call__(self, fn: Any, *args: Any) -> Any:
        self.calls += 1
        if self.full:
            raise ResourceExhausted("the disk holding the daemon's data is full")
        return fn(*args)


def test_start_and_the_sweeper_survive_a_full_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    write = FullDisk()
    config = UdmfConfig(data_dir=tmp_path, sweep_interval_s=0.01, entry_ttl_s=0.01)
    service = UdmfService(
        config, lambda context: None, SimpleNamespace(engine=engine, write=write, read=write)
    )
    service.store.insert(data(A, 10), entries(10))

    async def main() -> None:
        await service.start()  # the clean-up fails: the daemon starts anyway
        while write.calls < 4:  # the sweeper keeps trying
            await asyncio.sleep(0.01)
        write.full = False
        while service.store.by_intention(Intention.DATA_HUB):
            await asyncio.sleep(0.01)  # once there is room, the expired data goes
        await service.close()

    with caplog.at_level(logging.WARNING, logger="udmf.service"):
        asyncio.run(asyncio.wait_for(main(), 30))
    assert not service.store.by_intention(Intention.DATA_HUB)
    assert all(r.exc_info is None for r in caplog.records), "a full disk is not a bug: no traceback"
    assert any("full" in r.getMessage() for r in caplog.records)

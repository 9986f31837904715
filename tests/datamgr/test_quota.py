"""Per-app usage and the free-space floor as pure logic (fake statvfs, fake measures), and the byte
counts of DataShare rows and UDMF data checked against what the SQL measures on a real SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from datamgr.datashare.manifest import parse_manifest
from datamgr.datashare.tables import HostedTable, ProviderRegistry
from datamgr.datashare.usage import cell_bytes, column_bytes, insert_bytes, row_bytes, stored_bytes
from datamgr.disk import DiskFloor, as_resource_exhausted, disk_full
from datamgr.errors import InvalidArgument, ResourceExhausted
from datamgr.quota import ROW_OVERHEAD, Quotas, StorageLimits, over_quota
from datamgr.storage import Database, create_engine

MIB = 1 << 20


class Statvfs:
    """A filesystem whose free bytes the test sets; counts how often it was asked."""

    def __init__(self, free: int) -> None:
        self.free, self.calls = free, 0

    def __call__(self, path: Any) -> Any:
        self.calls += 1
        return os.statvfs_result((4096, 4096, 0, 0, self.free // 4096, self.free // 4096, 0, 0, 0, 255))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def floor(free: int, min_free: int) -> tuple[DiskFloor, Statvfs, Clock]:
    fs, clock = Statvfs(free), Clock()
    return DiskFloor(Path("/"), min_free, 0.25, fs, clock), fs, clock


def test_the_floor_counts_what_it_let_through_until_it_looks_again() -> None:
    f, fs, clock = floor(100 * MIB, 64 * MIB)
    assert f.refusal(30 * MIB) is None
    refused = f.refusal(10 * MIB)  # 100 - 30 - 10 < 64, though statvfs was not asked again
    assert refused is not None and "storage.min_free_bytes" in refused and "64.0 MiB" in refused
    assert fs.calls == 1
    assert f.refusal(0) is None and f.refusal(-5) is None  # deletes and shrinking writes pass
    fs.free = 90 * MIB
    clock.now = 0.3  # the next look sees what the disk says now
    assert f.refusal(10 * MIB) is None and fs.calls == 2
    fs.free = 10 * MIB
    f.forget()
    assert f.refusal(1) is not None and fs.calls == 3


def test_over_quota_names_the_setting_the_usage_and_the_kinds() -> None:
    assert over_quota("a.b", {"kv": 3, "udmf": 0}, 7, 10) is None
    assert over_quota("a.b", {"kv": 30}, 0, 10) is None  # over already, but this write adds nothing
    refused = over_quota("a.b", {"kv": 2 * MIB, "udmf": MIB, "datashare": 0}, MIB + 1, 4 * MIB)
    assert refused is not None
    assert "a.b" in refused and "storage.app_quota_bytes" in refused and "4.0 MiB" in refused
    assert "kv 2.0 MiB" in refused and "udmf 1.0 MiB" in refused and "datashare" not in refused


def quotas(quota: int, free: int = 1 << 40, min_free: int = 0) -> tuple[Quotas, dict[str, int]]:
    """Quotas whose measures read `stored` (bytes per kind of the one app) and count their calls."""
    stored: dict[str, int] = {"datashare": 0, "kv": 0, "udmf": 0, "measures": 0}
    q = Quotas(StorageLimits(quota, min_free), floor(free, min_free)[0])

    def measure(kind: str) -> Any:
        def run(conn: Any, bundle: str) -> int:
            stored["measures"] += 1
            return stored[kind]

        return run

    for kind in ("datashare", "kv", "udmf"):
        q.measure_with(kind, measure(kind))
    return q, stored


def test_counts_are_measured_once_then_kept_by_deltas() -> None:
    q, stored = quotas(100)
    stored["kv"] = 40
    kv = q.ledger("kv")
    assert q.usage("app") == {"datashare": None, "kv": None, "udmf": None}
    kv.admit(None, "app", 50)  # type: ignore[arg-type]
    assert stored["measures"] == 3 and q.usage("app") == {"datashare": 0, "kv": 40, "udmf": 0}
    kv.add("app", 50)
    with pytest.raises(ResourceExhausted, match=r"storage\.app_quota_bytes"):
        q.ledger("udmf").admit(None, "app", 11)  # type: ignore[arg-type]
    q.ledger("udmf").admit(None, "app", 10)  # type: ignore[arg-type]
    kv.add("app", -90)  # a delete: never refused, counted at once
    assert q.usage("app")["kv"] == 0 and stored["measures"] == 3
    kv.admit(None, "app", -1000)  # type: ignore[arg-type]  # shrinking always passes
    stored["kv"] = 77  # something nobody counted (sync) changed the data
    kv.forget("app")
    kv.add("app", 5)  # unknown stays unknown: the next measure includes this write
    assert q.usage("app")["kv"] is None
    kv.admit(None, "app", 1)  # type: ignore[arg-type]
    assert q.usage("app")["kv"] == 77 and stored["measures"] == 4
    q.forget("app")
    assert q.usage("app") == {"datashare": None, "kv": None, "udmf": None}


def test_the_floor_refuses_after_the_quota_allowed() -> None:
    q, _ = quotas(1 << 30, free=80 * MIB, min_free=64 * MIB)
    q.ledger("kv").admit(None, "app", 10 * MIB)  # type: ignore[arg-type]
    with pytest.raises(ResourceExhausted, match=r"storage\.min_free_bytes"):
        q.ledger("kv").admit(None, "app", 10 * MIB)  # type: ignore[arg-type]
    # UDMF asks while blobs stream in: the total against the quota, the new bytes against the floor
    assert q.room("app", 5 * MIB, MIB) is None
    assert "storage.min_free_bytes" in (q.room("app", 7 * MIB, 6 * MIB) or "")  # 80 - 10 - 1 - 6 < 64
    assert q.ledger("udmf", floor_at_commit=False).refusal(None, "app", 50 * MIB) is None  # type: ignore[arg-type]


def test_disk_full_is_recognised_wherever_it_is_wrapped() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    assert disk_full(full)
    assert disk_full(OperationalError("INSERT ...", {}, full))
    assert disk_full(OSError(28, "No space left on device"))
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise RuntimeError("while writing") from exc
    except RuntimeError as wrapped:
        assert disk_full(wrapped)
    assert not disk_full(sqlite3.OperationalError("database is locked"))
    assert not disk_full(OSError(13, "Permission denied"))
    assert isinstance(as_resource_exhausted(full), ResourceExhausted)
    bug = KeyError("x")
    assert as_resource_exhausted(bug) is bug
    mistake = InvalidArgument("bad")
    assert as_resource_exhausted(mistake) is mistake


def test_a_write_into_a_full_sqlite_database_is_resource_exhausted(tmp_path: Path) -> None:
    """SQLite's max_page_count gives the same SQLITE_FULL as a full disk."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db = Database(engine, 1)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v BLOB)")

    def fill() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA max_page_count = 20")
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", (b"x" * 200_000,))

    async def main() -> None:
        with pytest.raises(ResourceExhausted, match="full"):
            await db.write(fill)

    try:
        asyncio.run(main())
    finally:
        db.close()


MANIFEST = {
    "bundle": "com.example.p",
    "stores": [
        {
            "name": "main",
            "tables": [
                {
                    "name": "t",
                    "primary_key": "id",
                    "columns": [
                        {"name": "id", "type": "integer"},
                        {"name": "name", "type": "text", "nullable": False},
                        {"name": "note", "type": "text", "default": "dëfault"},
                        {"name": "n", "type": "real"},
                        {"name": "ok", "type": "boolean", "default": True},
                        {"name": "photo", "type": "blob"},
                    ],
                }
            ],
        }
    ],
}


@pytest.fixture
def hosted(tmp_path: Path) -> tuple[sa.Engine, HostedTable]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ds.sqlite'}")
    registry = ProviderRegistry(engine)
    registry.register(parse_manifest(json.dumps(MANIFEST)))
    return engine, registry.tables("com.example.p")[0]


def test_python_and_sql_count_the_same_bytes(hosted: tuple[sa.Engine, HostedTable]) -> None:
    engine, h = hosted
    names = ["name", "n", "photo"]
    columns: list[list[Any]] = [["ascii", "ünïcode ☃", ""], [1.5, None, 3], [b"\x00" * 10, None, b"ab"]]
    python = insert_bytes(h, names, columns)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(h.table), [dict(zip(names, r, strict=True)) for r in zip(*columns, strict=True)]
        )
        rows, sql = stored_bytes(conn, h)
        read = [row_bytes(h, r._asdict()) for r in conn.execute(sa.select(h.table))]
    assert rows == 3 and python == sql == sum(read)
    # rows, ids, names (UTF-8), the "dëfault" notes, the reals, the booleans, the photos
    assert python == 3 * ROW_OVERHEAD + 3 * 8 + (5 + 13 + 0) + 3 * 8 + 2 * 8 + 3 * 8 + 12
    with engine.connect() as conn:
        assert stored_bytes(conn, h, h.table.c.name == "ascii", ["name", "photo"]) == (1, 15)


def test_cell_and_column_counts_agree() -> None:
    for col_type, values in (
        ("text", ["a", None, "ü", "", "☃☃"]),
        ("blob", [b"", None, b"abc", bytearray(b"xy")]),
        ("integer", [1, None, 0, -5]),
        ("real", [1.0, None, 2]),
        ("boolean", [True, False, None]),
    ):
        assert column_bytes(col_type, values) == sum(map(cell_bytes, values)), col_type

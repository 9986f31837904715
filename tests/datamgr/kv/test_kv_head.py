"""`_run.head`, the bounded read behind KvService.entries_as (a grounded chat's KV source): the first
entries with a prefix in key order, stopping at a count or at a byte total, within the query budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from datamgr.budget import Watchdog
from datamgr.errors import Cancelled, DeadlineExceeded
from datamgr.hlc import HLC
from datamgr.kv._run import QueryBudget, head
from datamgr.kv.storage import KvStorage, StoreKind, Value
from datamgr.storage import create_engine

STORE = "com.example.notes/notes"


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[KvStorage]:
    engine = create_engine(f"sqlite:///{tmp_path / 'kv.db'}")
    storage = KvStorage(engine, "devA", HLC())
    storage.create_store("com.example.notes", "notes", StoreKind.SINGLE_VERSION, 1)
    storage.write(
        STORE,
        [(f"note/{i:02}".encode(), Value.of(f"text {i}")) for i in range(20)]
        + [(b"other", Value.of("x" * 100)), (b"note/bytes", Value.of(b"\x00\x01")), (b"note/n", Value.of(7))],
    )
    storage.write(STORE, [], [b"note/05"])  # a deleted key is not read
    yield storage
    engine.dispose()


def run(kv: KvStorage, prefix: str, limit: int, max_bytes: int, ms: int = 60_000) -> list[tuple[str, object]]:
    watchdog = Watchdog()
    try:
        return head(kv, watchdog, QueryBudget(ms, "kv.max_query_ms"), STORE, prefix, None, limit, max_bytes)
    finally:
        watchdog.close()


def test_head_reads_the_first_entries_with_the_prefix_in_key_order(kv: KvStorage) -> None:
    got = run(kv, "note/", 5, 1 << 20)
    assert got == [
        ("note/00", "text 0"),
        ("note/01", "text 1"),
        ("note/02", "text 2"),
        ("note/03", "text 3"),
        ("note/04", "text 4"),
    ]
    everything = run(kv, "note/", 1000, 1 << 20)
    assert [k for k, _ in everything] == [f"note/{i:02}" for i in range(20) if i != 5] + [
        "note/bytes",
        "note/n",
    ]
    assert dict(everything)["note/bytes"] == b"\x00\x01" and dict(everything)["note/n"] == 7
    assert run(kv, "", 1000, 1 << 20)[-1] == ("other", "x" * 100)
    assert run(kv, "nothing", 10, 1 << 20) == []


def test_head_stops_after_the_value_that_reaches_the_byte_bound(kv: KvStorage) -> None:
    assert [k for k, _ in run(kv, "note/", 1000, 12)] == ["note/00", "note/01"]  # 6 + 6 bytes
    assert [k for k, _ in run(kv, "note/", 1000, 13)] == ["note/00", "note/01", "note/02"]
    assert len(run(kv, "", 1000, 1)) == 1  # one entry at least: the one that crossed


def test_head_runs_within_its_budget(kv: KvStorage) -> None:
    watchdog = Watchdog()
    try:
        budget = QueryBudget(60_000, "kv.max_query_ms")
        watchdog.cancel(budget)
        with pytest.raises(Cancelled):
            head(kv, watchdog, budget, STORE, "", None, 10, 1 << 20)
    finally:
        watchdog.close()
    with pytest.raises(DeadlineExceeded):
        run(kv, "", 10, 1 << 20, ms=0)

"""Update/Delete rows found on a reader (datamgr.datashare.targets): which WHEREs are costly, which
operations of a batch may be found beforehand, snapshots known to be stale, and the writer applying
only what is still exact."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamgr.changefeed import Feed
from datamgr.datashare._compile import build_where_for_write, compile_predicates
from datamgr.datashare.manifest import parse_manifest
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.datashare.store import SilentStore
from datamgr.datashare.tables import HostedTable, ProviderRegistry
from datamgr.datashare.targets import WriteCounts, costly, find, found_on_reader
from datamgr.datashare.uri import parse_uri
from datamgr.storage import Database, create_engine

P = DataSharePredicates
URI = "datashare:///com.example.notes/main/notes"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[SilentStore, HostedTable, Database]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    providers = ProviderRegistry(engine)
    columns = [
        {"name": "id", "type": "integer"},
        {"name": "title", "type": "text"},
        {"name": "n", "type": "integer", "nullable": True},
    ]
    spec = {"name": "notes", "primary_key": "id", "columns": columns}
    providers.register(
        parse_manifest(
            json.dumps({"bundle": "com.example.notes", "stores": [{"name": "main", "tables": [spec]}]})
        )
    )
    loop = asyncio.new_event_loop()
    db = Database(engine, 1)
    store = SilentStore(db, Feed(loop, max_per_app=8, queue_size=100))
    hosted = providers.require(parse_uri(URI))
    store.batch_insert(hosted, ["title", "n"], [[f"t{i}" for i in range(10)], list(range(10))])
    yield store, hosted, db
    db.close()
    loop.close()


def where(hosted: HostedTable, p: DataSharePredicates) -> Any:
    return build_where_for_write(hosted.table, compile_predicates(p, hosted.table), hosted.pk)


def test_only_primary_key_comparisons_are_cheap(env: Any) -> None:
    _, hosted, _ = env
    assert not costly(hosted, None)
    assert not costly(hosted, where(hosted, P().equal_to("id", 3)))
    assert not costly(hosted, where(hosted, P().in_("id", [1, 2]).or_().between("id", 5, 6)))
    assert costly(hosted, where(hosted, P().equal_to("n", 3)))  # a scan
    assert costly(hosted, where(hosted, P().like("title", "t%")))
    assert costly(hosted, where(hosted, P().equal_to("id", 3).limit(1, 0)))  # a subquery


def test_batch_operations_found_beforehand(env: Any) -> None:
    _, hosted, _ = env
    pk, scan, like = (
        where(hosted, p) for p in (P().equal_to("id", 1), P().equal_to("n", 1), P().like("title", "x%"))
    )
    assert found_on_reader([(hosted, pk, ["n"]), (hosted, like, ["title"]), (hosted, scan, ["title"])]) == [
        False,  # cheap: the writer evaluates it
        True,  # reads and sets title, which no earlier operation set
        False,  # reads n, which the first one set (and sets title, which the second one set)
    ]
    # reads n, which an earlier operation set
    assert found_on_reader([(hosted, like, ["n"]), (hosted, scan, ["title"])]) == [True, False]
    # sets the primary key: the whole batch runs on the writer
    assert found_on_reader([(hosted, like, ["title"]), (hosted, scan, ["id"])]) == [False, False]


def test_a_snapshot_taken_while_the_table_changed_is_stale(env: Any) -> None:
    _, hosted, db = env
    counts = WriteCounts()
    counts.bump(hosted.table.name)
    with db.engine.connect() as conn:
        found = find(conn, counts, hosted, where(hosted, P().less_than("n", 3)), None, True)
        assert (found.at, sorted(found.keys)) == (1, [1, 2, 3])
        assert found.size == sum(32 + 2 + 8 + 8 for _ in range(3))  # overhead, title, n, id

        def bump(value: int) -> int:  # a commit counted while the statement runs
            counts.bump(hosted.table.name)
            return value

        conn.connection.dbapi_connection.create_function("bump", 1, bump)  # type: ignore[union-attr]
        racing = find(conn, counts, hosted, sa.func.bump(hosted.table.c.n) < 3, None, False)
        assert (racing.at, sorted(racing.keys), racing.size) == (-1, [1, 2, 3], 0)


def test_the_writer_applies_found_rows_only_if_no_row_changed(env: Any) -> None:
    store, hosted, db = env
    compiled = compile_predicates(P().less_than("n", 3), hosted.table)
    where_ = build_where_for_write(hosted.table, compiled, hosted.pk)

    def count() -> int:
        with db.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(hosted.table)).scalar_one())

    [found] = store.find([(hosted, where_, None)])
    assert found is not None and found.at == store.counts.get(hosted.table.name)
    store.update(hosted, compile_predicates(P().equal_to("id", 9), hosted.table), {"n": 0})  # now matches
    assert store.delete(hosted, compiled, None, found) is None  # stale: nothing done
    assert count() == 10
    [found] = store.find([(hosted, where_, None)])
    assert found is not None and sorted(found.keys) == [1, 2, 3, 9]
    # a new matching row: as if the delete came first (it deletes the rows it found, not this one)
    new = store.insert(hosted, {"title": "new", "n": 0})
    assert store.counts.get(hosted.table.name) == found.at
    assert store.delete(hosted, compiled, None, found) == 4
    assert count() == 7
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(hosted.table.c.id).where(hosted.table.c.n < 3)).scalars().all() == [new]
    assert store.update(hosted, compiled, {"n": 9}, None, found) is None  # the delete counted
    assert store.counts.get(hosted.table.name) == found.at + 1

"""Registering a manifest again migrates its tables: columns are added, rows kept, nothing is retyped."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from harness import READ, WRITE, Daemon

from datamgr.client import DataShareHelper, DataSharePredicates
from datamgr.errors import DatamgrError

pytestmark = pytest.mark.integration
P = DataSharePredicates


def manifest(bundle: str, *extra_columns: dict[str, Any]) -> dict[str, Any]:
    return {
        "bundle": bundle,
        "read_permission": READ,
        "write_permission": WRITE,
        "stores": [
            {
                "name": "main",
                "tables": [
                    {
                        "name": "items",
                        "primary_key": "id",
                        "columns": [
                            {"name": "id", "type": "integer"},
                            {"name": "title", "type": "text", "nullable": False},
                            {"name": "qty", "type": "integer"},
                            *extra_columns,
                        ],
                    }
                ],
            }
        ],
    }


# Columns a migration adds: nullable, defaulted, of every type, and a default that looks like SQL.
EXTRA = [
    {"name": "note", "type": "text"},
    {"name": "level", "type": "integer", "nullable": False, "default": 3},
    {"name": "ratio", "type": "real", "default": 0.5},
    {"name": "done", "type": "boolean", "nullable": False, "default": False},
    {"name": "owner", "type": "text", "default": "O'Brien'); DROP TABLE ds_1; --"},
    {"name": "raw", "type": "blob"},
]


def uri(bundle: str, table: str = "items", store: str = "main") -> str:
    return f"datashare:///{bundle}/{store}/{table}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("migration") / "data").start()
    try:
        yield d
    finally:
        d.stop()
    assert "Traceback" not in d.log()


class Provider:
    """A provider app with its token, registered with the base manifest and `rows` rows."""

    def __init__(self, daemon: Daemon, bundle: str, rows: int = 100) -> None:
        self.daemon, self.bundle = daemon, bundle
        self.token = daemon.add_app(bundle)
        self.register(manifest(bundle))
        self.rows = [{"title": f"item {i}", "qty": i} for i in range(rows)]
        with self.helper() as h:
            assert h.batch_insert(uri(bundle), self.rows) == rows

    def helper(self) -> DataShareHelper:
        return self.daemon.helper(self.token)

    def register(self, m: dict[str, Any]) -> list[str]:
        with self.helper() as h:
            return list(h.register_provider(m).added_columns)

    def query(
        self, columns: list[str] | None = None, target: str | None = None, order: str = "id"
    ) -> list[dict[str, Any]]:
        with self.helper() as h, h.query(target or uri(self.bundle), P().order_by_asc(order), columns) as rs:
            return list(rs.rows())


def test_adding_columns_keeps_every_row(daemon: Daemon) -> None:
    p = Provider(daemon, "com.example.mig.add")
    added = p.register(manifest(p.bundle, *EXTRA))
    assert sorted(added) == sorted(
        f"{uri(p.bundle)}#{c}" for c in ("note", "level", "ratio", "done", "owner", "raw")
    )
    rows = p.query()
    assert [{"title": r["title"], "qty": r["qty"]} for r in rows] == p.rows
    assert {(r["note"], r["level"], r["ratio"], r["done"], r["owner"], r["raw"]) for r in rows} == {
        (None, 3, 0.5, False, "O'Brien'); DROP TABLE ds_1; --", None)
    }
    with p.helper() as h:
        row = h.insert(
            uri(p.bundle), {"title": "new", "note": "hi", "level": 9, "done": True, "raw": b"\x01"}
        )
        assert h.update(uri(p.bundle), P().less_than("qty", 10), {"note": "small"}) == 10
        with h.query(uri(p.bundle), P().equal_to("level", 9), ["id", "note", "done", "raw", "ratio"]) as rs:
            assert list(rs.rows()) == [{"id": row, "note": "hi", "done": True, "raw": b"\x01", "ratio": 0.5}]
        with h.query(uri(p.bundle), P().equal_to("note", "small")) as rs:
            assert rs.row_count == 10
    assert len(p.query(["id"])) == 101
    # Registering the same manifest again adds nothing and keeps everything.
    assert p.register(manifest(p.bundle, *EXTRA)) == []
    assert len(p.query(["id"])) == 101


def test_a_batch_row_without_a_defaulted_required_column_gets_the_default(daemon: Daemon) -> None:
    p = Provider(daemon, "com.example.mig.batchdefault", rows=0)
    p.register(manifest(p.bundle, *EXTRA))
    with p.helper() as h:
        assert h.batch_insert(uri(p.bundle), [{"title": "a", "level": 5}, {"title": "b"}]) == 2
    assert [r["level"] for r in p.query()] == [5, 3]


def refused(p: Provider, m: dict[str, Any]) -> str:
    with p.helper() as h, pytest.raises(DatamgrError) as info:
        h.register_provider(m)
    assert info.value.code == "INVALID_ARGUMENT", info.value.message
    return info.value.message


def test_changing_a_column_type_is_refused_and_changes_nothing(daemon: Daemon) -> None:
    p = Provider(daemon, "com.example.mig.retype")
    retyped = manifest(p.bundle)
    retyped["stores"][0]["tables"][0]["columns"][2]["type"] = "text"
    message = refused(p, retyped)
    assert "qty" in message
    assert "integer" in message and "text" in message
    # A refused manifest adds nothing either, even the columns it would have added.
    with_extra = copy.deepcopy(retyped)
    with_extra["stores"][0]["tables"][0]["columns"].append({"name": "extra", "type": "text"})
    refused(p, with_extra)
    with p.helper() as h:
        with pytest.raises(DatamgrError) as info:
            h.insert(uri(p.bundle), {"title": "t", "extra": "x"})
        assert info.value.code == "INVALID_ARGUMENT"
        with pytest.raises(DatamgrError):
            h.insert(uri(p.bundle), {"title": "t", "qty": "seven"})
        h.insert(uri(p.bundle), {"title": "t", "qty": 7})
    assert len(p.query()) == 101
    assert set(p.query()[0]) == {"id", "title", "qty"}


def test_other_incompatible_changes_are_refused(daemon: Daemon) -> None:
    p = Provider(daemon, "com.example.mig.other", rows=5)
    no_qty = manifest(p.bundle)
    del no_qty["stores"][0]["tables"][0]["columns"][2]
    assert "qty" in refused(p, no_qty)
    assert "email" in refused(p, manifest(p.bundle, {"name": "email", "type": "text", "nullable": False}))
    new_pk = manifest(p.bundle, {"name": "code", "type": "text", "nullable": False, "default": "x"})
    new_pk["stores"][0]["tables"][0]["primary_key"] = "code"
    assert "primary key" in refused(p, new_pk)
    no_table = manifest(p.bundle)
    no_table["stores"][0]["tables"][0]["name"] = "renamed"
    assert "items" in refused(p, no_table)
    assert len(p.query()) == 5


def test_adding_tables_and_stores_and_changing_access(daemon: Daemon) -> None:
    p = Provider(daemon, "com.example.mig.tables", rows=10)
    m = manifest(p.bundle)
    m["stores"][0]["tables"].append(
        {
            "name": "tags",
            "primary_key": "tag",
            "columns": [{"name": "tag", "type": "text"}, {"name": "n", "type": "integer"}],
        }
    )
    m["stores"].append(
        {
            "name": "archive",
            "read_permission": "noPermission",
            "tables": [{"name": "old", "primary_key": "id", "columns": [{"name": "id", "type": "integer"}]}],
        }
    )
    assert p.register(m) == []
    reader = daemon.add_app("com.example.mig.reader")
    with daemon.helper(reader) as h:
        with pytest.raises(DatamgrError) as info:
            h.query(uri(p.bundle))
        assert info.value.code == "PERMISSION_DENIED"
        with h.query(uri(p.bundle, "old", "archive")) as rs:
            assert rs.row_count == 0
    with p.helper() as h:
        h.insert(uri(p.bundle, "tags"), {"tag": "red", "n": 1})
        with pytest.raises(DatamgrError) as info:
            h.insert(uri(p.bundle, "tags"), {"tag": "red", "n": 2})
        assert info.value.code == "ALREADY_EXISTS"  # a text primary key
    assert p.query(target=uri(p.bundle, "tags"), order="tag") == [{"tag": "red", "n": 1}]
    assert len(p.query()) == 10

    m["read_permission"] = "noPermission"  # open the main store too
    assert p.register(m) == []
    with daemon.helper(reader) as h, h.query(uri(p.bundle)) as rs:
        assert rs.row_count == 10


def test_everything_survives_a_restart(daemon: Daemon) -> None:
    p = Provider(daemon, "com.example.mig.restart", rows=50)
    p.register(manifest(p.bundle, {"name": "note", "type": "text", "default": "kept"}))
    consumer = daemon.add_app("com.example.mig.consumer", READ)
    before = p.query()

    assert daemon.stop() == 0
    daemon.start()

    assert p.query() == before
    assert {r["note"] for r in before} == {"kept"}
    with daemon.helper(consumer) as h, h.query(uri(p.bundle), None, ["title", "note"]) as rs:
        assert rs.row_count == 50  # token and permission survived
    # The restored manifest is the migrated one: migrating again from it works.
    added = p.register(
        manifest(
            p.bundle, {"name": "note", "type": "text", "default": "kept"}, {"name": "more", "type": "integer"}
        )
    )
    assert added == [f"{uri(p.bundle)}#more"]
    with p.helper() as h:
        h.insert(uri(p.bundle), {"title": "after restart", "more": 1})
    assert len(p.query()) == 51
    retyped = manifest(p.bundle, {"name": "note", "type": "integer"}, {"name": "more", "type": "integer"})
    assert "note" in refused(p, retyped)

"""The same daemon code on PostgreSQL: CRUD, predicates, migration, change notification, batch atomicity."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from harness import CONTACTS, PEOPLE, PEOPLE_URI, READ, WRITE, Daemon, contacts_manifest

from datamgr.client import DataShareHelper, DataSharePredicates
from datamgr.errors import DatamgrError

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
P = DataSharePredicates


@pytest.fixture(scope="module")
def schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped afterwards (the server is per session)."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@dataclass
class Env:
    daemon: Daemon
    schema_url: str
    provider_token: str
    dialer_token: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, schema_url: str) -> Iterator[Env]:
    daemon = Daemon(tmp_path_factory.mktemp("pg") / "data", env={"DATAMGR_DATABASE_URL": schema_url}).start()
    try:
        provider = daemon.add_app(CONTACTS)
        dialer = daemon.add_app("com.example.dialer", READ, WRITE)
        with daemon.helper(provider) as h:
            h.register_provider(contacts_manifest())
        yield Env(daemon, schema_url, provider, dialer)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


@pytest.fixture
def ds(env: Env) -> Iterator[DataShareHelper]:
    """The dialer's helper on an empty people table."""
    with env.daemon.helper(env.provider_token) as provider:
        provider.delete(PEOPLE_URI)
    with env.daemon.helper(env.dialer_token) as h:
        yield h


@pytest.fixture
def seeded(ds: DataShareHelper) -> DataShareHelper:
    assert ds.batch_insert(PEOPLE_URI, PEOPLE) == len(PEOPLE)
    return ds


def all_rows(h: DataShareHelper) -> list[dict[str, Any]]:
    with h.query(PEOPLE_URI, P().order_by_asc("id")) as rs:
        return list(rs.rows())


def ids(h: DataShareHelper, preds: DataSharePredicates | None) -> list[int]:
    with h.query(PEOPLE_URI, preds, ["id"]) as rs:
        return [row["id"] for row in rs.rows()]


def error(fn: Any, *args: Any) -> DatamgrError:
    with pytest.raises(DatamgrError) as info:
        fn(*args)
    assert info.value.code != "INTERNAL", info.value.message
    return info.value


def test_the_daemon_really_uses_postgresql(env: Env) -> None:
    assert "postgresql" in env.daemon.log()
    assert not (env.daemon.data_dir / "datamgr.db").exists()
    engine = sa.create_engine(env.schema_url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {"dm_apps", "ds_providers", "ds_tables"} <= tables


def test_crud_basics(ds: DataShareHelper) -> None:
    first = ds.insert(
        PEOPLE_URI, {"name": "Ada", "age": 36, "score": 9.5, "starred": True, "photo": b"\x00\xff"}
    )
    assert ds.insert(PEOPLE_URI, {"name": "Alan"}) == first + 1
    assert ds.batch_insert(PEOPLE_URI, [{"name": f"n{i}", "age": i} for i in range(100)]) == 100
    assert all_rows(ds)[0] == {
        "id": first,
        "name": "Ada",
        "phone": None,
        "age": 36,
        "score": 9.5,
        "starred": True,
        "photo": b"\x00\xff",
    }
    assert all_rows(ds)[1]["starred"] is False  # the declared default
    assert ds.update(PEOPLE_URI, P().less_than("age", 10), {"phone": "low"}) == 10
    assert ds.update(PEOPLE_URI, P().order_by_desc("age").limit(3), {"phone": "top"}) == 3
    assert ids(ds, P().equal_to("phone", "top").order_by_asc("id")) == [first + 99, first + 100, first + 101]
    assert ds.delete(PEOPLE_URI, P().greater_than_or_equal_to("age", 50)) == 50
    result = ds.batch_update(
        {PEOPLE_URI: [({"score": 1.0}, P().equal_to("name", "Ada")), ({"score": 2.0}, None)]}
    )
    assert result == {PEOPLE_URI: [1, 52]}
    assert ds.update(PEOPLE_URI, None, {"starred": True}) == 52  # empty predicates: the whole table
    assert ds.delete(PEOPLE_URI) == 52
    assert all_rows(ds) == []


def test_a_large_query_streams_in_pages(ds: DataShareHelper) -> None:
    rows = [{"name": f"p{i}", "age": i, "photo": bytes([i % 256])} for i in range(1500)]
    assert ds.batch_insert(PEOPLE_URI, rows) == 1500
    with ds.query(PEOPLE_URI, P().order_by_asc("id"), ["name", "age", "photo"], page_rows=64) as rs:
        assert list(rs.rows()) == rows


def test_explicit_primary_keys_do_not_break_later_automatic_ones(ds: DataShareHelper) -> None:
    """On SQLite the next id is max+1; a PostgreSQL sequence must not hand out an id already taken."""
    auto = ds.insert(PEOPLE_URI, {"name": "automatic"})
    assert ds.insert(PEOPLE_URI, {"id": auto + 1, "name": "explicit"}) == auto + 1
    assert ds.batch_insert(PEOPLE_URI, [{"id": auto + 2, "name": "explicit too"}]) == 1
    later = ds.insert(PEOPLE_URI, {"name": "automatic again"})
    assert later == auto + 3
    assert ds.batch_insert(PEOPLE_URI, [{"name": "batch"}]) == 1
    assert ids(ds, P().order_by_asc("id")) == [auto, auto + 1, auto + 2, auto + 3, auto + 4]


PG_PREDICATES = [
    pytest.param(P().equal_to("name", "Ada"), [1], id="equal_to"),
    pytest.param(P().not_equal_to("starred", True), [2, 4, 5, 7], id="not_equal_to"),
    pytest.param(P().greater_than("score", 8.0), [1, 3, 6], id="greater_than"),
    pytest.param(P().equal_to("photo", b"\xff"), [6], id="equal_to_blob"),
    pytest.param(
        P().equal_to("age", 36).or_().greater_than("age", 80).and_().equal_to("starred", True),
        [1, 3, 5],
        id="and_binds_tighter_than_or",
    ),
    pytest.param(
        P()
        .begin_wrap()
        .equal_to("age", 36)
        .or_()
        .greater_than("age", 80)
        .end_wrap()
        .and_()
        .equal_to("starred", True),
        [1, 3],
        id="wraps",
    ),
    pytest.param(P().like("name", "A%"), [1, 2], id="like_is_case_sensitive_on_postgresql"),
    pytest.param(P().like("phone", "555-010_"), [1, 3, 4, 5, 6], id="like_underscore"),
    pytest.param(P().unlike("name", "%a%"), [4, 7], id="unlike"),
    pytest.param(P().glob("name", "A*"), [1, 2], id="glob"),
    pytest.param(P().glob("name", "[AB]?[ar]*"), [1, 2, 6], id="glob_sets"),
    pytest.param(P().glob("name", "[^A-Z]*"), [5, 7], id="glob_negated_range"),
    pytest.param(P().glob("name", "?d?"), [1], id="glob_question_mark"),
    pytest.param(P().glob("name", "100%_*"), [7], id="glob_takes_like_wildcards_literally"),
    pytest.param(P().contains("name", "%_"), [7], id="contains_escapes_wildcards"),
    pytest.param(P().begins_with("name", "ada"), [5], id="begins_with"),
    pytest.param(P().ends_with("phone", "0103"), [3], id="ends_with"),
    pytest.param(P().is_null("age"), [4], id="is_null"),
    pytest.param(P().is_not_null("phone"), [1, 3, 4, 5, 6, 7], id="is_not_null"),
    pytest.param(P().in_("age", [36, 85]), [1, 3, 5], id="in"),
    pytest.param(P().not_in("age", [36, 85]), [2, 6, 7], id="not_in"),
    pytest.param(P().between("age", 30, 45), [1, 2, 5], id="between"),
    pytest.param(P().not_between("age", 30, 45), [3, 6, 7], id="not_between"),
]


@pytest.mark.parametrize(("preds", "expected"), PG_PREDICATES)
def test_predicates(seeded: DataShareHelper, preds: DataSharePredicates, expected: list[int]) -> None:
    assert ids(seeded, preds.order_by_asc("id")) == expected


def test_order_limit_distinct_group_by(seeded: DataShareHelper) -> None:
    # NULLs sort as on SQLite: first ascending, last descending.
    assert ids(seeded, P().order_by_desc("age").order_by_asc("id")) == [3, 7, 2, 1, 5, 6, 4]
    assert ids(seeded, P().order_by_asc("age").order_by_desc("id")) == [4, 6, 5, 1, 2, 7, 3]
    assert ids(seeded, P().order_by_asc("id").limit(2, 1)) == [2, 3]
    assert ids(seeded, P().order_by_asc("id").limit(0, 5)) == [6, 7]
    with seeded.query(PEOPLE_URI, P().distinct().order_by_asc("age"), ["age"]) as rs:
        assert [r["age"] for r in rs.rows()] == [None, 27, 36, 41, 50, 85]
    with seeded.query(PEOPLE_URI, P().group_by(["starred"]).order_by_asc("starred"), ["starred"]) as rs:
        assert [r["starred"] for r in rs.rows()] == [False, True]


@pytest.mark.parametrize(
    ("bad_row", "code"),
    [
        ({"id": 1003, "name": "wrong type", "age": "forty"}, "INVALID_ARGUMENT"),
        ({"id": 1001, "name": "duplicate key within the batch"}, "ALREADY_EXISTS"),
        ({"id": 7, "name": "duplicate of a stored row"}, "ALREADY_EXISTS"),
    ],
)
def test_batch_insert_is_all_or_nothing(seeded: DataShareHelper, bad_row: dict[str, Any], code: str) -> None:
    before = all_rows(seeded)
    rows = [{"id": 1000 + i, "name": f"ok{i}", "age": i} for i in range(1, 50)]
    rows.insert(25, bad_row)
    assert error(seeded.batch_insert, PEOPLE_URI, rows).code == code
    assert all_rows(seeded) == before
    err = error(
        seeded.batch_update, {PEOPLE_URI: [({"phone": "applied?"}, None), ({"id": 1}, P().equal_to("id", 2))]}
    )
    assert err.code == "ALREADY_EXISTS"
    assert all_rows(seeded) == before


def test_values_postgresql_cannot_store_are_refused_cleanly(seeded: DataShareHelper) -> None:
    """Text with NUL characters: PostgreSQL refuses it, and that must be INVALID_ARGUMENT, not INTERNAL."""
    before = all_rows(seeded)
    assert error(seeded.insert, PEOPLE_URI, {"name": "x\x00y"}).code == "INVALID_ARGUMENT"
    assert error(seeded.update, PEOPLE_URI, None, {"phone": "\x00"}).code == "INVALID_ARGUMENT"
    assert (
        error(seeded.batch_insert, PEOPLE_URI, [{"name": "ok"}, {"name": "n\x00"}]).code == "INVALID_ARGUMENT"
    )
    assert error(seeded.insert, PEOPLE_URI, {"name": "nan", "score": float("nan")}).code == "INVALID_ARGUMENT"
    assert all_rows(seeded) == before


def test_change_notification_in_commit_order(env: Env, ds: DataShareHelper) -> None:
    listener = env.daemon.add_app("com.example.pg.listener", READ)
    with env.daemon.helper(listener) as lh, lh.subscribe(PEOPLE_URI) as sub:
        row = ds.insert(PEOPLE_URI, {"name": "Ada"})
        ds.update(PEOPLE_URI, P().equal_to("id", row), {"age": 37})
        with pytest.raises(DatamgrError):  # rolled back: no notification
            ds.batch_insert(PEOPLE_URI, [{"id": 500, "name": "a"}, {"id": 500, "name": "b"}])
        ds.delete(PEOPLE_URI, P().equal_to("id", row))
        changes = [sub.next() for _ in range(3)]
        assert [(c.type, c.uri) for c in changes] == [
            ("INSERT", PEOPLE_URI),
            ("UPDATE", PEOPLE_URI),
            ("DELETE", PEOPLE_URI),
        ]
        assert changes[0].values[0]["name"] == "Ada"
        assert changes[1].values[0]["age"] == 37
        assert changes[2].values[0]["id"] == row

        writers, per_writer = 4, 25
        committed: list[int] = []
        lock = threading.Lock()

        def write(n: int) -> None:
            with env.daemon.helper(env.dialer_token) as h:
                for i in range(per_writer):
                    row_id = h.insert(PEOPLE_URI, {"name": f"w{n}-{i}"})
                    with lock:
                        committed.append(row_id)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = [sub.next().values[0]["id"] for _ in range(writers * per_writer)]
        assert seen == sorted(committed)  # ids come from one sequence in commit order


def test_a_statement_past_its_budget_is_stopped(ds: DataShareHelper) -> None:
    """PostgreSQL stops it by statement_timeout (datashare.max_statement_ms, 2000 ms by default): the
    delete rolls back, a query's page is stopped as well, and the writer's connection goes on working."""
    for _ in range(30):
        ds.insert(PEOPLE_URI, {"name": "a" * 800_000})
    patterns = ["%" + "a" * 126 + "b", "%" + "a" * 125 + "bb"]  # ~0.2 s a row each, within the limits
    slow = P().unlike("name", patterns[0]).unlike("name", patterns[1])  # true for every row
    err = error(ds.delete, PEOPLE_URI, slow)
    assert err.code == "DEADLINE_EXCEEDED" and "datashare.max_statement_ms (2000 ms)" in err.message
    assert len(ids(ds, None)) == 30
    err = error(ids, ds, P().like("name", patterns[0]).or_().like("name", patterns[1]))
    assert err.code == "DEADLINE_EXCEEDED" and "datashare.max_statement_ms" in err.message
    assert ds.delete(PEOPLE_URI, P().not_equal_to("name", "")) == 30


def test_migration_and_restart(env: Env, ds: DataShareHelper) -> None:
    ds.batch_insert(PEOPLE_URI, [{"name": f"m{i}", "age": i} for i in range(20)])
    manifest = contacts_manifest()
    manifest["stores"][0]["tables"][0]["columns"] += [
        {"name": "email", "type": "text"},
        {"name": "level", "type": "integer", "nullable": False, "default": 3},
    ]
    with env.daemon.helper(env.provider_token) as provider:
        resp = provider.register_provider(manifest)
        assert sorted(resp.added_columns) == [f"{PEOPLE_URI}#email", f"{PEOPLE_URI}#level"]
        changed = contacts_manifest()
        changed["stores"][0]["tables"][0]["columns"] = [
            {**c, "type": "real"} if c["name"] == "age" else c
            for c in manifest["stores"][0]["tables"][0]["columns"]
        ]
        assert error(provider.register_provider, changed).code == "INVALID_ARGUMENT"
    rows = all_rows(ds)
    assert len(rows) == 20
    assert {(r["email"], r["level"]) for r in rows} == {(None, 3)}
    ds.insert(PEOPLE_URI, {"name": "new", "email": "new@example.com", "level": 9})

    assert env.daemon.stop() == 0
    env.daemon.start()
    with env.daemon.helper(env.dialer_token) as h:
        rows = all_rows(h)
        assert len(rows) == 21
        assert (rows[-1]["email"], rows[-1]["level"]) == ("new@example.com", 9)

"""What the index queues guarantee, on real SQLite and PostgreSQL databases: a write only queues its
rows, the indexes run behind and catch up, and no answer is ever stale or lost. Across any mix of
inserts, batches, rows upserted the way sync applies them, text updates, moved keys, deletes and
indexer rounds (Hypothesis); across a kill -9 between a write and its indexing; and for side tables
an earlier version left."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_indexer import URI, Env, engine, manifest, run  # noqa: F401 - engine: a fixture

from datamgr.datashare.distributed import _upsert
from datamgr.datashare.index_ddl import fts_name, side_tables

WORDS = ["apple", "river", "stone", "lamp", "cloud", "tiger"]  # distinct stems, no stop words
K = 100  # more than any test's rows: every match comes back
Rows = dict[int, str | None]  # the table as it is: id -> body

texts = st.one_of(
    st.none(), st.just(""), st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)
)
ids = st.integers(1, 8)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.lists(st.tuples(ids, texts), min_size=1, max_size=4)),
        st.tuples(st.just("upsert"), st.lists(st.tuples(ids, texts), min_size=1, max_size=4)),
        st.tuples(st.just("update"), ids, texts),
        st.tuples(st.just("move"), ids, ids),
        st.tuples(st.just("delete"), ids),
        st.tuples(st.just("step")),
    ),
    max_size=20,
)


@contextlib.asynccontextmanager
async def opened(engine: sa.Engine) -> AsyncIterator[Env]:  # noqa: F811
    """An indexer on `engine` (each one is a daemon's start), the table registered."""
    env = Env(engine)
    try:
        await env.indexer.start(background=False)
        await env.register(manifest(fulltext=True))  # again after a restart: nothing changes
        yield env
    finally:
        env.close()


def _words(text: str | None) -> set[str]:
    return set((text or "").split())


def _keys(env: Env, queue: sa.Table) -> set[int]:
    with env.db.engine.connect() as conn:
        return set(conn.execute(sa.select(queue.c.key)).scalars())


def _fts_in(env: Env) -> set[int]:
    """SQLite: the rowids the FTS5 table holds (its docsize shadow table has one row per row in)."""
    with env.db.engine.connect() as conn:
        return set(
            conn.exec_driver_sql(
                f"SELECT id FROM {fts_name(env.hosted.table.name, 'body')}_docsize"
            ).scalars()
        )


def _integrity_check(env: Env) -> None:
    """SQLite: FTS5 checks its index against the table (rank 1: every row in, with its current text)."""
    f = fts_name(env.hosted.table.name, "body")
    with env.db.engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {f} ({f}, rank) VALUES ('integrity-check', 1)")


async def _check(env: Env, rows: Rows, drained: bool) -> None:
    """Every answer exact against `rows`; `drained`: the indexes are complete too."""
    side = side_tables(env.hosted.table, env.hosted.spec)
    sqlite = env.db.dialect == "sqlite"
    queued_text = _keys(env, side.fulltext) if sqlite else set()
    if sqlite:  # a row is in FTS5 exactly when it is not queued for it
        assert _fts_in(env) == set(rows) - queued_text
    for word in WORDS:
        found = {h.key for h, _ in (await env.search(word, k=K, vector=False, text=True)).rows}
        holding = {i for i, t in rows.items() if word in _words(t)}
        assert found <= holding, (word, found, holding)  # never a row for a text it no longer holds
        assert found >= holding - queued_text, (word, found, holding)
    query = (await env.embedder.embed(["apple river"]))[0]
    hits = (await env.search("apple river", k=K)).rows
    for hit, values in hits:
        assert hit.key in rows and rows[hit.key] and values["body"] == rows[hit.key]
        current = (await env.embedder.embed([rows[hit.key] or ""]))[0]
        assert hit.score == pytest.approx(float(query @ current), abs=1e-4)  # the current text's vector
    if not drained:
        return
    with_text = {i for i, t in rows.items() if t}
    assert _keys(env, side.pending) == set() and queued_text == set()
    assert {h.key for h, _ in hits} == with_text
    with env.db.engine.connect() as conn:
        stored = {k: bytes(v) for k, v in conn.execute(sa.select(side.vectors.c.key, side.vectors.c.vec))}
    assert set(stored) == with_text
    for key, vec in stored.items():
        expected = (await env.embedder.embed([rows[key] or ""]))[0]
        assert np.frombuffer(vec, np.float32) == pytest.approx(expected, abs=1e-6)
    if sqlite:
        _integrity_check(env)


def _apply(env: Env, op: tuple[Any, ...], rows: Rows) -> None:
    """One write, in its own transaction, and the same change to `rows`."""
    t = env.hosted.table
    kind = op[0]
    stmt: Any = None
    if kind in ("insert", "upsert"):
        batch = dict(op[1])  # one row per id
        if kind == "insert" and set(batch) & set(rows):
            return
        stmt = sa.insert(t) if kind == "insert" else _upsert(env.db.dialect, t, t.c.id, ("id", "body", "n"))
        params: Any = [{"id": i, "body": b, "n": 0} for i, b in batch.items()]
        rows.update(batch)
    elif kind == "update" and op[1] in rows:
        stmt, params = sa.update(t).where(t.c.id == op[1]).values(body=op[2]), None
        rows[op[1]] = op[2]
    elif kind == "move" and op[1] in rows and op[2] not in rows:
        stmt, params = sa.update(t).where(t.c.id == op[1]).values(id=op[2]), None
        rows[op[2]] = rows.pop(op[1])
    elif kind == "delete" and op[1] in rows:
        stmt, params = sa.delete(t).where(t.c.id == op[1]), None
        del rows[op[1]]
    if stmt is not None:
        with env.db.engine.begin() as conn:
            conn.execute(stmt, params)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_indexes_stay_exact_under_any_writes(engine: sa.Engine, ops: list[Any]) -> None:  # noqa: F811
    async def go() -> None:
        async with opened(engine) as env:
            t = env.hosted.table
            with env.db.engine.begin() as conn:
                conn.execute(sa.delete(t))  # a clean table for this example
            await env.drain()
            rows: Rows = {}
            for op in ops:
                if op[0] == "step":
                    await env.indexer.step()
                else:
                    _apply(env, op, rows)
                await _check(env, rows, drained=False)
            await env.drain()
            await _check(env, rows, drained=True)

    run(go())


_WRITER = """
import os, signal, sqlalchemy as sa
engine = sa.create_engine({url!r})
with engine.begin() as conn:
    conn.exec_driver_sql("INSERT INTO {table} (id, body, n) VALUES " + ", ".join(
        f"({{i}}, 'note {{i}} about the river', {{i}})" for i in range(1, 61)))
with engine.begin() as conn:
    conn.exec_driver_sql("UPDATE {table} SET body = 'a lamp in the cloud' WHERE id <= 5")
with engine.begin() as conn:
    conn.exec_driver_sql("DELETE FROM {table} WHERE id > 55")
os.kill(os.getpid(), signal.SIGKILL)  # committed, never indexed
"""


def test_writes_killed_before_their_indexing_are_indexed_after_restart(engine: sa.Engine) -> None:  # noqa: F811
    """kill -9 of the writing process right after its commits: what the writes queued is there, and
    a new indexer (a restart) indexes all of it, full text and vectors alike."""

    async def go() -> None:
        async with opened(engine) as env:
            table = env.hosted.table.name
        code = _WRITER.format(url=engine.url.render_as_string(hide_password=False), table=table)
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        async with opened(engine) as again:  # the daemon's restart
            side = side_tables(again.hosted.table, again.hosted.spec)
            rows: Rows = {
                i: "a lamp in the cloud" if i <= 5 else f"note {i} about the river" for i in range(1, 56)
            }
            assert _keys(again, side.pending) == set(rows)
            if engine.dialect.name == "sqlite":
                assert _keys(again, side.fulltext) == set(rows) and _fts_in(again) == set()
            await _check(again, rows, drained=False)
            await again.drain()
            await _check(again, rows, drained=True)
            found = await again.search("lamp cloud", k=10, vector=False, text=True)
            assert sorted(h.key for h, _ in found.rows) == [1, 2, 3, 4, 5] and found.pending == 0

    run(go())


def _earlier_shape(env: Env) -> None:
    """What the earlier version left: its (id, key, col) queue with row 3 waiting for its vector, no
    full-text queue (its triggers kept FTS5 inside the write), and its triggers (gone here)."""
    db, t = env.db.engine, env.hosted.table
    side = side_tables(t, env.hosted.spec)
    q = db.dialect.identifier_preparer.quote
    pg = db.dialect.name == "postgresql"
    with db.begin() as conn:
        for kind in ("ins", "del", "upd"):
            name = q(f"{t.name}_ix_{kind}")
            conn.exec_driver_sql(f"DROP TRIGGER {name} ON {q(t.name)}" if pg else f"DROP TRIGGER {name}")
        side.pending.drop(conn)
        side.fulltext.drop(conn, checkfirst=True)
        auto = "BIGSERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
        conn.exec_driver_sql(
            f"CREATE TABLE {side.pending.name} (id {auto}, key BIGINT NOT NULL, "
            "col VARCHAR(64) NOT NULL, UNIQUE (key, col))"
        )
        conn.exec_driver_sql(f"INSERT INTO {side.pending.name} (key, col) VALUES (3, 'body'), (3, 'other')")
        conn.execute(sa.delete(side.vectors).where(side.vectors.c.key == 3))


def test_side_tables_of_the_earlier_shape_are_upgraded(engine: sa.Engine) -> None:  # noqa: F811
    """At start the indexer converts an earlier version's queue (nothing queued is lost) and installs
    this version's triggers."""

    async def go() -> None:
        rows: Rows = {i: f"{WORDS[i % 6]} {WORDS[(i + 1) % 6]}" for i in range(1, 9)}
        async with opened(engine) as env:
            with env.db.engine.begin() as conn:
                conn.execute(
                    sa.insert(env.hosted.table), [{"id": i, "body": b, "n": i} for i, b in rows.items()]
                )
            await env.drain()
            _earlier_shape(env)
        async with opened(engine) as again:  # its start upgrades
            side = side_tables(again.hosted.table, again.hosted.spec)
            inspector = sa.inspect(engine)
            assert {c["name"] for c in inspector.get_columns(side.pending.name)} == {"key"}
            assert _keys(again, side.pending) == {3}
            assert inspector.has_table(side.fulltext.name) == (engine.dialect.name == "sqlite")
            await again.drain()
            await _check(again, rows, drained=True)
            _apply(again, ("update", 4, "tiger tiger"), rows)  # the new triggers keep answers exact
            await _check(again, rows, drained=False)
            await again.drain()
            await _check(again, rows, drained=True)

    run(go())


def test_a_row_leaves_the_queue_once_every_text_has_its_vector(engine: sa.Engine) -> None:  # noqa: F811
    """Two vector columns: a row queued for one of them is embedded for that one only; and a write of
    the other column while the first is embedded keeps the row queued until that one has its vector."""

    async def go() -> None:
        env = Env(engine)
        try:
            await env.indexer.start(background=False)
            await env.register(manifest(extra=True))  # body: vector + full text, tags: vector
            t, side = env.hosted.table, side_tables(env.hosted.table, env.hosted.spec)

            def write(stmt: Any) -> None:
                with env.db.engine.begin() as conn:
                    conn.execute(stmt)

            write(sa.insert(t).values(id=1, body="lemon cake", tags="baking"))
            await env.drain()
            calls = env.embedder.calls
            write(sa.update(t).where(t.c.id == 1).values(body="bicycle repair"))
            real_embed = env.embedder.embed
            embedded: list[list[str]] = []

            async def embed_then_write(texts: Any) -> Any:
                embedded.append(list(texts))
                out = await real_embed(texts)
                if len(embedded) == 1:  # tags change while body is embedded
                    await asyncio.to_thread(write, sa.update(t).where(t.c.id == 1).values(tags="tools"))
                return out

            env.embedder.embed = embed_then_write  # type: ignore[method-assign]
            await env.indexer.step()
            assert embedded == [["bicycle repair"]] and env.embedder.calls == calls + 1
            assert _keys(env, side.pending) == {1}  # tags has no vector now: still queued
            await env.drain()
            assert embedded[1:] == [["tools"]]
            with env.db.engine.connect() as conn:
                stored = {
                    c: bytes(v) for c, v in conn.execute(sa.select(side.vectors.c.col, side.vectors.c.vec))
                }
            for col, text in (("body", "bicycle repair"), ("tags", "tools")):
                expected = (await real_embed([text]))[0]
                assert np.frombuffer(stored[col], np.float32) == pytest.approx(expected, abs=1e-6)
            assert _keys(env, side.pending) == set()
        finally:
            env.close()

    run(go())


def test_pending_counts_rows_not_queue_entries(engine: sa.Engine) -> None:  # noqa: F811
    """A row queued for both indexes is one row of `pending`; a row without text needs no vector."""

    async def go() -> None:
        async with opened(engine) as env:
            rows: Rows = {}
            _apply(env, ("insert", [(i, "stone") for i in range(1, 11)]), rows)
            _apply(env, ("insert", [(11, None)]), rows)
            found = await env.search("stone", k=K, vector=False, text=True)
            assert found.pending == (11 if engine.dialect.name == "sqlite" else 10)
            await env.drain()
            assert env.indexer.pending[URI] == 0
            assert (await env.search("stone", k=K, vector=False, text=True)).pending == 0

    run(go())

"""Index maintenance with a deterministic fake embedder, on real SQLite and PostgreSQL databases: the
triggers' queue, the indexer's rounds, the in-memory indexes and retrieval under predicates."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from datamgr.datashare._compile import compile_predicates
from datamgr.datashare.distributed import _upsert
from datamgr.datashare.index_ddl import side_tables
from datamgr.datashare.indexer import Indexer, IndexerConfig
from datamgr.datashare.manifest import parse_manifest
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.datashare.retrieve import Found, Retriever, Search, fulltext_statement
from datamgr.datashare.tables import HostedTable, ProviderRegistry
from datamgr.datashare.uri import parse_uri
from datamgr.errors import InvalidArgument
from datamgr.storage import Database, create_engine

URI = "datashare:///com.example.notes/main/notes"
DIM = 64
P = DataSharePredicates


class FakeEmbedder:
    """Bag of hashed words: texts sharing words are near (pure logic; the real model is tested with
    the daemon). `fail` makes every call raise (a fault)."""

    def __init__(self, model_id: str = "fake-words-64") -> None:
        self.model_id = model_id
        self.dim = DIM
        self.calls = 0
        self.fail = False

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise RuntimeError("the embedding model is gone")
        if any("poison" in t for t in texts):
            raise InvalidArgument("a text the model refuses")
        out = np.zeros((len(texts), DIM), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
        norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out / norms


def manifest(vector: bool = True, fulltext: bool = True, extra: bool = False) -> Any:
    columns: list[dict[str, Any]] = [
        {"name": "id", "type": "integer"},
        {"name": "title", "type": "text"},
        {"name": "body", "type": "text", "index": {"vector": vector, "fulltext": fulltext}},
        {"name": "n", "type": "integer"},
    ]
    if extra:
        columns.append({"name": "tags", "type": "text", "index": {"vector": True}})
    table = {"name": "notes", "primary_key": "id", "columns": columns}
    return parse_manifest(
        json.dumps({"bundle": "com.example.notes", "stores": [{"name": "main", "tables": [table]}]})
    )


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], ids=["sqlite", "postgresql"]
)
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        yield eng
        eng.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"ix_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    eng = create_engine(f"{url}?options=-csearch_path%3D{schema}")
    yield eng
    eng.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


class Env:
    def __init__(
        self, engine: sa.Engine, embedder: FakeEmbedder | None = None, hnsw_min: int = 10_000
    ) -> None:
        self.db = Database(engine, 2)
        self.providers = ProviderRegistry(engine)
        self.embedder = embedder or FakeEmbedder()
        self.indexer = Indexer(
            self.db, self.providers, self.embedder, IndexerConfig(batch_rows=16, hnsw_min_rows=hnsw_min)
        )
        self.retriever = Retriever(self.db)

    @property
    def hosted(self) -> HostedTable:
        return self.providers.require(parse_uri(URI))

    async def register(self, m: Any) -> None:
        await self.db.write(self.providers.register, m)

    def write(self, fn: Any) -> None:
        with self.db.engine.begin() as conn:
            fn(conn, self.hosted.table)

    async def drain(self) -> None:
        while await self.indexer.step():
            pass

    async def search(
        self,
        query: str,
        k: int = 5,
        preds: DataSharePredicates | None = None,
        vector: bool = True,
        text: bool = False,
    ) -> Found:
        h = self.hosted
        where = compile_predicates(preds or P(), h.table, self.db.dialect).where
        indexes = {c: await self.indexer.vector_index(h, c) for c in h.spec.vector_columns} if vector else {}
        qvec = (await self.embedder.embed([query]))[0] if vector else None
        cols = [c.name for c in h.spec.columns]
        fts = list(h.spec.fulltext_columns) if text else []
        return await self.db.read(self.retriever.run, Search(h, where, query, k, cols, indexes, fts, qvec))

    def count(self, table: sa.Table) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def close(self) -> None:
        self.db.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


TEXTS = [
    "the cat sat on the mat",
    "dogs chase the postman",
    "quarterly sales report draft",
    "recipe for lemon cake",
    "how to reset a forgotten password",
    "train timetable for sunday",
]


def _rows(n: int = len(TEXTS)) -> list[dict[str, Any]]:
    return [{"id": i + 1, "title": f"t{i + 1}", "body": TEXTS[i % len(TEXTS)], "n": i + 1} for i in range(n)]


def test_insert_update_delete_keep_the_index_current(engine: sa.Engine) -> None:
    async def go() -> None:
        env = Env(engine)
        await env.indexer.start(background=False)
        await env.register(manifest())
        side = side_tables(env.hosted.table, env.hosted.spec)
        env.write(lambda c, t: c.execute(sa.insert(t), _rows()))
        assert env.count(side.pending) == len(TEXTS)  # queued in the insert's transaction
        found = await env.search("lemon cake")
        assert found.pending == len(TEXTS) and found.rows == []  # nothing embedded yet
        await env.drain()
        assert env.count(side.pending) == 0 and env.count(side.vectors) == len(TEXTS)
        found = await env.search("lemon cake")
        assert found.pending == 0 and found.rows[0][0].key == 4 and found.rows[0][1]["body"] == TEXTS[3]

        # an update of the text: the old vector goes in the update's transaction, the new one later
        env.write(lambda c, t: c.execute(sa.update(t).where(t.c.id == 4).values(body="bicycle repair guide")))
        assert [h.key for h, _ in (await env.search("lemon cake")).rows[:1]] != [4]
        assert (await env.search("bicycle repair")).pending == 1
        await env.drain()
        top = (await env.search("bicycle repair")).rows[0]
        assert top[0].key == 4 and top[1]["body"] == "bicycle repair guide"
        assert 4 not in [h.key for h, _ in (await env.search("lemon cake")).rows[:1]]

        # an update of another column leaves the vector alone
        calls = env.embedder.calls
        env.write(lambda c, t: c.execute(sa.update(t).where(t.c.id == 4).values(n=40)))
        await env.drain()
        assert env.embedder.calls == calls and env.count(side.pending) == 0

        # a delete takes the row out at once and its vector out of memory at the next round
        env.write(lambda c, t: c.execute(sa.delete(t).where(t.c.id == 4)))
        assert 4 not in [h.key for h, _ in (await env.search("bicycle repair", k=10)).rows]
        index = await env.indexer.vector_index(env.hosted, "body")
        assert len(index) == len(TEXTS)
        await env.drain()
        assert len(index) == len(TEXTS) - 1 and env.count(side.gone) == 0

        # a moved primary key keeps its vector
        env.write(lambda c, t: c.execute(sa.update(t).where(t.c.id == 5).values(id=50)))
        assert env.count(side.pending) == 0
        assert (await env.search("forgotten password")).rows[0][0].key == 50
        env.close()

    run(go())


def test_a_row_written_while_it_is_embedded_is_embedded_again(engine: sa.Engine) -> None:
    async def go() -> None:
        env = Env(engine)
        await env.indexer.start(background=False)
        await env.register(manifest())
        env.write(lambda c, t: c.execute(sa.insert(t), _rows(1)))
        real_embed = env.embedder.embed

        async def embed_then_write(texts: Sequence[str]) -> np.ndarray:
            out = await real_embed(texts)
            await asyncio.to_thread(
                env.write, lambda c, t: c.execute(sa.update(t).where(t.c.id == 1).values(body="lemon cake"))
            )
            return out

        env.embedder.embed = embed_then_write  # type: ignore[method-assign]
        await env.indexer.step()  # embedded "the cat sat...", but the row changed meanwhile: not stored
        side = side_tables(env.hosted.table, env.hosted.spec)
        assert env.count(side.vectors) == 0 and env.count(side.pending) == 1
        env.embedder.embed = real_embed  # type: ignore[method-assign]
        await env.drain()
        assert (await env.search("lemon cake")).rows[0][0].key == 1
        assert (await env.search("lemon cake")).rows[0][0].score == pytest.approx(1.0, abs=1e-5)
        env.close()

    run(go())


@pytest.mark.parametrize("hnsw_min", [10_000, 50], ids=["exact", "hnsw"])
def test_results_are_exactly_the_rows_the_predicates_select(engine: sa.Engine, hnsw_min: int) -> None:
    async def go() -> None:
        env = Env(engine, hnsw_min=hnsw_min)
        await env.indexer.start(background=False)
        await env.register(manifest())
        rows = _rows(300)
        env.write(lambda c, t: c.execute(sa.insert(t), rows))
        await env.drain()
        while any(t for t in env.indexer._builds):  # let a background HNSW build finish
            await asyncio.sleep(0.01)
        index = await env.indexer.vector_index(env.hosted, "body")
        assert index.kind == ("hnsw" if hnsw_min == 50 else "exact")
        cases = [
            (P().equal_to("n", 7), {7}),  # selective: compared exactly
            (P().greater_than("n", 297), {298, 299, 300}),
            (P().less_than("n", 0), set()),
            (P().not_equal_to("n", 4), {r["id"] for r in rows} - {4}),  # over-fetched from the index
        ]
        for preds, allowed in cases:
            found = await env.search("lemon cake recipe", k=10, preds=preds)
            keys = [h.key for h, _ in found.rows]
            assert set(keys) <= allowed and len(keys) == min(10, len(allowed))
            scores = [h.score for h, _ in found.rows]
            assert scores == sorted(scores, reverse=True)
            if allowed and len(allowed) > 10:
                assert all(r[1]["body"] == TEXTS[3] for r in found.rows)  # the 50 lemon cakes first
        text = await env.search("lemon", k=5, preds=P().equal_to("n", 10), vector=False, text=True)
        assert [h.key for h, _ in text.rows] == [10]
        env.close()

    run(go())


def test_fulltext_and_hybrid(engine: sa.Engine) -> None:
    async def go() -> None:
        env = Env(engine)
        await env.indexer.start(background=False)
        await env.register(manifest())
        env.write(lambda c, t: c.execute(sa.insert(t), _rows()))
        text = await env.search('lemon "cakes" OR NOT', vector=False, text=True)
        if engine.dialect.name == "sqlite":  # FTS5 runs behind writes, as embedding does
            assert text.rows == [] and text.pending == len(TEXTS)
            await env.drain()
            text = await env.search('lemon "cakes" OR NOT', vector=False, text=True)
        assert [h.key for h, _ in text.rows] == [4] and text.rows[0][0].column == "body"
        await env.drain()
        both = await env.search("lemon cake", vector=True, text=True)
        assert both.rows[0][0].key == 4
        assert both.rows[0][0].score == pytest.approx(2 / 61)  # first in both rankings
        env.close()

    run(go())


def test_an_index_added_later_queues_the_existing_rows_and_can_go_again(engine: sa.Engine) -> None:
    async def go() -> None:
        env = Env(engine)
        await env.indexer.start(background=False)
        await env.register(manifest(vector=False, fulltext=True))
        env.write(lambda c, t: c.execute(sa.insert(t), _rows()))
        await env.drain()  # full text alone needs the indexer too (SQLite)
        assert (await env.search("password", vector=False, text=True)).rows[0][0].key == 5
        await env.register(manifest(vector=True, fulltext=True, extra=True))
        side = side_tables(env.hosted.table, env.hosted.spec)
        assert env.count(side.pending) == len(TEXTS)  # body; tags are all NULL: nothing to embed
        await env.drain()
        assert (await env.search("forgotten password")).rows[0][0].key == 5
        await env.register(manifest(vector=False, fulltext=True, extra=True))  # body's vectors go
        with env.db.engine.connect() as conn:
            left = conn.execute(sa.select(side.vectors.c.col).distinct()).scalars().all()
        assert left == []
        assert (await env.search("password", vector=False, text=True)).rows[0][0].key == 5
        env.close()

    run(go())


def test_restart_and_a_new_model(engine: sa.Engine) -> None:
    async def go() -> None:
        env = Env(engine)
        await env.indexer.start(background=False)
        await env.register(manifest())
        env.write(lambda c, t: c.execute(sa.insert(t), _rows()))
        await env.drain()
        env.close()

        again = Env(engine)  # a restart: the vectors are loaded, nothing is embedded again
        await again.indexer.start(background=False)
        assert len(await again.indexer.vector_index(again.hosted, "body")) == len(TEXTS)
        assert not await again.indexer.step() and again.embedder.calls == 0
        again.close()

        other = Env(engine, FakeEmbedder("another-model"))  # vectors of another model are not kept
        await other.indexer.start(background=False)
        side = side_tables(other.hosted.table, other.hosted.spec)
        assert len(await other.indexer.vector_index(other.hosted, "body")) == 0
        assert other.count(side.pending) == len(TEXTS)
        await other.drain()
        assert other.count(side.vectors) == len(TEXTS)
        other.close()

    run(go())


def test_an_embedding_failure_leaves_the_rows_queued(engine: sa.Engine) -> None:
    async def go() -> None:
        env = Env(engine)
        env.indexer.config = IndexerConfig(retry_s=0)
        await env.indexer.start(background=False)
        await env.register(manifest())
        env.write(lambda c, t: c.execute(sa.insert(t), _rows()))
        env.embedder.fail = True
        await env.indexer.step()  # full text (SQLite) is indexed all the same
        assert not await env.indexer.step()  # nothing but the failing embedding left
        side = side_tables(env.hosted.table, env.hosted.spec)
        assert env.count(side.pending) == len(TEXTS) and env.indexer.failures == 2
        assert env.indexer.pending[URI] == len(TEXTS)
        assert [h.key for h, _ in (await env.search("lemon", vector=False, text=True)).rows] == [4]
        env.embedder.fail = False
        await env.drain()
        assert env.count(side.pending) == 0 and env.indexer.pending[URI] == 0
        env.close()

    run(go())


def test_fulltext_uses_the_index(engine: sa.Engine) -> None:
    """The query spells the indexed expression as the index does (PostgreSQL), or MATCHes FTS5."""

    async def go() -> None:
        env = Env(engine)
        await env.indexer.start(background=False)
        await env.register(manifest())
        h = env.hosted
        where = compile_predicates(P().greater_than("n", 1), h.table, env.db.dialect).where
        search = Search(h, where, "lemon cake", 5, ["id"], {}, ["body"])
        stmt = fulltext_statement(engine.dialect, search, "body", 5)
        assert stmt is not None
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET enable_seqscan = off")
                compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
                plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
                assert f"Bitmap Index Scan on {h.table.name}_fts_body" in plan, plan
            else:
                compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
                plan = "\n".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
                assert "VIRTUAL TABLE INDEX" in plan and f"{h.table.name}_fts_body" in plan, plan
        env.close()

    run(go())


def test_rows_upserted_as_sync_applies_them_are_queued(engine: sa.Engine) -> None:
    """The statement that applies a peer's rows (distributed._upsert: INSERT ... ON CONFLICT DO UPDATE)
    fires the same triggers: a new row is queued, a changed text queued again, its old vector gone."""

    async def go() -> None:
        env = Env(engine)
        await env.indexer.start(background=False)
        await env.register(manifest())
        side = side_tables(env.hosted.table, env.hosted.spec)
        t = env.hosted.table
        upsert = _upsert(engine.dialect.name, t, t.c.id, ("id", "body", "n"))

        def apply(rows: list[dict[str, Any]]) -> None:
            env.write(lambda c, _t: c.execute(upsert, rows))

        apply([{"id": 1, "body": "lemon cake", "n": 1}, {"id": 2, "body": "cat on the mat", "n": 2}])
        assert env.count(side.pending) == 2
        await env.drain()
        apply([{"id": 2, "body": "bicycle repair", "n": 2}, {"id": 1, "body": "lemon cake", "n": 9}])
        with env.db.engine.connect() as conn:
            assert conn.execute(sa.select(side.pending.c.key)).scalars().all() == [2]
            assert conn.execute(sa.select(side.vectors.c.key)).scalars().all() == [1]
        await env.drain()
        assert (await env.search("bicycle repair")).rows[0][0].key == 2
        assert (await env.search("bicycle", vector=False, text=True)).rows[0][0].key == 2
        env.close()

    run(go())


def test_a_text_the_model_refuses_does_not_hold_the_others_back(engine: sa.Engine) -> None:
    async def go() -> None:
        env = Env(engine)
        await env.indexer.start(background=False)
        await env.register(manifest())
        rows = _rows()
        rows[2]["body"] = "poison pill"
        env.write(lambda c, t: c.execute(sa.insert(t), rows))
        await env.drain()
        side = side_tables(env.hosted.table, env.hosted.spec)
        assert env.count(side.pending) == 0 and env.count(side.vectors) == len(TEXTS) - 1
        assert (await env.search("lemon cake")).rows[0][0].key == 4
        assert (await env.search("poison", vector=False, text=True)).rows[0][0].key == 3
        env.close()

    run(go())

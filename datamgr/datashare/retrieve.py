"""Retrieval over an indexed table: the rows nearest a query by vector, by full text, or both fused.

Runs on a reader thread, within the call's statement budget. The ranking of each column comes from
its index; the rows returned always come from the table itself, so a result is exactly a row that
exists now and matches the call's predicates:

- vector: the column's in-memory index proposes candidates (docs) and the vectors table confirms
  them (a doc deleted a moment ago is dropped) together with the predicates. When the predicates are
  selective (at most `SELECTIVE_ROWS` rows match), the matching rows' vectors are read and compared
  exactly instead; otherwise candidates are over-fetched (4x, growing 4x while too few pass) up to
  `MAX_CANDIDATES`, and past that the matching rows are scanned exactly (rare: the predicates match
  many rows, yet few of those are near the query).
- full text: SQLite FTS5 with BM25 (score: -bm25, higher is better) or PostgreSQL `ts_rank` over
  the GIN-indexed tsvector, joined with the table under the predicates. An FTS5 entry always holds
  its row's current text (a changed text's entry goes in the write's transaction); a row whose
  entry the indexer has not added yet is not found by full text until then (`pending`).
- hybrid: reciprocal rank fusion (k = 60) of the two rankings, each `depth` deep.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from datamgr.budget import Budget
from datamgr.datashare import ranking
from datamgr.datashare.index_ddl import (
    TS_CONFIG,
    SideTables,
    fts_name,
    pending_rows,
    side_tables,
    tsvector_sql,
)
from datamgr.datashare.tables import HostedTable
from datamgr.datashare.vectors import VectorIndex
from datamgr.storage import Database

SELECTIVE_ROWS = 2000  # predicates matching at most this many rows: their vectors compared exactly
MAX_CANDIDATES = 8192  # candidates asked of the ANN index before the exact scan takes over
_CHUNK = 400  # keys per IN (...) list
_SCAN_ROWS = 2000  # vectors read at a time by an exact scan


@dataclass(frozen=True, slots=True)
class Hit:
    """One row found: its primary key, its score (higher is better) and the column that matched."""

    key: Any
    score: float
    column: str


@dataclass(frozen=True, slots=True)
class Search:
    """What one Retrieve asks: the table, the rows allowed (`where`), the columns to search by vector
    (with their indexes and the query's vector) and by full text, how many rows, which columns out."""

    hosted: HostedTable
    where: sa.ColumnElement[bool] | None
    query: str
    k: int
    columns: Sequence[str]
    vector: dict[str, VectorIndex]
    fulltext: Sequence[str]
    query_vector: npt.NDArray[np.float32] | None = None

    @property
    def hybrid(self) -> bool:
        return bool(self.vector) and bool(self.fulltext)

    @property
    def depth(self) -> int:
        """How deep each ranking goes before fusion."""
        return max(2 * self.k, 30) if self.hybrid else self.k


@dataclass(frozen=True, slots=True)
class Found:
    rows: list[tuple[Hit, dict[str, Any]]]  # best first
    pending: int  # rows of the table whose index entries are not all current yet


class Retriever:
    """Runs a `Search` on a reader thread (`run`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def run(self, search: Search, budget: Budget | None = None) -> Found:
        hosted = search.hosted
        side = side_tables(hosted.table, hosted.spec)
        with self._db.engine.connect() as conn, self._db.watchdog.guard(conn, budget):
            hits = _rank(conn, search, side)
            rows = _rows(conn, hosted, [h.key for h in hits], search.columns)
            pending = pending_rows(conn, side, hosted.spec)
        return Found([(h, rows[h.key]) for h in hits if h.key in rows], pending)


def _rank(conn: sa.Connection, search: Search, side: SideTables) -> list[Hit]:
    n = search.depth
    vector: list[Hit] = []
    if search.vector:
        assert search.query_vector is not None
        found = [
            hit
            for col, index in search.vector.items()
            for hit in _vector_hits(conn, search, side, col, index, n)
        ]
        vector = [Hit(*h) for h in ranking.best_per_key((h.key, h.score, h.column) for h in found)][:n]
    text: list[Hit] = []
    for col in search.fulltext:
        text += _fulltext_hits(conn, search, col, n)
    text = [Hit(*h) for h in ranking.best_per_key((h.key, h.score, h.column) for h in text)][:n]
    if not search.hybrid:
        return (vector or text)[: search.k]
    best_rank: dict[Any, tuple[int, str]] = {}
    for hits in (vector, text):
        for rank, hit in enumerate(hits):
            if hit.key not in best_rank or rank < best_rank[hit.key][0]:
                best_rank[hit.key] = (rank, hit.column)
    fused = ranking.rrf([[h.key for h in vector], [h.key for h in text]])
    return [Hit(key, score, best_rank[key][1]) for key, score in fused[: search.k]]


# ---- vectors ----


def _vector_hits(
    conn: sa.Connection, search: Search, side: SideTables, col: str, index: VectorIndex, n: int
) -> list[Hit]:
    assert search.query_vector is not None
    query = search.query_vector
    t, v = search.hosted.table, side.vectors
    pk = t.c[search.hosted.spec.primary_key]
    joined = v.join(t, pk == v.c.key) if search.where is not None else v
    allowed = [v.c.col == col] + ([search.where] if search.where is not None else [])
    if search.where is not None:
        matching = sa.select(sa.literal(1)).select_from(joined).where(*allowed).limit(SELECTIVE_ROWS + 1)
        count = conn.execute(sa.select(sa.func.count()).select_from(matching.subquery())).scalar_one()
        if count <= SELECTIVE_ROWS:
            return _exact(
                conn, sa.select(v.c.key, v.c.vec).select_from(joined).where(*allowed), query, n, col
            )
    want = min(4 * n if search.where is not None else n + 8, MAX_CANDIDATES)
    while True:
        candidates = index.search(query, want)
        hits: list[Hit] = []
        confirmed: dict[int, Any] = {}
        docs = [doc for doc, _ in candidates]
        for start in range(0, len(docs), _CHUNK):
            stmt = sa.select(v.c.doc, v.c.key).select_from(joined)
            stmt = stmt.where(*allowed, v.c.doc.in_(docs[start : start + _CHUNK]))
            confirmed.update((int(d), k) for d, k in conn.execute(stmt))
        hits = [Hit(confirmed[doc], score, col) for doc, score in candidates if doc in confirmed]
        if len(hits) >= n or len(candidates) < want:
            return hits[:n]  # enough, or the index has no more to give
        if want >= MAX_CANDIDATES:
            break
        want = min(4 * want, MAX_CANDIDATES)
    return _exact(conn, sa.select(v.c.key, v.c.vec).select_from(joined).where(*allowed), query, n, col)


def _exact(
    conn: sa.Connection, stmt: sa.Select[Any], query: npt.NDArray[np.float32], n: int, col: str
) -> list[Hit]:
    """The `n` rows of `stmt` (key, vector blob) nearest `query`, compared exactly."""
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    best: list[tuple[float, int, Any]] = []  # a min-heap of the n best (score, order, key)
    seen = 0
    result = conn.execution_options(yield_per=_SCAN_ROWS).execute(stmt)
    for part in result.partitions():
        vecs = np.frombuffer(b"".join(bytes(b) for _, b in part), np.float32).reshape(len(part), -1)
        norms = np.maximum(np.linalg.norm(vecs, axis=1), 1e-12)
        sims = (vecs @ q) / norms
        for (key, _), sim in zip(part, sims.tolist(), strict=True):
            item = (sim, -seen, key)
            seen += 1
            if len(best) < n:
                heapq.heappush(best, item)
            elif item > best[0]:
                heapq.heapreplace(best, item)
    return [Hit(key, sim, col) for sim, _, key in sorted(best, reverse=True)]


# ---- full text ----


def _fulltext_hits(conn: sa.Connection, search: Search, col: str, n: int) -> list[Hit]:
    stmt = fulltext_statement(conn.dialect, search, col, n)
    if stmt is None:
        return []
    return [Hit(key, float(score), col) for key, score in conn.execute(stmt)]


def fulltext_statement(dialect: sa.Dialect, search: Search, col: str, n: int) -> sa.Select[Any] | None:
    """The `n` best rows by the words of the query in `col` (key, score), under the predicates; None
    when the query has no words."""
    t = search.hosted.table
    pk = t.c[search.hosted.spec.primary_key]
    q = dialect.identifier_preparer.quote
    if dialect.name == "postgresql":
        words = ranking.websearch_query(search.query)
        if words is None:
            return None
        tsv: sa.ColumnElement[Any] = sa.literal_column(tsvector_sql(q(col)))
        tsq = sa.func.websearch_to_tsquery(sa.literal_column(f"'{TS_CONFIG}'::regconfig"), words)
        score = sa.func.ts_rank(tsv, tsq)
        stmt = sa.select(pk, score).where(tsv.op("@@")(tsq))
        order = score.desc()
    else:
        match = ranking.fts5_query(search.query)
        if match is None:
            return None
        fts = q(fts_name(t.name, col))
        bm25: sa.ColumnElement[Any] = sa.literal_column(f"bm25({fts})")
        on = sa.literal_column(f"{fts}.rowid") == sa.literal_column(f"{q(t.name)}.rowid")
        stmt = (
            sa.select(pk, -bm25)
            .select_from(t.join(sa.table(fts_name(t.name, col)), on))
            .where(sa.literal_column(fts).op("MATCH")(match))
        )
        order = bm25.asc()
    if search.where is not None:
        stmt = stmt.where(search.where)
    return stmt.order_by(order).limit(n)


# ---- rows ----


def _rows(
    conn: sa.Connection, hosted: HostedTable, keys: list[Any], columns: Sequence[str]
) -> dict[Any, dict[str, Any]]:
    """The rows with these keys (only `columns`), by key."""
    t = hosted.table
    pk = t.c[hosted.spec.primary_key]
    out: dict[Any, dict[str, Any]] = {}
    selected = [t.c[c] for c in columns]
    for start in range(0, len(keys), _CHUNK):
        stmt = sa.select(pk.label("__key"), *selected).where(pk.in_(keys[start : start + _CHUNK]))
        for row in conn.execute(stmt):
            values = row._asdict()
            out[values.pop("__key")] = values
    return out

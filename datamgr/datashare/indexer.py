"""The background indexer: embeds the rows the writes queued, and holds the in-memory vector indexes.

Writes never wait for embedding: their transaction only queues the row (`index_ddl`'s triggers). This
task takes the queue in batches, table by table in turn (one provider's backlog cannot hold another's
back; its database work is charged to that provider, `datamgr.tenant`), embeds the texts through the
AI service's embedding model, stores the vectors in the same database and takes the entries off the
queue in one transaction — but only those still waiting as they were read: a row written again
meanwhile was queued anew and is embedded again, with its new text. Then the vectors go into the
column's `VectorIndex`. What the queue holds is the backlog (`pending`: Retrieve's answer, /metrics).

Without an embedding model (the AI service off, or no embedding model) the rows stay queued and
vector retrieval is unavailable; full text works regardless. At start (and when a column is first
searched) a column's vectors are loaded from the database; if they were embedded by another model
than the current one, they are dropped and every row of the column is queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from datamgr import tenant
from datamgr.datashare.index_ddl import SideTables, columns_table, requeue, side_tables, state_metadata
from datamgr.datashare.tables import HostedTable, ProviderRegistry
from datamgr.datashare.vectors import VectorIndex
from datamgr.storage import Database

if TYPE_CHECKING:  # the AI service's embedding model (aicap.embedding); aicap is imported when AI is on
    from aicap.embedding import TextEmbedder

log = logging.getLogger("datamgr.datashare.indexer")
_CHUNK = 400  # keys per IN (...) list
_LOAD_ROWS = 2000  # vectors read from the database at a time when a column is loaded


@dataclass(frozen=True, slots=True)
class IndexerConfig:
    batch_rows: int = 32  # texts per embedding call
    max_text_chars: int = 2000  # a text is cut to this before it is embedded
    hnsw_min_rows: int = 10_000  # exact scan below, HNSW from here on (vectors.VectorIndex)
    poll_s: float = 0.5  # how often the queues are looked at when no write woke the indexer
    retry_s: float = 5.0  # the pause after the embedding model failed
    # Embedding runs behind writes: while writes of indexed tables keep coming (one at most `quiet_s`
    # after the last), a round waits, but never longer than `max_defer_s`, so a steady stream of writes
    # still sees its backlog shrink (a batch per table every `max_defer_s` at least).
    quiet_s: float = 0.2
    max_defer_s: float = 2.0


@dataclass(slots=True)
class _Column:
    token: str
    index: VectorIndex


class Indexer:
    """Embeds queued rows in the background (`start`/`close`) and serves each vector-indexed column's
    `VectorIndex` (`vector_index`)."""

    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        embedder: TextEmbedder | None,
        config: IndexerConfig = IndexerConfig(),
    ) -> None:
        self._db = db
        self._providers = providers
        self.embedder = embedder
        # why there is no embedder (Retrieve's FAILED_PRECONDITION says it)
        self.unavailable = "the AI service is off on this device (ai.enabled)"
        self.config = config
        self._columns: dict[tuple[str, str], _Column] = {}
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._builds: set[asyncio.Task[Any]] = set()
        self._building: set[VectorIndex] = set()
        self._turn = 0  # the table that goes first in the next round
        self._last_write = 0.0  # when a write of an indexed table last committed (monotonic)
        self.pending: dict[str, int] = {}  # uri -> queued entries, as last counted
        self.embedded = 0  # vectors stored since start
        self.failures = 0  # embedding calls that failed since start

    # ---- lifecycle ----

    async def start(self, background: bool = True) -> None:
        """Creates the indexes' state table and (`background`) starts the loop; without it, the
        caller runs the rounds (`step`)."""
        await self._db.write(lambda: state_metadata.create_all(self._db.engine))
        if background:
            self._task = asyncio.create_task(self._run(), name="datashare-indexer")

    def set_embedder(self, embedder: TextEmbedder | None, unavailable: str = "") -> None:
        """The embedding model is ready (the queued rows are embedded from now on), or is not
        (`unavailable` says why)."""
        self.embedder = embedder
        self.unavailable = unavailable
        self.wake()

    def wake(self) -> None:
        """Look at the queues now rather than at the next poll."""
        self._wake.set()

    def written(self) -> None:
        """A write of an indexed table committed (it may have queued rows)."""
        self._last_write = time.monotonic()
        self._wake.set()

    async def _yield_to_writes(self) -> None:
        """Waits while writes keep coming (see IndexerConfig.quiet_s), at most max_defer_s."""
        config = self.config
        deadline = time.monotonic() + config.max_defer_s
        while (now := time.monotonic()) < deadline and now - self._last_write < config.quiet_s:
            await asyncio.sleep(min(config.quiet_s, deadline - now))

    async def close(self) -> None:
        for task in (self._task, *self._builds):
            if task is not None:
                task.cancel()
        for task in (self._task, *self._builds):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def sizes(self) -> dict[tuple[str, str], int]:
        """Vectors held in memory per (table name, column)."""
        return {key: len(c.index) for key, c in dict(self._columns).items()}  # a copy: other threads read

    # ---- the loop ----

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the indexer's round failed; retrying in %.0f s", self.config.retry_s)
                busy = False
                await asyncio.sleep(self.config.retry_s)
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_s)
                self._wake.clear()

    async def step(self) -> bool:
        """One round: a batch of each table with queued rows, in turn, and the deleted vectors out of
        the in-memory indexes; True if there was work."""
        tables = [h for h in self._providers.indexed() if h.spec.vector_columns]
        live = {h.uri for h in tables}
        for uri in [u for u in self.pending if u not in live]:
            del self.pending[uri]
        columns = {(h.table.name, c) for h in tables for c in h.spec.vector_columns}
        for key in [k for k in self._columns if k not in columns]:  # a dropped table or index
            del self._columns[key]
        busy = False
        if not tables:
            return False
        self._turn = (self._turn + 1) % len(tables)
        for hosted in tables[self._turn :] + tables[: self._turn]:
            tenant.enter(hosted.bundle)  # the provider's turn on the database (datamgr.storage)
            try:
                busy |= await self._table_round(hosted)
            finally:
                tenant.enter(tenant.DAEMON)
        return busy

    async def _table_round(self, hosted: HostedTable) -> bool:
        side = side_tables(hosted.table, hosted.spec)
        queued, gone = await self._db.read(self._peek, side)
        self.pending[hosted.uri] = queued
        if gone:
            for col, docs in _by_col(gone).items():
                column = self._columns.get((hosted.table.name, col))
                if column is not None:
                    column.index.remove(docs)
            await self._db.write(self._forget_gone, side, [doc for doc, _ in gone])
        if self.embedder is None:
            return bool(gone)
        for col in hosted.spec.vector_columns:  # loaded (and the model checked) before vectors go in
            if (hosted.table.name, col) not in self._columns:
                await self.vector_index(hosted, col)
        if not queued:
            return bool(gone)
        await self._yield_to_writes()
        items = await self._db.read(self._read_pending, hosted, side, self.config.batch_rows)
        if not items:
            return bool(gone)
        texts = [text[: self.config.max_text_chars] for _, _, _, text in items]
        try:
            vectors = await self.embedder.embed(texts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            if getattr(exc, "code", "") == "INVALID_ARGUMENT":  # a text the model refuses, not the model
                return await self._one_by_one(hosted, side, items, texts)
            log.warning(
                "embedding %d row(s) of %s failed (%s); retrying in %.0f s",
                len(texts),
                hosted.uri,
                getattr(exc, "message", exc),
                self.config.retry_s,
            )
            await asyncio.sleep(self.config.retry_s)
            return False
        await self._stored(hosted, side, items, np.asarray(vectors, np.float32))
        return True

    async def _one_by_one(
        self, hosted: HostedTable, side: SideTables, items: list[tuple[int, Any, str, str]], texts: list[str]
    ) -> bool:
        """A batch the model refused: each text alone; one it refuses again leaves the queue (logged;
        its row is found by full text only), so that it cannot hold the rows behind it back."""
        assert self.embedder is not None
        refused: list[int] = []
        for item, text in zip(items, texts, strict=True):
            try:
                vector = await self.embedder.embed([text])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if getattr(exc, "code", "") != "INVALID_ARGUMENT":
                    return False  # the model itself: the next round tries again
                log.warning(
                    "%s: row %r is not embedded: %s", hosted.uri, item[1], getattr(exc, "message", exc)
                )
                refused.append(item[0])
                continue
            await self._stored(hosted, side, [item], np.asarray(vector, np.float32))
        if refused:
            await self._db.write(self._store, side, [(i, None, "", "") for i in refused], None)
        return True

    async def _stored(
        self,
        hosted: HostedTable,
        side: SideTables,
        items: list[tuple[int, Any, str, str]],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        """Stores embedded rows (`_store`) and adds their vectors to the in-memory indexes."""
        stored = await self._db.write(self._store, side, items, vectors)
        for col, (docs, rows) in stored.items():
            column = self._columns.get((hosted.table.name, col))
            if column is not None:
                column.index.add(docs, vectors[rows])
                self._maybe_build(column.index)
        done = sum(len(d) for d, _ in stored.values())
        self.embedded += done
        self.pending[hosted.uri] = max(0, self.pending.get(hosted.uri, 0) - done)

    def _maybe_build(self, index: VectorIndex) -> None:
        """Builds the column's HNSW graph on a worker thread once it has grown past the exact scan."""
        if index.kind == "exact" and len(index) >= self.config.hnsw_min_rows and index not in self._building:
            self._building.add(index)
            task = asyncio.create_task(asyncio.to_thread(index.maybe_build))
            self._builds.add(task)
            task.add_done_callback(self._builds.discard)
            task.add_done_callback(lambda _: self._building.discard(index))

    # ---- the vector indexes ----

    async def vector_index(self, hosted: HostedTable, col: str) -> VectorIndex:
        """The in-memory index of a vector-indexed column, loaded from the database on first use (and
        again if the column got its index anew since)."""
        assert self.embedder is not None, "vector indexes need an embedding model"
        key = (hosted.table.name, col)
        state = await self._db.read(self._column_state, hosted.table.name, col)
        column = self._columns.get(key)
        if column is not None and state is not None and column.token == state[0]:
            return column.index
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            state = await self._db.read(self._column_state, hosted.table.name, col)
            column = self._columns.get(key)
            if column is not None and state is not None and column.token == state[0]:
                return column.index
            token = await self._db.write(
                self._check_model, hosted, col, self.embedder.model_id, self.embedder.dim
            )
            index = VectorIndex(self.embedder.dim, self.config.hnsw_min_rows)
            count = await asyncio.to_thread(
                _load, self._db.engine, side_tables(hosted.table, hosted.spec), col, index
            )
            self._columns[key] = _Column(token, index)
            if count:
                log.info("%s#%s: %d vector(s) loaded", hosted.uri, col, count)
            self._maybe_build(index)
            return index

    # ---- database work (reader and writer threads) ----

    def _peek(self, side: SideTables) -> tuple[int, list[tuple[int, str]]]:
        """On a reader: the queued entries' count, and up to 1,000 docs whose vectors were deleted."""
        with self._db.engine.connect() as conn:
            queued = conn.execute(sa.select(sa.func.count()).select_from(side.pending)).scalar_one()
            gone = conn.execute(sa.select(side.gone.c.doc, side.gone.c.col).limit(1000)).all()
        return int(queued), [(int(d), str(c)) for d, c in gone]

    def _read_pending(self, hosted: HostedTable, side: SideTables, n: int) -> list[tuple[int, Any, str, str]]:
        """On a reader: the first `n` queued entries with their texts: (entry id, key, column, text)."""
        t, p = hosted.table, side.pending
        text = sa.case({c: t.c[c] for c in hosted.spec.vector_columns}, value=p.c.col)
        stmt = (
            sa.select(p.c.id, p.c.key, p.c.col, text)
            .select_from(p.join(t, t.c[hosted.spec.primary_key] == p.c.key))
            .order_by(p.c.id)
            .limit(n)
        )
        with self._db.engine.connect() as conn:
            return [(int(i), k, str(c), x or "") for i, k, c, x in conn.execute(stmt)]

    def _store(
        self,
        side: SideTables,
        items: list[tuple[int, Any, str, str]],
        vectors: npt.NDArray[np.float32] | None,
    ) -> dict[str, tuple[list[int], list[int]]]:
        """On the writer: takes the entries off the queue that are still as they were read and stores
        their vectors (None: only takes them off), in one transaction. Per column: the docs stored and
        their rows in `items`."""
        p, v = side.pending, side.vectors
        conn = self._db.writer_connection()
        try:
            current: set[int] = set()
            ids = [i for i, _, _, _ in items]
            for start in range(0, len(ids), _CHUNK):
                stmt = sa.delete(p).where(p.c.id.in_(ids[start : start + _CHUNK])).returning(p.c.id)
                current.update(conn.execute(stmt).scalars())
            stored: dict[str, tuple[list[int], list[int]]] = {}
            upsert = _insert(conn.dialect.name)
            for row, (entry, key, col, _) in enumerate(items):
                if entry not in current or vectors is None:
                    continue  # written again (queued anew) or deleted since it was read
                stmt = upsert(v).values(key=key, col=col, vec=vectors[row].tobytes())
                stmt = stmt.on_conflict_do_update(
                    index_elements=[v.c.key, v.c.col], set_={"vec": stmt.excluded.vec}
                ).returning(v.c.doc)
                doc = conn.execute(stmt).scalar_one()
                docs, rows = stored.setdefault(col, ([], []))
                docs.append(int(doc))
                rows.append(row)
            conn.commit()
            return stored
        finally:
            if conn.in_transaction():
                conn.rollback()

    def _forget_gone(self, side: SideTables, docs: list[int]) -> None:
        """On the writer: the deleted vectors' docs are out of the in-memory indexes now."""
        conn = self._db.writer_connection()
        try:
            for start in range(0, len(docs), _CHUNK):
                conn.execute(sa.delete(side.gone).where(side.gone.c.doc.in_(docs[start : start + _CHUNK])))
            conn.commit()
        finally:
            if conn.in_transaction():
                conn.rollback()

    def _column_state(self, table_name: str, col: str) -> tuple[str, str, int] | None:
        """On a reader: (token, model id, dim) of a vector-indexed column."""
        c = columns_table.c
        stmt = sa.select(c.token, c.model_id, c.dim).where(c.table_name == table_name, c.col == col)
        with self._db.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else (str(row[0]), str(row[1]), int(row[2]))

    def _check_model(self, hosted: HostedTable, col: str, model_id: str, dim: int) -> str:
        """On the writer: records the model of a column's vectors, or, if they were embedded by
        another, drops them and queues every row again. Returns the column's token."""
        c = columns_table.c
        where = (c.table_name == hosted.table.name, c.col == col)
        conn = self._db.writer_connection()
        try:
            row = conn.execute(sa.select(c.token, c.model_id, c.dim).where(*where)).first()
            if row is None:  # the column's state went with a registration race: start it again
                token = uuid.uuid4().hex
                conn.execute(
                    sa.insert(columns_table).values(
                        table_name=hosted.table.name, col=col, token=token, model_id=model_id, dim=dim
                    )
                )
            else:
                token = str(row[0])
                if row[1] and (row[1] != model_id or row[2] != dim):
                    log.warning(
                        "%s#%s: its vectors are of model %s, the embedding model now is %s: "
                        "every row is embedded again",
                        hosted.uri,
                        col,
                        row[1],
                        model_id,
                    )
                    requeue(conn, hosted.table, hosted.spec, col)
                if row[1] != model_id or row[2] != dim:
                    conn.execute(sa.update(columns_table).where(*where).values(model_id=model_id, dim=dim))
            conn.commit()
            return token
        finally:
            if conn.in_transaction():
                conn.rollback()


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert


def _by_col(pairs: Sequence[tuple[int, str]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for doc, col in pairs:
        out.setdefault(col, []).append(doc)
    return out


def _load(engine: sa.Engine, side: SideTables, col: str, index: VectorIndex) -> int:
    """Reads a column's vectors into `index` (on a worker thread); returns how many."""
    v = side.vectors
    count = 0
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=_LOAD_ROWS).execute(
            sa.select(v.c.doc, v.c.vec).where(v.c.col == col)
        )
        for part in result.partitions():
            docs = np.fromiter((d for d, _ in part), np.int64, len(part))
            vecs = np.frombuffer(b"".join(bytes(b) for _, b in part), np.float32).reshape(
                len(part), index.dim
            )
            index.add(docs, vecs)
            count += len(part)
    return count

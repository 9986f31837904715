"""The background indexer: indexes the rows the writes queued, and holds the in-memory vector indexes.

Writes never wait for the indexes: their transaction only queues the row's key (`index_ddl`'s
triggers). This task takes the queues in batches, table by table in turn (one provider's backlog
cannot hold another's back; its database work is charged to that provider, `datamgr.tenant`):

- full text (SQLite): a batch of queued rows goes into every FTS5 table of the table and off the queue
  in one transaction on the writer, so no write comes between;
- vectors: the queued rows' texts that have no vector yet are read, embedded through the AI service's
  embedding model, and stored in one transaction that takes the rows off the queue — but only what is
  still as it was read: a text written again meanwhile is not stored and its row stays queued (it is
  embedded again, with its new text); a row is taken off once each of its texts has its vector. Then
  the vectors go into the column's `VectorIndex`.

What the queues hold is the backlog (`pending`: Retrieve's answer, /metrics). While writes of indexed
tables keep coming, a round waits for a pause (`IndexerConfig.quiet_s`, at most `max_defer_s`): the
indexes run behind writes rather than slowing them.

Without an embedding model (the AI service off, or no embedding model) the rows stay queued for
their vectors and vector retrieval is unavailable; full text works regardless. At start (and when a
column is first searched) a column's vectors are loaded from the database; if they were embedded by
another model than the current one, they are dropped and every row of the column is queued again.
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
from datamgr.datashare.index_ddl import (
    SideTables,
    columns_table,
    fts_name,
    fulltext_queued,
    pending_rows,
    requeue,
    side_tables,
    state_metadata,
    upgrade,
)
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
    # rows put into the FTS5 tables per writer transaction (tokenizing takes 30-60 µs a row: ~20 ms)
    fulltext_batch_rows: int = 500
    fulltext_round_s: float = 0.25  # batches of a table in one round while no write comes
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


@dataclass(frozen=True, slots=True)
class _Peek:
    vectors: int  # rows queued for their vectors
    texts: int  # rows queued for full text
    pending: int  # rows in either queue
    gone: list[tuple[int, str]]  # (doc, column) of deleted vectors still in memory


# a text to embed: (the row's key, the column, the text as read)
_Item = tuple[Any, str, str]


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
        """Creates the indexes' state table, brings side tables of an earlier version to this one's
        shape, and (`background`) starts the loop; without it, the caller runs the rounds (`step`)."""
        await self._db.write(lambda: state_metadata.create_all(self._db.engine))
        await self._db.write(self._upgrade)
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
        dialect = self._db.dialect
        tables = [
            h for h in self._providers.indexed() if h.spec.vector_columns or fulltext_queued(h.spec, dialect)
        ]
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
        peek = await self._db.read(self._peek, hosted, side)
        self.pending[hosted.uri] = peek.pending
        if peek.gone:
            for col, docs in _by_col(peek.gone).items():
                column = self._columns.get((hosted.table.name, col))
                if column is not None:
                    column.index.remove(docs)
            await self._db.write(self._forget_gone, side, [doc for doc, _ in peek.gone])
        busy = bool(peek.gone)
        embedder = self.embedder
        if embedder is not None:
            for col in hosted.spec.vector_columns:  # loaded (and the model checked) before vectors go in
                await self.vector_index(hosted, col)
        embed = embedder is not None and peek.vectors > 0
        if not embed and not peek.texts:
            return busy
        await self._yield_to_writes()
        if peek.texts:
            busy |= await self._texts_round(hosted, side)
        if embed:
            busy |= await self._embed_batch(hosted, side)
        self.pending[hosted.uri] = await self._db.read(self._count, hosted, side)
        return busy

    async def _texts_round(self, hosted: HostedTable, side: SideTables) -> bool:
        """Full-text batches (one writer transaction each) for up to `fulltext_round_s`, or until a
        write comes or the queue is empty; True if any row was indexed."""
        config = self.config
        deadline = time.monotonic() + config.fulltext_round_s
        done = 0
        while True:
            n = await self._db.write(self._add_texts, hosted, side, config.fulltext_batch_rows)
            done += n
            now = time.monotonic()
            if n < config.fulltext_batch_rows or now >= deadline or now - self._last_write < config.quiet_s:
                return done > 0

    async def _embed_batch(self, hosted: HostedTable, side: SideTables) -> bool:
        """Embeds and stores the missing vectors of a batch of queued rows; False if there was nothing
        to do or the model failed (the rows stay queued)."""
        embedder = self.embedder
        if embedder is None:
            return False
        keys, items = await self._db.read(self._read_pending, hosted, side, self.config.batch_rows)
        if not keys:
            return False
        texts = [text[: self.config.max_text_chars] for _, _, text in items]
        vectors: list[npt.NDArray[np.float32] | None] = []
        size = self.config.batch_rows
        for start in range(0, len(texts), size):
            part = await self._embed(hosted, embedder, texts[start : start + size])
            if part is None:
                return False
            vectors += part
        await self._stored(hosted, side, keys, items, vectors, embedder.model_id)
        return True

    async def _embed(
        self, hosted: HostedTable, embedder: TextEmbedder, texts: list[str]
    ) -> list[npt.NDArray[np.float32] | None] | None:
        """The texts' vectors; None in place of a text the model refuses (INVALID_ARGUMENT: tried alone,
        then logged and left without a vector, its row found by full text only, so that it cannot hold
        the rows behind it back); None for all if the model failed (after a pause)."""
        try:
            return list(np.asarray(await embedder.embed(texts), np.float32))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            message = getattr(exc, "message", exc)
            refused = getattr(exc, "code", "") == "INVALID_ARGUMENT"  # a text, not the model
            if refused and len(texts) == 1:
                log.warning("%s: a row's text is not embedded: %s", hosted.uri, message)
                return [None]
            if not refused:
                log.warning(
                    "embedding %d row(s) of %s failed (%s); retrying in %.0f s",
                    len(texts),
                    hosted.uri,
                    message,
                    self.config.retry_s,
                )
                await asyncio.sleep(self.config.retry_s)
                return None
        out: list[npt.NDArray[np.float32] | None] = []
        for text in texts:
            one = await self._embed(hosted, embedder, [text])
            if one is None:
                return None
            out += one
        return out

    async def _stored(
        self,
        hosted: HostedTable,
        side: SideTables,
        keys: list[Any],
        items: list[_Item],
        vectors: list[npt.NDArray[np.float32] | None],
        model_id: str,
    ) -> None:
        """Stores embedded rows (`_store`) and adds their vectors to the in-memory indexes."""
        stored = await self._db.write(self._store, hosted, side, keys, items, vectors, model_id)
        for col, (docs, rows) in stored.items():
            column = self._columns.get((hosted.table.name, col))
            if column is not None:
                column.index.add(docs, np.stack([vectors[r] for r in rows]))  # type: ignore[misc]
                self._maybe_build(column.index)
        self.embedded += sum(len(d) for d, _ in stored.values())

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
        current = (self.embedder.model_id, self.embedder.dim)
        state = await self._db.read(self._column_state, hosted.table.name, col)
        column = self._columns.get(key)
        if column is not None and state is not None and (column.token, *current) == state:
            return column.index
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            state = await self._db.read(self._column_state, hosted.table.name, col)
            column = self._columns.get(key)
            if column is not None and state is not None and (column.token, *current) == state:
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

    def _upgrade(self) -> None:
        """On the writer: side tables of an earlier version in this one's shape (`index_ddl.upgrade`)."""
        with self._db.engine.begin() as conn:
            for hosted in self._providers.indexed():
                if upgrade(conn, hosted.table, hosted.spec):
                    log.info("%s: its index queues are in the current shape now", hosted.uri)

    def _peek(self, hosted: HostedTable, side: SideTables) -> _Peek:
        """On a reader: the rows queued, and up to 1,000 docs whose vectors were deleted."""
        spec, count = hosted.spec, sa.func.count()
        with self._db.engine.connect() as conn:
            texts = fulltext_queued(spec, conn.dialect.name)
            vectors = (
                conn.execute(sa.select(count).select_from(side.pending)).scalar_one()
                if spec.vector_columns
                else 0
            )
            words = conn.execute(sa.select(count).select_from(side.fulltext)).scalar_one() if texts else 0
            pending = pending_rows(conn, side, spec) if vectors and words else vectors + words
            gone = (
                conn.execute(sa.select(side.gone.c.doc, side.gone.c.col).limit(1000)).all()
                if spec.vector_columns
                else []
            )
        return _Peek(int(vectors), int(words), int(pending), [(int(d), str(c)) for d, c in gone])

    def _count(self, hosted: HostedTable, side: SideTables) -> int:
        """On a reader: the rows queued."""
        with self._db.engine.connect() as conn:
            return pending_rows(conn, side, hosted.spec)

    def _add_texts(self, hosted: HostedTable, side: SideTables, n: int) -> int:
        """On the writer: the first `n` rows of the full-text queue go into every FTS5 table of the
        table and off the queue, in one transaction (so no write comes between); how many."""
        t, f = hosted.table, side.fulltext
        conn = self._db.writer_connection()
        try:
            keys = list(conn.execute(sa.select(f.c.key).order_by(f.c.key).limit(n)).scalars())
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                for col in hosted.spec.fulltext_columns:
                    fts = sa.table(fts_name(t.name, col), sa.column("rowid"), sa.column(col))
                    rows = sa.select(sa.literal_column("rowid"), t.c[col]).where(hosted.pk.in_(chunk))
                    conn.execute(sa.insert(fts).from_select(["rowid", col], rows))
                conn.execute(sa.delete(f).where(f.c.key.in_(chunk)))
            conn.commit()
            return len(keys)
        finally:
            if conn.in_transaction():
                conn.rollback()

    def _read_pending(self, hosted: HostedTable, side: SideTables, n: int) -> tuple[list[Any], list[_Item]]:
        """On a reader: the first `n` keys of the vector queue, and their texts that have no vector."""
        t, p, v = hosted.table, side.pending, side.vectors
        cols = hosted.spec.vector_columns
        stmt = (
            sa.select(p.c.key, *(t.c[c] for c in cols))
            .select_from(p.outerjoin(t, hosted.pk == p.c.key))  # a key without its row: taken off
            .order_by(p.c.key)
            .limit(n)
        )
        with self._db.engine.connect() as conn:
            rows = conn.execute(stmt).all()
            keys = [row[0] for row in rows]
            have = _have(conn, v, keys)
        items = [
            (key, col, text)
            for key, *texts in rows
            for col, text in zip(cols, texts, strict=True)
            if text and (key, col) not in have
        ]
        return keys, items

    def _store(
        self,
        hosted: HostedTable,
        side: SideTables,
        keys: list[Any],
        items: list[_Item],
        vectors: list[npt.NDArray[np.float32] | None],
        model_id: str,
    ) -> dict[str, tuple[list[int], list[int]]]:
        """On the writer, in one transaction: stores the vectors of the texts that are still as they
        were read (None: a text the model refused, stored as nothing), and takes the `keys` off the
        queue whose every text now has its vector (or was refused, or is empty). A row written again
        since it was read keeps its entry. Per column: the docs stored and their rows in `items`."""
        t, p, v = hosted.table, side.pending, side.vectors
        cols = hosted.spec.vector_columns
        conn = self._db.writer_connection()
        try:
            now: dict[Any, dict[str, Any]] = {}
            queued: set[Any] = set()
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                stmt = sa.select(hosted.pk, *(t.c[c] for c in cols)).where(hosted.pk.in_(chunk))
                now.update((key, dict(zip(cols, texts, strict=True))) for key, *texts in conn.execute(stmt))
                queued.update(conn.execute(sa.select(p.c.key).where(p.c.key.in_(chunk))).scalars())
            c = columns_table.c
            models = {
                str(col): str(model)
                for col, model in conn.execute(sa.select(c.col, c.model_id).where(c.table_name == t.name))
            }
            stored: dict[str, tuple[list[int], list[int]]] = {}
            refused: set[tuple[Any, str]] = set()
            upsert = _insert(conn.dialect.name)
            for row, (key, col, text) in enumerate(items):
                if key not in queued or now.get(key, {}).get(col) != text:
                    continue  # deleted, or written again since it was read (and queued as it is now)
                vector = vectors[row]
                if vector is None:
                    refused.add((key, col))
                    continue
                if models.get(col) != model_id:
                    continue  # its vectors were dropped for another model meanwhile (requeued)
                stmt = upsert(v).values(key=key, col=col, vec=vector.tobytes())
                stmt = stmt.on_conflict_do_update(
                    index_elements=[v.c.key, v.c.col], set_={"vec": stmt.excluded.vec}
                ).returning(v.c.doc)
                doc = conn.execute(stmt).scalar_one()
                docs, rows = stored.setdefault(col, ([], []))
                docs.append(int(doc))
                rows.append(row)
            have = _have(conn, v, keys) | refused
            done = [
                key
                for key in keys
                if key in queued and all(not x or (key, col) in have for col, x in now.get(key, {}).items())
            ]
            for start in range(0, len(done), _CHUNK):
                conn.execute(sa.delete(p).where(p.c.key.in_(done[start : start + _CHUNK])))
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


def _have(conn: sa.Connection, vectors: sa.Table, keys: list[Any]) -> set[tuple[Any, str]]:
    """The (key, column) pairs of these keys that have a vector."""
    v, out = vectors, set[tuple[Any, str]]()
    for start in range(0, len(keys), _CHUNK):
        stmt = sa.select(v.c.key, v.c.col).where(v.c.key.in_(keys[start : start + _CHUNK]))
        out.update((key, str(col)) for key, col in conn.execute(stmt))
    return out


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

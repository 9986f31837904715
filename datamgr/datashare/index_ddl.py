"""The side tables and triggers that keep an indexed table's indexes in step with its rows.

A hosted table `ds_N` with indexed text columns (manifest `"index": {"vector": ..., "fulltext": ...}`)
gets, in the same database:

- `ds_N_ixp`, the pending queue: one entry (key, column) per row whose text has to be embedded. The
  id is never reused (AUTOINCREMENT, a sequence), so the indexer can tell that an entry it read is
  still the one waiting (a later write deletes it and queues a new one).
- `ds_N_ixv`, the vectors: (doc, key, column, float32 blob); `doc` is the key of the in-memory ANN
  index, never reused either, so a stale one in the ANN index cannot name another row.
- `ds_N_ixg`, the docs whose vectors were deleted, until the indexer drops them from the ANN index.
- full text: one SQLite FTS5 table per column (external content: the words only, porter stemming), or
  a PostgreSQL GIN index over `to_tsvector('english', column)`.

Triggers do the bookkeeping inside every write's own transaction (inserts, updates, deletes, batches,
and rows applied by sync alike): nothing is lost to kill -9, and no write path can forget it. An
insert queues its texts; an update that changes an indexed text queues it again and deletes its old
vector (the row is found by its new text only); a delete removes the row's entries. Embedding runs
later, in the background (`datamgr.datashare.indexer`).
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from datamgr.datashare.manifest import TableSpec

FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
TS_CONFIG = "english"  # PostgreSQL's text search configuration (Snowball English stemming)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's AUTOINCREMENT needs INTEGER

state_metadata = sa.MetaData()
# One row per vector-indexed column: `token` is new each time the column gets its index (a table id
# may be reused after its app was removed, and its docs restart at 1: an ANN index built before is not
# this one's); the model that embedded its vectors (vectors of another model are not comparable).
columns_table = sa.Table(
    "ds_index_columns",
    state_metadata,
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("col", sa.String(64), primary_key=True),
    sa.Column("token", sa.String(32), nullable=False),
    sa.Column("model_id", sa.String(512), nullable=False, default=""),
    sa.Column("dim", sa.Integer, nullable=False, default=0),
)


class SideTables:
    """The side tables of base table `name` (whose primary key has type `key_type`)."""

    def __init__(self, name: str, key_type: sa.types.TypeEngine) -> None:
        meta = sa.MetaData()
        self.name = name
        self.pending = sa.Table(
            f"{name}_ixp",
            meta,
            sa.Column("id", _ID, primary_key=True, autoincrement=True),
            sa.Column("key", key_type, nullable=False),
            sa.Column("col", sa.String(64), nullable=False),
            sa.UniqueConstraint("key", "col"),
            sqlite_autoincrement=True,
        )
        self.vectors = sa.Table(
            f"{name}_ixv",
            meta,
            sa.Column("doc", _ID, primary_key=True, autoincrement=True),
            sa.Column("key", key_type, nullable=False),
            sa.Column("col", sa.String(64), nullable=False),
            sa.Column("vec", sa.LargeBinary, nullable=False),
            sa.UniqueConstraint("key", "col"),
            sqlite_autoincrement=True,
        )
        self.gone = sa.Table(
            f"{name}_ixg",
            meta,
            sa.Column("doc", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("col", sa.String(64), nullable=False),
        )
        self.all = (self.pending, self.vectors, self.gone)


def side_tables(table: sa.Table, spec: TableSpec) -> SideTables:
    return SideTables(table.name, table.c[spec.primary_key].type)


def fts_name(table_name: str, col: str) -> str:
    """The FTS5 table (SQLite) or GIN index (PostgreSQL) of one column."""
    return f"{table_name}_fts_{col}"


def tsvector_sql(col_sql: str) -> str:
    """The expression PostgreSQL's GIN index holds; a query must spell it the same to use the index."""
    return f"to_tsvector('{TS_CONFIG}'::regconfig, COALESCE({col_sql}, ''::text))"


def _indexed(spec: TableSpec | None) -> tuple[set[str], set[str]]:
    if spec is None:
        return set(), set()
    return set(spec.vector_columns), set(spec.fulltext_columns)


def install(conn: sa.Connection, table: sa.Table, spec: TableSpec, old: TableSpec | None) -> None:
    """Brings the indexes of `table` from what `old` declared (None: a new table) to what `spec` does,
    in the caller's transaction: side tables, full-text indexes (filled from the existing rows now),
    triggers; the existing rows of a newly vector-indexed column are queued for embedding."""
    vec, fts = _indexed(spec)
    old_vec, old_fts = _indexed(old)
    if (vec, fts) == (old_vec, old_fts):
        return
    side = side_tables(table, spec)
    columns_table.create(conn, checkfirst=True)
    _drop_triggers(conn, table.name)
    for t in side.all:
        t.create(conn, checkfirst=True)
    for col in sorted(old_vec - vec):
        _forget_vectors(conn, side, col)
    for col in sorted(old_fts - fts):
        _drop_fulltext(conn, table.name, col)
    for col in sorted(fts - old_fts):
        _create_fulltext(conn, table.name, col)
    for col in sorted(vec - old_vec):
        conn.execute(sa.insert(columns_table).values(table_name=table.name, col=col, token=uuid.uuid4().hex))
        _queue_all(conn, side, table, spec, col)
    if not vec and not fts:
        for t in reversed(side.all):
            t.drop(conn, checkfirst=True)
        return
    if conn.dialect.name == "postgresql":
        _pg_triggers(conn, table.name, spec)
    else:
        _sqlite_triggers(conn, table.name, spec)


def drop(conn: sa.Connection, table: sa.Table, spec: TableSpec) -> None:
    """Drops the indexes of a table that is dropped itself (its app was removed)."""
    vec, fts = _indexed(spec)
    if not vec and not fts:
        return
    _drop_triggers(conn, table.name)
    for col in fts:
        _drop_fulltext(conn, table.name, col)
    for t in reversed(side_tables(table, spec).all):
        t.drop(conn, checkfirst=True)
    conn.execute(sa.delete(columns_table).where(columns_table.c.table_name == table.name))


def _queue_all(conn: sa.Connection, side: SideTables, table: sa.Table, spec: TableSpec, col: str) -> None:
    """Queues every row of `table` with a text in `col` for embedding."""
    q = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(
        f"INSERT INTO {q(side.pending.name)} (key, col) SELECT {q(spec.primary_key)}, '{col}' "
        f"FROM {q(table.name)} WHERE {q(col)} <> ''"
    )


def requeue(conn: sa.Connection, table: sa.Table, spec: TableSpec, col: str) -> None:
    """Drops a column's vectors and queues all its rows again (they were embedded by another model)."""
    side = side_tables(table, spec)
    v = side.vectors
    conn.execute(
        sa.insert(side.gone).from_select(["doc", "col"], sa.select(v.c.doc, v.c.col).where(v.c.col == col))
    )
    conn.execute(sa.delete(v).where(v.c.col == col))
    conn.execute(sa.delete(side.pending).where(side.pending.c.col == col))
    _queue_all(conn, side, table, spec, col)


def _forget_vectors(conn: sa.Connection, side: SideTables, col: str) -> None:
    """A column loses its vector index: its queue entries and vectors go (the ANN index learns of the
    vectors through the gone table)."""
    v = side.vectors
    conn.execute(
        sa.insert(side.gone).from_select(["doc", "col"], sa.select(v.c.doc, v.c.col).where(v.c.col == col))
    )
    conn.execute(sa.delete(v).where(v.c.col == col))
    conn.execute(sa.delete(side.pending).where(side.pending.c.col == col))
    conn.execute(
        sa.delete(columns_table).where(columns_table.c.table_name == side.name, columns_table.c.col == col)
    )


def _create_fulltext(conn: sa.Connection, table_name: str, col: str) -> None:
    q = conn.dialect.identifier_preparer.quote
    name = fts_name(table_name, col)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"CREATE INDEX {q(name)} ON {q(table_name)} USING GIN ({tsvector_sql(q(col))})")
        return
    conn.exec_driver_sql(
        f"CREATE VIRTUAL TABLE {q(name)} USING fts5({q(col)}, content='{table_name}', "
        f"tokenize='{FTS_TOKENIZER}')"
    )
    conn.exec_driver_sql(f"INSERT INTO {q(name)} ({q(name)}) VALUES ('rebuild')")


def _drop_fulltext(conn: sa.Connection, table_name: str, col: str) -> None:
    q = conn.dialect.identifier_preparer.quote
    kind = "INDEX" if conn.dialect.name == "postgresql" else "TABLE"
    conn.exec_driver_sql(f"DROP {kind} IF EXISTS {q(fts_name(table_name, col))}")


_TRIGGERS = ("ins", "del", "upd")


def _drop_triggers(conn: sa.Connection, table_name: str) -> None:
    q = conn.dialect.identifier_preparer.quote
    for kind in _TRIGGERS:
        name = q(f"{table_name}_ix_{kind}")
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {q(table_name)}")
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")
        else:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")


def _sqlite_triggers(conn: sa.Connection, table_name: str, spec: TableSpec) -> None:
    q = conn.dialect.identifier_preparer.quote
    t, pk = q(table_name), q(spec.primary_key)
    ixp, ixv, ixg = (q(f"{table_name}_{s}") for s in ("ixp", "ixv", "ixg"))
    ins: list[str] = []
    dele: list[str] = []
    upd: list[str] = []
    for col in spec.fulltext_columns:
        f, c = q(fts_name(table_name, col)), q(col)
        moved = f"old.{c} IS NOT new.{c} OR old.rowid IS NOT new.rowid"
        ins.append(f"INSERT INTO {f} (rowid, {c}) VALUES (new.rowid, new.{c});")
        dele.append(f"INSERT INTO {f} ({f}, rowid, {c}) VALUES ('delete', old.rowid, old.{c});")
        upd.append(f"INSERT INTO {f} ({f}, rowid, {c}) SELECT 'delete', old.rowid, old.{c} WHERE {moved};")
        upd.append(f"INSERT INTO {f} (rowid, {c}) SELECT new.rowid, new.{c} WHERE {moved};")
    if spec.vector_columns:
        dele.append(f"DELETE FROM {ixp} WHERE key = old.{pk};")
        dele.append(
            f"INSERT OR IGNORE INTO {ixg} (doc, col) SELECT doc, col FROM {ixv} WHERE key = old.{pk};"
        )
        dele.append(f"DELETE FROM {ixv} WHERE key = old.{pk};")
        moved_pk = f"old.{pk} IS NOT new.{pk}"
        upd.append(f"UPDATE {ixv} SET key = new.{pk} WHERE key = old.{pk} AND {moved_pk};")
        upd.append(f"UPDATE {ixp} SET key = new.{pk} WHERE key = old.{pk} AND {moved_pk};")
    for col in spec.vector_columns:
        c = q(col)
        ins.append(f"INSERT OR REPLACE INTO {ixp} (key, col) SELECT new.{pk}, '{col}' WHERE new.{c} <> '';")
        changed = f"col = '{col}' AND old.{c} IS NOT new.{c}"
        upd.append(
            f"INSERT OR IGNORE INTO {ixg} (doc, col) SELECT doc, col FROM {ixv} "
            f"WHERE key = new.{pk} AND {changed};"
        )
        upd.append(f"DELETE FROM {ixv} WHERE key = new.{pk} AND {changed};")
        upd.append(f"DELETE FROM {ixp} WHERE key = new.{pk} AND {changed};")
        upd.append(
            f"INSERT INTO {ixp} (key, col) SELECT new.{pk}, '{col}' WHERE old.{c} IS NOT new.{c} "
            f"AND new.{c} <> '';"
        )
    watched = [spec.primary_key, *dict.fromkeys((*spec.fulltext_columns, *spec.vector_columns))]
    when = " OR ".join(f"old.{q(c)} IS NOT new.{q(c)}" for c in watched)
    bodies = {
        "ins": f"AFTER INSERT ON {t}",
        "del": f"AFTER DELETE ON {t}",
        "upd": f"AFTER UPDATE OF {', '.join(map(q, watched))} ON {t} WHEN {when}",
    }
    for kind, statements in (("ins", ins), ("del", dele), ("upd", upd)):
        name = q(f"{table_name}_ix_{kind}")
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {bodies[kind]} BEGIN {' '.join(statements)} END")


def _pg_triggers(conn: sa.Connection, table_name: str, spec: TableSpec) -> None:
    """Full text needs none on PostgreSQL (its GIN index is kept by the database); the vector queue
    does: statement triggers over the inserted and deleted rows, a row trigger for updates."""
    if not spec.vector_columns:
        return
    q = conn.dialect.identifier_preparer.quote
    t, pk = q(table_name), q(spec.primary_key)
    ixp, ixv, ixg = (q(f"{table_name}_{s}") for s in ("ixp", "ixv", "ixg"))
    ins = [
        f"INSERT INTO {ixp} (key, col) SELECT {pk}, '{col}' FROM new_rows WHERE {q(col)} <> '' "
        "ON CONFLICT (key, col) DO NOTHING;"
        for col in spec.vector_columns
    ]
    dele = [
        f"DELETE FROM {ixp} WHERE key IN (SELECT {pk} FROM old_rows);",
        f"WITH d AS (DELETE FROM {ixv} WHERE key IN (SELECT {pk} FROM old_rows) RETURNING doc, col) "
        f"INSERT INTO {ixg} (doc, col) SELECT doc, col FROM d ON CONFLICT DO NOTHING;",
    ]
    upd = [
        f"IF OLD.{pk} IS DISTINCT FROM NEW.{pk} THEN "
        f"UPDATE {ixv} SET key = NEW.{pk} WHERE key = OLD.{pk}; "
        f"UPDATE {ixp} SET key = NEW.{pk} WHERE key = OLD.{pk}; END IF;"
    ]
    for col in spec.vector_columns:
        c = q(col)
        upd.append(
            f"IF OLD.{c} IS DISTINCT FROM NEW.{c} THEN "
            f"WITH d AS (DELETE FROM {ixv} WHERE key = NEW.{pk} AND col = '{col}' RETURNING doc, col) "
            f"INSERT INTO {ixg} (doc, col) SELECT doc, col FROM d ON CONFLICT DO NOTHING; "
            f"DELETE FROM {ixp} WHERE key = NEW.{pk} AND col = '{col}'; "
            f"IF NEW.{c} <> '' THEN INSERT INTO {ixp} (key, col) VALUES (NEW.{pk}, '{col}'); END IF; "
            "END IF;"
        )
    watched = [spec.primary_key, *spec.vector_columns]
    when = " OR ".join(f"OLD.{q(c)} IS DISTINCT FROM NEW.{q(c)}" for c in watched)
    events = {
        "ins": "AFTER INSERT ON {t} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
        "del": "AFTER DELETE ON {t} REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
        "upd": "AFTER UPDATE ON {t} FOR EACH ROW WHEN (" + when + ")",
    }
    for kind, statements in (("ins", ins), ("del", dele), ("upd", upd)):
        name = q(f"{table_name}_ix_{kind}")
        body = " ".join(statements)
        conn.exec_driver_sql(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$body$ BEGIN {body} RETURN NULL; END $body$"
        )
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {events[kind].format(t=t)} EXECUTE FUNCTION {name}()")

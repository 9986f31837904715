"""The side tables and triggers that keep an indexed table's indexes in step with its rows.

A hosted table `ds_N` with indexed text columns (manifest `"index": {"vector": ..., "fulltext": ...}`)
gets, in the same database:

- `ds_N_ixp`, the vector queue: the keys of the rows that may lack a vector of their current text (a
  row inserted, a text changed). One entry per row, the row's primary key alone (on SQLite a rowid
  table for an integer key, WITHOUT ROWID for another): one small b-tree insert per written row.
- `ds_N_ixv`, the vectors: (doc, key, column, float32 blob); `doc` is the key of the in-memory ANN
  index, never reused, so a stale one in the ANN index cannot name another row.
- `ds_N_ixg`, the docs whose vectors were deleted, until the indexer drops them from the ANN index.
- full text on SQLite: one FTS5 table per column (external content: the words only, porter
  stemming) and `ds_N_ixf`, the full-text queue, shaped as `ds_N_ixp`. A row is in every FTS5 table
  of its table, with its current text, exactly when its key is not in this queue. On PostgreSQL a GIN
  index over `to_tsvector('english', column)`, which the database keeps itself (no queue).

Triggers do the bookkeeping inside every write's own transaction (inserts, updates, deletes, batches,
and rows applied by sync alike): nothing is lost to kill -9, and no write path can forget it. Only
what keeps answers exact is done there: an insert queues its key; an update that changes an indexed
text queues it again and takes out what the old text put in (its vector, its FTS5 entries: the row is
never found by a text it no longer holds); a delete takes the row's entries out. The costly work,
embedding and FTS5's tokenizing (30-60 µs a row, several times a plain insert), runs later, in the
background (`datamgr.datashare.indexer`), so both indexes run behind writes; what is queued is the
backlog that Retrieve's `pending` counts.
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


def _queue(name: str, meta: sa.MetaData, key_type: sa.types.TypeEngine) -> sa.Table:
    """A queue of row keys: on SQLite an integer key is the rowid itself (one b-tree, no index), any
    other key the b-tree's key (WITHOUT ROWID: no rowid beside it)."""
    return sa.Table(
        name,
        meta,
        sa.Column("key", key_type, primary_key=True, autoincrement=False),
        sqlite_with_rowid=isinstance(key_type, sa.Integer),
    )


class SideTables:
    """The side tables of base table `name` (whose primary key has type `key_type`)."""

    def __init__(self, name: str, key_type: sa.types.TypeEngine) -> None:
        meta = sa.MetaData()
        self.name = name
        self.pending = _queue(f"{name}_ixp", meta, key_type)
        self.fulltext = _queue(f"{name}_ixf", meta, key_type)  # SQLite only
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
        self.vector_tables = (self.pending, self.vectors, self.gone)

    def queues(self, spec: TableSpec, dialect: str) -> list[sa.Table]:
        """The queues this table has: the vector queue, and the full-text queue on SQLite."""
        out = [self.pending] if spec.vector_columns else []
        return out + ([self.fulltext] if fulltext_queued(spec, dialect) else [])


def side_tables(table: sa.Table, spec: TableSpec) -> SideTables:
    return SideTables(table.name, table.c[spec.primary_key].type)


def fulltext_queued(spec: TableSpec, dialect: str) -> bool:
    """Whether the table's full text is kept by the indexer (SQLite's FTS5), not by the database."""
    return bool(spec.fulltext_columns) and dialect != "postgresql"


def pending_rows(conn: sa.Connection, side: SideTables, spec: TableSpec) -> int:
    """Rows whose index entries are not all current yet: their keys in the table's queues."""
    queues = side.queues(spec, conn.dialect.name)
    count = sa.func.count()
    total = sum(int(conn.execute(sa.select(count).select_from(t)).scalar_one()) for t in queues[:1])
    for t in queues[1:]:  # the full-text queue drains fast: count its keys not counted already
        p = side.pending
        missing = ~sa.exists().where(p.c.key == t.c.key)
        total += int(conn.execute(sa.select(count).select_from(t).where(missing)).scalar_one())
    return total


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
    in the caller's transaction: side tables, full-text indexes (a new one filled from the existing
    rows now), triggers; the existing rows of a newly vector-indexed column are queued for embedding."""
    vec, fts = _indexed(spec)
    old_vec, old_fts = _indexed(old)
    if (vec, fts) == (old_vec, old_fts):
        return
    side = side_tables(table, spec)
    columns_table.create(conn, checkfirst=True)
    _drop_triggers(conn, table.name)
    if old is not None:
        _upgrade_queue(conn, side, old)
    if vec:
        for t in side.vector_tables:
            t.create(conn, checkfirst=True)
    for col in sorted(old_vec - vec):
        _forget_vectors(conn, side, col)
    if not vec:
        for t in reversed(side.vector_tables):
            t.drop(conn, checkfirst=True)
    queued = fulltext_queued(spec, conn.dialect.name)
    for col in sorted(old_fts - fts):
        _drop_fulltext(conn, table.name, col)
    if queued:
        side.fulltext.create(conn, checkfirst=True)
    for col in sorted(fts - old_fts):
        _create_fulltext(conn, table, spec, col, side.fulltext if queued else None)
    if not queued:
        side.fulltext.drop(conn, checkfirst=True)
    for col in sorted(vec - old_vec):
        conn.execute(sa.insert(columns_table).values(table_name=table.name, col=col, token=uuid.uuid4().hex))
        _queue_all(conn, side, table, spec, col)
    _create_triggers(conn, table.name, spec)


def upgrade(conn: sa.Connection, table: sa.Table, spec: TableSpec) -> bool:
    """Brings the side tables of an indexed table written by an earlier version to this one's shape,
    in the caller's transaction (at start, before any write): True if it did. Earlier versions queued
    (id, key, column) entries, and kept FTS5 in the write's transaction (every row is in it)."""
    side = side_tables(table, spec)
    queued = fulltext_queued(spec, conn.dialect.name)
    if not _old_queue(conn, side, spec) and not (
        queued and not sa.inspect(conn).has_table(side.fulltext.name)
    ):
        return False
    _drop_triggers(conn, table.name)  # first: SQLite checks the triggers' tables when one is renamed
    _upgrade_queue(conn, side, spec)
    if queued:
        side.fulltext.create(conn, checkfirst=True)
    _create_triggers(conn, table.name, spec)
    return True


def _old_queue(conn: sa.Connection, side: SideTables, spec: TableSpec) -> bool:
    """Whether the vector queue has an earlier version's shape: (id, key, col) entries."""
    name = side.pending.name
    inspector = sa.inspect(conn)
    if not spec.vector_columns or not inspector.has_table(name):
        return False
    return "id" in {c["name"] for c in inspector.get_columns(name)}


def _upgrade_queue(conn: sa.Connection, side: SideTables, spec: TableSpec) -> None:
    """An (id, key, col) vector queue becomes a queue of keys (with the triggers dropped)."""
    if not _old_queue(conn, side, spec):
        return
    name = side.pending.name
    q = conn.dialect.identifier_preparer.quote
    new = _queue(f"{name}_new", sa.MetaData(), side.pending.c.key.type)
    new.create(conn)
    conn.exec_driver_sql(f"INSERT INTO {q(new.name)} (key) SELECT DISTINCT key FROM {q(name)}")
    conn.exec_driver_sql(f"DROP TABLE {q(name)}")
    conn.exec_driver_sql(f"ALTER TABLE {q(new.name)} RENAME TO {q(name)}")


def drop(conn: sa.Connection, table: sa.Table, spec: TableSpec) -> None:
    """Drops the indexes of a table that is dropped itself (its app was removed)."""
    vec, fts = _indexed(spec)
    if not vec and not fts:
        return
    _drop_triggers(conn, table.name)
    for col in fts:
        _drop_fulltext(conn, table.name, col)
    side = side_tables(table, spec)
    for t in (side.fulltext, *reversed(side.vector_tables)):
        t.drop(conn, checkfirst=True)
    conn.execute(sa.delete(columns_table).where(columns_table.c.table_name == table.name))


def _queue_all(conn: sa.Connection, side: SideTables, table: sa.Table, spec: TableSpec, col: str) -> None:
    """Queues every row of `table` with a text in `col` for embedding."""
    q = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(
        f"INSERT INTO {q(side.pending.name)} (key) SELECT {q(spec.primary_key)} "
        f"FROM {q(table.name)} WHERE {q(col)} <> '' ON CONFLICT DO NOTHING"
    )


def requeue(conn: sa.Connection, table: sa.Table, spec: TableSpec, col: str) -> None:
    """Drops a column's vectors and queues all its rows again (they were embedded by another model)."""
    side = side_tables(table, spec)
    _move_to_gone(conn, side, col)
    _queue_all(conn, side, table, spec, col)


def _move_to_gone(conn: sa.Connection, side: SideTables, col: str) -> None:
    """Deletes a column's vectors (the ANN index learns of them through the gone table)."""
    v = side.vectors
    conn.execute(
        sa.insert(side.gone).from_select(["doc", "col"], sa.select(v.c.doc, v.c.col).where(v.c.col == col))
    )
    conn.execute(sa.delete(v).where(v.c.col == col))


def _forget_vectors(conn: sa.Connection, side: SideTables, col: str) -> None:
    """A column loses its vector index: its vectors and state go (a queued row is looked at for the
    vector columns it still has)."""
    _move_to_gone(conn, side, col)
    conn.execute(
        sa.delete(columns_table).where(columns_table.c.table_name == side.name, columns_table.c.col == col)
    )


def _create_fulltext(
    conn: sa.Connection, table: sa.Table, spec: TableSpec, col: str, queue: sa.Table | None
) -> None:
    """A column's full-text index; on SQLite filled now with the rows that are in the table's other
    FTS5 tables (those not in the full-text `queue`: the indexer adds the others to every one)."""
    q = conn.dialect.identifier_preparer.quote
    name, t, c = fts_name(table.name, col), q(table.name), q(col)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"CREATE INDEX {q(name)} ON {t} USING GIN ({tsvector_sql(c)})")
        return
    assert queue is not None
    conn.exec_driver_sql(
        f"CREATE VIRTUAL TABLE {q(name)} USING fts5({c}, content='{table.name}', tokenize='{FTS_TOKENIZER}')"
    )
    conn.exec_driver_sql(
        f"INSERT INTO {q(name)} (rowid, {c}) SELECT rowid, {c} FROM {t} "
        f"WHERE {q(spec.primary_key)} NOT IN (SELECT key FROM {q(queue.name)})"
    )


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


def _create_triggers(conn: sa.Connection, table_name: str, spec: TableSpec) -> None:
    if conn.dialect.name == "postgresql":
        _pg_triggers(conn, table_name, spec)
    elif spec.vector_columns or spec.fulltext_columns:
        _sqlite_triggers(conn, table_name, spec)


# A trigger's own upsert clause, not INSERT OR IGNORE: SQLite applies the conflict handling of the
# statement that fired the trigger to the trigger's statements, and sync applies rows with an upsert
# (`distributed._upsert`), under which OR IGNORE fails on a key already queued.
_NOTHING = "ON CONFLICT DO NOTHING"


def _sqlite_triggers(conn: sa.Connection, table_name: str, spec: TableSpec) -> None:
    """Row triggers. Full text: a row's FTS5 entries are taken out (with the old text, as an external
    content table needs) only while they are in, i.e. while its key is not queued; an insert, a
    changed text or a moved rowid queues the key, and the indexer puts the row into every FTS5 table.
    Vectors: an insert with a text, or a changed text, queues the key; a changed text's old vector goes
    at once."""
    q = conn.dialect.identifier_preparer.quote
    t, pk = q(table_name), q(spec.primary_key)
    ixp, ixv, ixg, ixf = (q(f"{table_name}_{s}") for s in ("ixp", "ixv", "ixg", "ixf"))
    ins: list[str] = []
    dele: list[str] = []
    upd: list[str] = []
    moved_pk = f"old.{pk} IS NOT new.{pk}"
    if spec.fulltext_columns:
        is_in = f"NOT EXISTS (SELECT 1 FROM {ixf} WHERE key = old.{pk})"
        redo = " OR ".join(
            [*(f"old.{q(c)} IS NOT new.{q(c)}" for c in spec.fulltext_columns), "old.rowid IS NOT new.rowid"]
        )
        ins.append(f"INSERT INTO {ixf} (key) VALUES (new.{pk}) {_NOTHING};")
        for col in spec.fulltext_columns:
            f, c = q(fts_name(table_name, col)), q(col)
            dele.append(
                f"INSERT INTO {f} ({f}, rowid, {c}) SELECT 'delete', old.rowid, old.{c} WHERE {is_in};"
            )
            upd.append(
                f"INSERT INTO {f} ({f}, rowid, {c}) SELECT 'delete', old.rowid, old.{c} "
                f"WHERE ({redo}) AND {is_in};"
            )
        dele.append(f"DELETE FROM {ixf} WHERE key = old.{pk};")
        upd.append(f"UPDATE {ixf} SET key = new.{pk} WHERE key = old.{pk} AND {moved_pk};")
        upd.append(f"INSERT INTO {ixf} (key) SELECT new.{pk} WHERE {redo} {_NOTHING};")
    if spec.vector_columns:
        texts = " OR ".join(f"new.{q(c)} <> ''" for c in spec.vector_columns)
        ins.append(f"INSERT INTO {ixp} (key) SELECT new.{pk} WHERE {texts} {_NOTHING};")
        dele.append(f"DELETE FROM {ixp} WHERE key = old.{pk};")
        dele.append(
            f"INSERT INTO {ixg} (doc, col) SELECT doc, col FROM {ixv} WHERE key = old.{pk} {_NOTHING};"
        )
        dele.append(f"DELETE FROM {ixv} WHERE key = old.{pk};")
        upd.append(f"UPDATE {ixv} SET key = new.{pk} WHERE key = old.{pk} AND {moved_pk};")
        upd.append(f"UPDATE {ixp} SET key = new.{pk} WHERE key = old.{pk} AND {moved_pk};")
    for col in spec.vector_columns:
        c = q(col)
        changed = f"col = '{col}' AND old.{c} IS NOT new.{c}"
        upd.append(
            f"INSERT INTO {ixg} (doc, col) SELECT doc, col FROM {ixv} "
            f"WHERE key = new.{pk} AND {changed} {_NOTHING};"
        )
        upd.append(f"DELETE FROM {ixv} WHERE key = new.{pk} AND {changed};")
    if spec.vector_columns:
        again = " OR ".join(
            f"(old.{q(c)} IS NOT new.{q(c)} AND new.{q(c)} <> '')" for c in spec.vector_columns
        )
        upd.append(f"INSERT INTO {ixp} (key) SELECT new.{pk} WHERE {again} {_NOTHING};")
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
    texts = " OR ".join(f"{q(c)} <> ''" for c in spec.vector_columns)
    ins = [f"INSERT INTO {ixp} (key) SELECT {pk} FROM new_rows WHERE {texts} ON CONFLICT (key) DO NOTHING;"]
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
            "END IF;"
        )
    again = " OR ".join(
        f"(OLD.{q(c)} IS DISTINCT FROM NEW.{q(c)} AND NEW.{q(c)} <> '')" for c in spec.vector_columns
    )
    upd.append(
        f"IF {again} THEN INSERT INTO {ixp} (key) VALUES (NEW.{pk}) ON CONFLICT (key) DO NOTHING; END IF;"
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

"""Silent-access CRUD on the tables the daemon hosts (the provider process is not involved).

Every write is one transaction on the database writer thread; after it commits, the change goes to the
change feed from the same thread, so subscribers see changes in commit order and never before commit.
Values are checked against the declared column types before anything touches the database. A write
of a distributed table also writes its mirror in the same transaction (`distributed`); such a table's
primary key is given on insert and never updated (it names the row on every device).
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from itertools import repeat
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from datamgr.budget import Budget
from datamgr.changefeed import Change, Feed
from datamgr.datashare._compile import CompiledPredicates, build_select, build_where_for_write
from datamgr.datashare.distributed import DistributedTables
from datamgr.datashare.manifest import value_fits
from datamgr.datashare.tables import HostedTable
from datamgr.datashare.targets import Targets, WriteCounts, find, key_chunks
from datamgr.datashare.usage import insert_bytes, row_bytes, stored_bytes, values_bytes
from datamgr.errors import AlreadyExists, InvalidArgument, TooLarge, Unavailable
from datamgr.quota import Ledger
from datamgr.storage import Database
from datamgr.v1.types_pb2 import DataType as DT
from datamgr.values import Cell

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "real", str: "text", bytes: "blob", type(None): "null"}
# SQLite would silently store NaN as NULL (PostgreSQL keeps it), and predicates cannot compare it.
_NAN = "column {name} of {uri}: NaN cannot be stored"
# PostgreSQL refuses NUL in text (and predicates refuse it on both databases).
_NUL = "column {name} of {uri}: text values cannot contain NUL characters"


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def check_values(hosted: HostedTable, values: Mapping[str, Cell], *, inserting: bool) -> dict[str, Cell]:
    """The values, checked: known columns, fitting types, required columns present on insert."""
    if not values:
        raise InvalidArgument(f"no values given for {hosted.uri}")
    spec = hosted.spec
    for name, value in values.items():
        if name not in hosted.table.c:
            raise InvalidArgument(f"{hosted.uri} has no column {name!r}")
        col = spec.column(name)
        if value is None and not col.nullable:
            raise InvalidArgument(f"column {name} of {hosted.uri} may not be null")
        if not value_fits(col.type, value):
            raise InvalidArgument(f"column {name} of {hosted.uri} is {col.type}, got {_type_name(value)}")
        if isinstance(value, float) and math.isnan(value):
            raise InvalidArgument(_NAN.format(name=name, uri=hosted.uri))
        if isinstance(value, str) and "\x00" in value:
            raise InvalidArgument(_NUL.format(name=name, uri=hosted.uri))
    if inserting:
        _check_required(hosted, values.keys())
    return dict(values)


def _required(hosted: HostedTable, name: str) -> bool:
    """Whether a value must be given: NOT NULL, no default, not the auto-increment primary key; and
    a distributed table's primary key."""
    col = hosted.spec.column(name)
    is_pk = col.name == hosted.spec.primary_key
    if is_pk and hosted.mirror is not None:
        return col.default is None
    is_auto_pk = is_pk and col.type == "integer"
    return not col.nullable and col.default is None and not is_auto_pk


def _check_required(hosted: HostedTable, given: Any) -> None:
    for col in hosted.spec.columns:
        if col.name not in given and _required(hosted, col.name):
            raise InvalidArgument(f"column {col.name} of {hosted.uri} is required")


_WIRE_FITS = {
    "integer": {DT.DATA_TYPE_LONG},
    "real": {DT.DATA_TYPE_LONG, DT.DATA_TYPE_DOUBLE},
    "text": {DT.DATA_TYPE_STRING},
    "blob": {DT.DATA_TYPE_BLOB},
    "boolean": {DT.DATA_TYPE_BOOL},
}
_WIRE_NAMES: dict[int, str] = {
    DT.DATA_TYPE_LONG: "integer",
    DT.DATA_TYPE_DOUBLE: "real",
    DT.DATA_TYPE_STRING: "text",
    DT.DATA_TYPE_BLOB: "blob",
    DT.DATA_TYPE_BOOL: "boolean",
}


def check_columns(
    hosted: HostedTable,
    names: Sequence[str],
    columns: Sequence[Sequence[Cell]],
    wire_types: Sequence[int],
    absent: Sequence[Sequence[int]],
    max_text_chars: int | None = None,
) -> None:
    """Column-wise check of a batch. A typed wire column is checked once, in C-level passes; a mixed one
    value by value. `absent[i]` are the rows that did not give column i (its default applies). Text
    values are at most `max_text_chars` long (None: unbounded)."""
    if len(set(names)) != len(names):
        raise InvalidArgument("a column is named twice in the batch")
    if len(names) != len(columns):
        raise InvalidArgument(f"{len(names)} column names for {len(columns)} columns of values")
    if not columns or not columns[0]:
        return  # an empty batch inserts nothing, so no column is required
    _check_required(hosted, names)
    for name, values, wire, missing in zip(names, columns, wire_types, absent, strict=True):
        if name not in hosted.table.c:
            raise InvalidArgument(f"{hosted.uri} has no column {name!r}")
        col = hosted.spec.column(name)
        if missing and _required(hosted, col.name):
            raise InvalidArgument(f"row {missing[0]}: column {name} of {hosted.uri} is required")
        if wire in _WIRE_FITS[col.type] or wire == DT.DATA_TYPE_NULL:
            if not col.nullable and (wire == DT.DATA_TYPE_NULL or None in values):
                skip = set(missing)
                i = next((i for i, v in enumerate(values) if v is None and i not in skip), None)
                if i is not None:
                    raise InvalidArgument(f"row {i}: column {name} of {hosted.uri} may not be null")
            if wire == DT.DATA_TYPE_DOUBLE and any(
                map(math.isnan, filter(None, cast("list[float]", values)))
            ):
                raise InvalidArgument(_NAN.format(name=name, uri=hosted.uri))
            if wire == DT.DATA_TYPE_STRING and any(
                map(operator.contains, filter(None, values), repeat("\x00"))  # type: ignore[arg-type]
            ):
                raise InvalidArgument(_NUL.format(name=name, uri=hosted.uri))
            if wire == DT.DATA_TYPE_STRING and max_text_chars is not None:
                _check_text_chars(hosted, name, values, max_text_chars)
            continue
        if wire != DT.DATA_TYPE_UNSPECIFIED:
            raise InvalidArgument(
                f"column {name} of {hosted.uri} is {col.type}, got {_WIRE_NAMES.get(wire) or wire}"
            )
        for i, v in enumerate(values):
            if v is None and not col.nullable:
                raise InvalidArgument(f"row {i}: column {name} of {hosted.uri} may not be null")
            if not value_fits(col.type, v):
                raise InvalidArgument(
                    f"row {i}: column {name} of {hosted.uri} is {col.type}, got {_type_name(v)}"
                )
            if isinstance(v, float) and math.isnan(v):
                raise InvalidArgument(_NAN.format(name=name, uri=hosted.uri))
            if isinstance(v, str) and "\x00" in v:
                raise InvalidArgument(_NUL.format(name=name, uri=hosted.uri))
        if col.type == "text" and max_text_chars is not None:
            _check_text_chars(hosted, name, values, max_text_chars)


def _check_text_chars(hosted: HostedTable, name: str, values: Sequence[Cell], limit: int) -> None:
    """Text this long makes one LIKE/GLOB match too long to interrupt (see datamgr.budget)."""
    longest = max(map(len, filter(None, values)), default=0)  # type: ignore[arg-type]
    if longest > limit:
        i = next(i for i, v in enumerate(values) if isinstance(v, str) and len(v) == longest)
        raise TooLarge(
            f"row {i}: column {name} of {hosted.uri} holds {longest} characters, over "
            f"datashare.max_text_chars ({limit})"
        )


# a compiled positional INSERT: its SQL, the column index for each parameter, their bind processors
_Plan = tuple[str, list[int], list[Any]]


class SilentStore:
    """CRUD on hosted tables. Write methods run on the writer thread and publish after commit."""

    def __init__(
        self,
        db: Database,
        feed: Feed[Change],
        distributed: DistributedTables | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self._db = db
        self._ledger = ledger  # the providers' usage: each write reports the bytes it adds or frees
        self._engine = db.engine
        self._feed = feed
        self._distributed = distributed
        # each hosted table's committed changes of existing rows, bumped after every commit that
        # updates or deletes (with the distributed tables' own, which count the rows sync applies)
        self.counts = distributed.counts if distributed is not None else WriteCounts()
        self._inserts: weakref.WeakKeyDictionary[sa.Table, sa.Insert] = weakref.WeakKeyDictionary()
        self._plans: weakref.WeakKeyDictionary[sa.Table, dict[tuple[str, ...], Any]] = (
            weakref.WeakKeyDictionary()
        )

    def _insert_returning(self, t: sa.Table) -> sa.Insert:
        """One statement object per table, so SQLAlchemy computes its cache key once, not per insert."""
        stmt = self._inserts.get(t)
        if stmt is None:
            stmt = self._inserts[t] = sa.insert(t).returning(*t.c)
        return stmt

    @contextlib.contextmanager
    def _writing(self, budget: Budget | None = None) -> Iterator[sa.Connection]:
        """The writer thread's connection for one transaction: rolled back unless it was committed, and
        interrupted (then rolled back) when it outruns `budget`."""
        conn = self._db.writer_connection()
        try:
            with self._db.watchdog.guard(conn, budget):
                yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()

    def _commit_and_notify(
        self,
        conn: sa.Connection,
        changes: list[Change],
        written: Sequence[HostedTable] = (),
        inserted_only: bool = False,
    ) -> None:
        conn.commit()
        if not inserted_only:  # new rows leave the rows found before them as they were
            for hosted in written:
                self.counts.bump(hosted.table.name)
        for change in changes:
            self._feed.publish(change.uri, [change])
        if self._distributed is not None:
            for hosted in written:
                self._distributed.written(hosted)

    def _mirrored(self, hosted: HostedTable) -> DistributedTables | None:
        """The mirrors, if `hosted` is distributed (its writes must write its mirror too)."""
        if hosted.mirror is None:
            return None
        if self._distributed is None:
            raise Unavailable(f"{hosted.uri} is distributed, and sync is not running on this device")
        return self._distributed

    def insert(self, hosted: HostedTable, values: dict[str, Cell], budget: Budget | None = None) -> int:
        t = hosted.table
        mirrors = self._mirrored(hosted)
        with self._writing(budget) as conn:
            try:
                row = conn.execute(self._insert_returning(t), values).one()
                if hosted.spec.primary_key in values:
                    _sync_sequence(conn, hosted)
            except IntegrityError as exc:
                raise _integrity(hosted, exc) from None
            grown = self._admit(conn, hosted, row_bytes(hosted, row._asdict()))
            if mirrors is not None:
                mirrors.record(conn, hosted, [row._asdict()])
            change = Change("INSERT", hosted.uri, (row._asdict(),))
            self._commit_and_notify(conn, [change], [hosted], inserted_only=True)
        self._added(grown)
        pk = row._mapping[hosted.spec.primary_key]
        return pk if isinstance(pk, int) and not isinstance(pk, bool) else -1

    def batch_insert(
        self,
        hosted: HostedTable,
        names: Sequence[str],
        columns: Sequence[Sequence[Cell]],
        absent: Sequence[Sequence[int]] = (),
        budget: Budget | None = None,
    ) -> int:
        """All rows in one transaction. Rows that leave columns out are inserted in runs of the same
        columns, in order, so that those columns get their defaults."""
        t = hosted.table
        if not columns or not columns[0]:
            return 0
        returning = self._feed.has_subscribers(hosted.uri)
        mirrors = self._mirrored(hosted)
        inserted: list[dict[str, Any]] = []
        with self._writing(budget) as conn:
            grown = self._admit(conn, hosted, insert_bytes(hosted, names, columns, absent))
            try:
                if not returning and not any(absent) and self._columnwise_insert(conn, t, names, columns):
                    runs = []
                else:
                    runs = _runs(names, columns, absent)
                for rows in runs:
                    if not rows[0]:  # no column given at all: every column takes its default
                        for _ in rows:
                            result = conn.execute(sa.insert(t).returning(*t.c))
                            inserted.extend(r._asdict() for r in result)
                    elif returning:
                        result = conn.execute(
                            sa.insert(t).returning(*t.c, sort_by_parameter_order=True), rows
                        )
                        inserted.extend(r._asdict() for r in result)
                    else:
                        conn.execute(sa.insert(t), rows)
                if hosted.spec.primary_key in names:
                    _sync_sequence(conn, hosted)
            except IntegrityError as exc:
                raise _integrity(hosted, exc) from None
            if mirrors is not None and returning:
                mirrors.record(conn, hosted, inserted)
            elif mirrors is not None:
                mirrors.record_batch(conn, hosted, names, columns, absent)
            changes = [Change("INSERT", hosted.uri, tuple(inserted))] if returning and inserted else []
            self._commit_and_notify(conn, changes, [hosted], inserted_only=True)
        self._added(grown)
        return len(columns[0])

    def _columnwise_insert(
        self, conn: sa.Connection, t: sa.Table, names: Sequence[str], columns: Sequence[Sequence[Cell]]
    ) -> bool:
        """executemany straight from the columns, for drivers with positional parameters (SQLite).

        SQLAlchemy compiles the INSERT and supplies its bind processors, which are applied a column
        at a time; no per-row dict is built and no per-row parameter processing runs. Returns False
        (nothing done) where this does not apply, and the caller takes the row-dict path."""
        key = tuple(names)
        plans = self._plans.setdefault(t, {})
        if key not in plans:
            compiled = sa.insert(t).values({n: sa.bindparam(n) for n in names}).compile(dialect=conn.dialect)
            if not compiled.positional or compiled.positiontup is None:
                plans[key] = None
            else:
                order = [names.index(p) for p in compiled.positiontup]
                procs = [compiled._bind_processors.get(p) for p in compiled.positiontup]
                plans[key] = (str(compiled), order, procs)
        plan = plans[key]
        if plan is None:
            return False
        sql, order, procs = plan
        ordered = [
            columns[i] if proc is None else list(map(proc, columns[i]))
            for i, proc in zip(order, procs, strict=True)
        ]
        conn.exec_driver_sql(sql, list(zip(*ordered, strict=True)))
        return True

    def _admit(
        self, conn: sa.Connection, hosted: HostedTable, delta: int, grown: dict[str, int] | None = None
    ) -> dict[str, int]:
        """Refuses a write that grows the provider past its quota or the disk below its floor;
        `grown` adds up the deltas of one transaction per provider, for `_added` after the commit."""
        grown = {} if grown is None else grown
        if self._ledger is not None:
            bundle = hosted.bundle
            total = grown.get(bundle, 0) + delta
            if delta > 0:
                self._ledger.admit(conn, bundle, total)
            grown[bundle] = total
        return grown

    def _added(self, grown: dict[str, int]) -> None:
        if self._ledger is not None:
            for bundle, delta in grown.items():
                self._ledger.add(bundle, delta)

    def _update(
        self,
        conn: sa.Connection,
        hosted: HostedTable,
        compiled: CompiledPredicates,
        values: dict[str, Cell],
        grown: dict[str, int] | None = None,
        found: Targets | None = None,
    ) -> tuple[int, Change | None]:
        """An UPDATE in the caller's transaction: of the rows its predicates select, or of the rows
        `found` on a reader (by primary key)."""
        t = hosted.table
        mirrors = self._mirrored(hosted)
        if mirrors is not None and hosted.spec.primary_key in values:
            raise InvalidArgument(
                f"{hosted.uri} is distributed: the primary key names the row on every device, so it "
                f"cannot change (delete the row and insert it with the new {hosted.spec.primary_key})"
            )
        stmt = sa.update(t).values(values)
        wheres = _wheres(hosted, compiled, found)
        if grown is not None and self._ledger is not None:
            if found is None:
                matched, old = stored_bytes(conn, hosted, wheres[0], list(values))
            else:
                matched, old = len(found.keys), found.size
            self._admit(conn, hosted, matched * values_bytes(values) - old, grown)
        try:
            count, rows = self._execute_writes(conn, hosted, stmt, wheres, mirrors is not None)
            if hosted.spec.primary_key in values:
                _sync_sequence(conn, hosted)
        except IntegrityError as exc:
            raise _integrity(hosted, exc) from None
        if mirrors is not None:
            mirrors.record(conn, hosted, rows)
        return count, Change("UPDATE", hosted.uri, rows) if rows else None

    def update(
        self,
        hosted: HostedTable,
        compiled: CompiledPredicates,
        values: dict[str, Cell],
        budget: Budget | None = None,
        found: Targets | None = None,
    ) -> int | None:
        """The rows updated; None (nothing done) if the table changed since the rows were `found`."""
        if self._stale(found):
            return None
        grown: dict[str, int] = {}
        with self._writing(budget) as conn:
            count, change = self._update(conn, hosted, compiled, values, grown, found)
            self._commit_and_notify(conn, [change] if change else [], [hosted] if count else [])
        self._added(grown)
        return count

    def batch_update(
        self,
        ops: Sequence[tuple[HostedTable, CompiledPredicates, dict[str, Cell]]],
        budget: Budget | None = None,
        found: Sequence[Targets | None] = (),
    ) -> list[int] | None:
        """Every operation in one transaction: all apply or none. An operation with rows `found` on a
        reader updates those; None (nothing done) if a table changed since."""
        if any(map(self._stale, found)):
            return None
        counts, changes, written = [], [], {}
        grown: dict[str, int] = {}
        with self._writing(budget) as conn:
            for (hosted, compiled, values), rows in zip(ops, found or repeat(None), strict=False):
                count, change = self._update(conn, hosted, compiled, values, grown, rows)
                counts.append(count)
                if change:
                    changes.append(change)
                if count:
                    written[hosted.uri] = hosted
            self._commit_and_notify(conn, changes, list(written.values()))
        self._added(grown)
        return counts

    def delete(
        self,
        hosted: HostedTable,
        compiled: CompiledPredicates,
        budget: Budget | None = None,
        found: Targets | None = None,
    ) -> int | None:
        """The rows deleted: those the predicates select, or those `found` on a reader (by primary
        key); None (nothing done) if the table changed since they were found."""
        if self._stale(found):
            return None
        mirrors = self._mirrored(hosted)
        wheres = _wheres(hosted, compiled, found)
        with self._writing(budget) as conn:
            freed = stored_bytes(conn, hosted, wheres[0])[1] if found is None and self._ledger else 0
            grown = self._admit(conn, hosted, -(found.size if found is not None else freed))
            try:
                stmt = sa.delete(hosted.table)
                count, rows = self._execute_writes(conn, hosted, stmt, wheres, mirrors is not None)
            except IntegrityError as exc:
                raise _integrity(hosted, exc) from None
            if mirrors is not None:
                mirrors.record(conn, hosted, deleted=[r[hosted.spec.primary_key] for r in rows])
            changes = [Change("DELETE", hosted.uri, rows)] if rows else []
            self._commit_and_notify(conn, changes, [hosted] if count else [])
        self._added(grown)
        return count

    def _execute_writes(
        self,
        conn: sa.Connection,
        hosted: HostedTable,
        stmt: sa.Update | sa.Delete,
        wheres: Sequence[sa.ColumnElement[bool] | None],
        rows_needed: bool = False,
    ) -> tuple[int, tuple[dict[str, Any], ...]]:
        """Runs an UPDATE or DELETE once per WHERE: the row count and, only when someone subscribed
        (or they are `rows_needed`), the rows."""
        returning = rows_needed or self._feed.has_subscribers(hosted.uri)
        count = 0
        rows: tuple[dict[str, Any], ...] = ()
        for where in wheres:
            one = stmt if where is None else stmt.where(where)
            if not returning:
                count += conn.execute(one).rowcount
                continue
            rows += tuple(r._asdict() for r in conn.execute(one.returning(*hosted.table.c)))
        return (len(rows), rows) if returning else (count, ())

    def _stale(self, found: Targets | None) -> bool:
        """Whether rows were found on a reader in a snapshot that is not the table's state now."""
        return found is not None and (found.at < 0 or self.counts.get(found.table) != found.at)

    def find(
        self,
        ops: Sequence[tuple[HostedTable, sa.ColumnElement[bool] | None, Sequence[str] | None] | None],
        budget: Budget | None = None,
    ) -> list[Targets | None]:
        """On a reader: the rows each (table, WHERE, columns it sets; None: it deletes) operation
        selects, with their bytes for the quota; None where an operation is not found here."""
        with self._engine.connect() as conn, self._db.watchdog.guard(conn, budget):
            out: list[Targets | None] = []
            for op in ops:
                if op is None:
                    out.append(None)
                    continue
                hosted, where, setting = op
                self._mirrored(hosted)  # a distributed table while sync is off: Unavailable, as a write
                out.append(find(conn, self.counts, hosted, where, setting, self._ledger is not None))
            return out

    def query(
        self,
        hosted: HostedTable,
        compiled: CompiledPredicates,
        columns: list[str] | None,
        page_rows: int,
        budget: Budget | None = None,
    ) -> tuple[list[str], Iterator[Sequence[Any]], sa.Connection]:
        """Opens a read cursor: the column names, an iterator of pages, and the connection to close.
        Each page (the first with the statement's start) is fetched within `budget`."""
        stmt = build_select(hosted.table, compiled, columns)
        conn = self._engine.connect()
        guard = functools.partial(self._db.watchdog.guard, conn, budget)
        try:
            if conn.dialect.name == "sqlite":
                # SQLite's cursor already streams: fetch plain tuples from it and apply the few
                # result processors (int → bool) a column at a time, instead of building Row objects
                with guard():
                    result = conn.execute(stmt)
                names = list(result.keys())
                procs = [
                    c.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
                    for c in stmt.selected_columns
                ]
                return names, _tuple_pages(result.cursor, page_rows, procs, guard), conn
            # elsewhere (PostgreSQL) yield_per makes SQLAlchemy use a server-side cursor
            with guard():
                result = conn.execution_options(yield_per=page_rows).execute(stmt)
            names = list(result.keys())
            later = functools.partial(guard, first=False)  # each FETCH runs under the same timeout
            return names, _guarded_pages(iter(result.partitions(page_rows)), later), conn
        except BaseException:
            conn.close()
            raise


def _tuple_pages(
    cursor: Any, page_rows: int, procs: list[Any], guard: Callable[[], AbstractContextManager[None]]
) -> Iterator[Sequence[Any]]:
    """Pages of row tuples from a DBAPI cursor, with result processors applied column-wise."""
    todo = [(i, p) for i, p in enumerate(procs) if p is not None]
    try:
        yield from _tuple_pages_of(cursor, page_rows, todo, guard)
    finally:
        cursor.close()


def _tuple_pages_of(
    cursor: Any,
    page_rows: int,
    todo: list[tuple[int, Any]],
    guard: Callable[[], AbstractContextManager[None]],
) -> Iterator[Sequence[Any]]:
    while True:
        with guard():
            rows = cursor.fetchmany(page_rows)
        if not rows:
            return
        if todo:
            cols = list(zip(*rows, strict=True))
            for i, proc in todo:
                cols[i] = tuple(map(proc, cols[i]))
            rows = list(zip(*cols, strict=True))
        yield rows


def _guarded_pages(
    pages: Iterator[Sequence[Any]], guard: Callable[[], AbstractContextManager[None]]
) -> Iterator[Sequence[Any]]:
    while True:
        with guard():
            page = next(pages, None)
        if page is None:
            return
        yield page


def _wheres(
    hosted: HostedTable, compiled: CompiledPredicates, found: Targets | None
) -> list[sa.ColumnElement[bool] | None]:
    """The WHEREs an UPDATE or DELETE runs with: the predicates', or primary keys in chunks."""
    if found is None:
        return [build_where_for_write(hosted.table, compiled, hosted.pk)]
    return list(key_chunks(hosted.pk, found.keys))


def _runs(
    names: Sequence[str], columns: Sequence[Sequence[Cell]], absent: Sequence[Sequence[int]]
) -> list[list[dict[str, Cell]]]:
    """Row dicts in runs of consecutive rows that give the same columns (one run when all give all)."""
    if not any(absent):  # C-level: one dict per row without a Python frame per row
        return [list(map(dict, map(zip, repeat(names), zip(*columns, strict=True))))]
    skip = [set(a) for a in absent]
    runs: list[list[dict[str, Cell]]] = []
    keys: tuple[str, ...] | None = None
    for i, vals in enumerate(zip(*columns, strict=True)):
        row = {n: v for n, v, s in zip(names, vals, skip, strict=True) if i not in s}
        if tuple(row) != keys:
            runs.append([])
            keys = tuple(row)
        runs[-1].append(row)
    return runs


def _sync_sequence(conn: sa.Connection, hosted: HostedTable) -> None:
    """After a write that set an integer primary key explicitly, PostgreSQL's sequence must move past
    it, or the next generated id collides (SQLite picks max + 1 by itself)."""
    if conn.dialect.name != "postgresql" or hosted.spec.column(hosted.spec.primary_key).type != "integer":
        return
    t, pk = hosted.table, hosted.pk
    next_id = sa.select(sa.func.coalesce(sa.func.max(pk), 0) + 1).scalar_subquery()
    conn.execute(sa.select(sa.func.setval(sa.func.pg_get_serial_sequence(t.name, pk.name), next_id, False)))


def _integrity(hosted: HostedTable, exc: IntegrityError) -> Exception:
    text = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
    if "UNIQUE" in text.upper() or "duplicate key" in text:
        return AlreadyExists(f"a row with that primary key already exists in {hosted.uri} ({text})")
    return InvalidArgument(f"constraint failed in {hosted.uri}: {text}")

"""The rows an Update or Delete writes, found on a reader, so that no predicate runs on the writer.

A costly predicate (a pattern over big text, a scan of a large table) would hold the one writer
thread that every app's writes wait for, and SQLite checks an interrupt only between rows: one LIKE
over one 800 KB value cannot be cut short. So DataShare finds the target rows on a reader thread (under
the call's budget) and the writer then changes exactly those rows by primary key.

That is exact only if no row changed in between. `WriteCounts` counts, per table, the commits that
changed or removed rows (updates, deletes, rows applied by sync, schema changes); the writer bumps a
table's count after each such commit. New rows need no count: the write is then as if it came
before their inserts (it writes rows they did not touch). The reader reads the count before and
after its snapshot is taken: equal, the snapshot holds every change up to that count (a change
counted later could at worst already be in it, which makes the two look different, never the same).
The writer applies the change only if the count is still the same; otherwise the caller finds the
rows again, and after a few tries runs the whole statement on the writer (under the budget).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import operators, visitors

from datamgr.datashare.tables import HostedTable
from datamgr.datashare.usage import bytes_expr

RETRIES = 2  # finds after the first one before the statement runs on the writer
CHUNK = 500  # primary keys per `pk IN (...)` statement on the writer
_CHEAP = operators.eq
_CHEAP_OPS = frozenset(
    {
        operators.eq,
        operators.ne,
        operators.lt,
        operators.le,
        operators.gt,
        operators.ge,
        operators.in_op,
        operators.not_in_op,
        operators.is_,
        operators.is_not,
        operators.between_op,
        operators.not_between_op,
        operators.and_,
        operators.or_,
        operators.inv,
    }
)


class WriteCounts:
    """Per table name: how many committed writes changed or removed its rows since the daemon
    started. Bumped only by the writer thread, after the commit; read from any thread."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def get(self, table: str) -> int:
        return self._counts.get(table, 0)

    def bump(self, table: str) -> None:
        self._counts[table] = self._counts.get(table, 0) + 1


@dataclass(frozen=True, slots=True)
class Targets:
    """The rows a write's WHERE selected in one snapshot of `table`: their primary keys, and the bytes
    of the columns the quota counts. `at` is the table's write count of that snapshot (-1: it changed
    while the snapshot was taken)."""

    table: str
    at: int
    keys: tuple[Any, ...]
    size: int


def referenced(where: sa.ColumnElement[bool] | None) -> tuple[frozenset[str], bool]:
    """The columns `where` reads, and whether it does anything but compare and combine (patterns,
    subqueries)."""
    if where is None:
        return frozenset(), False
    names, other = set(), False
    for element in visitors.iterate(where):
        if isinstance(element, sa.Column):
            names.add(element.name)
        elif isinstance(element, sa.Select | sa.FunctionElement):
            other = True
        elif getattr(element, "operator", _CHEAP) not in _CHEAP_OPS:
            other = True  # a pattern, or anything else that is not a plain comparison
    return frozenset(names), other


def costly(hosted: HostedTable, where: sa.ColumnElement[bool] | None) -> bool:
    """Whether `where` may take long: anything but comparisons of the primary key (an index lookup)."""
    names, other = referenced(where)
    return other or bool(names - {hosted.spec.primary_key})


def found_on_reader(
    ops: Sequence[tuple[HostedTable, sa.ColumnElement[bool] | None, Sequence[str]]],
) -> list[bool]:
    """Which operations of one transaction (table, WHERE, columns set) may have their rows found
    beforehand: a costly WHERE, unless an earlier operation on the same table sets a column it reads or
    sets (then the rows, or their bytes, depend on that earlier write, and the writer evaluates it). A
    batch that sets a primary key runs wholly on the writer."""
    if any(h.spec.primary_key in values for h, _, values in ops):
        return [False] * len(ops)
    setting: dict[str, set[str]] = {}
    out = []
    for hosted, where, values in ops:
        earlier = setting.setdefault(hosted.table.name, set())
        names, other = referenced(where)
        reads = other or bool(names - {hosted.spec.primary_key})
        out.append(reads and not ((names | set(values)) & earlier))
        earlier.update(values)
    return out


def find(
    conn: sa.Connection,
    counts: WriteCounts,
    hosted: HostedTable,
    where: sa.ColumnElement[bool] | None,
    size_of: Sequence[str] | None,
    sized: bool,
) -> Targets:
    """The primary keys `where` selects in one snapshot (one statement) on a reader's `conn`, with the
    bytes of the `size_of` columns (None: whole rows) when `sized`."""
    name = hosted.table.name
    size = bytes_expr(hosted, conn.dialect.name, size_of) if sized else sa.literal(0)
    stmt = sa.select(hosted.pk, size)
    if where is not None:
        stmt = stmt.where(where)
    before = counts.get(name)
    rows = conn.execute(stmt).all()  # the snapshot is taken when the statement starts
    after = counts.get(name)
    keys, size = tuple(r[0] for r in rows), sum(r[1] for r in rows)
    return Targets(name, before if before == after else -1, keys, size)


def key_chunks(pk: sa.Column[Any], keys: Sequence[Any]) -> Iterator[sa.ColumnElement[bool]]:
    """`pk IN (...)` for the keys, a bounded number at a time (databases cap bound parameters)."""
    for i in range(0, len(keys), CHUNK):
        yield pk.in_(keys[i : i + CHUNK])

"""The bytes DataShare rows take, counted the same way in Python (values about to be written) and in
SQL (rows about to be updated or deleted), so the provider's usage (`datamgr.quota`) stays exact.

A text value counts its UTF-8 bytes, a blob its bytes, any other non-null value 8, NULL nothing, and
every row `ROW_OVERHEAD` more. Python counts a column at a time in C-level passes: a batch of ten
thousand rows must not pay a Python call per value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from datamgr.datashare.tables import HostedTable
from datamgr.quota import ROW_OVERHEAD

FIXED = 8  # integer, real, boolean


def cell_bytes(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    return FIXED


def column_bytes(col_type: str, values: Sequence[Any]) -> int:
    """The bytes of one column's values (as `cell_bytes` summed, without a call per value)."""
    if col_type == "text":
        given = list(filter(None, values))
        if all(map(str.isascii, given)):
            return sum(map(len, given))
        return sum(map(len, map(str.encode, given)))
    if col_type == "blob":
        return sum(map(len, filter(None, values)))
    return FIXED * (len(values) - values.count(None))


def _absent_bytes(hosted: HostedTable, name: str) -> int:
    """What a column not given on insert holds: its default, or the generated integer key."""
    col = hosted.spec.column(name)
    if col.default is not None:
        return cell_bytes(col.default)
    if name == hosted.spec.primary_key and col.type == "integer":
        return FIXED
    return 0


def insert_bytes(
    hosted: HostedTable,
    names: Sequence[str],
    columns: Sequence[Sequence[Any]],
    absent: Sequence[Sequence[int]] = (),
) -> int:
    """The bytes a batch insert adds (rows that leave a column out get its default)."""
    if not columns or not columns[0]:
        return 0
    rows = len(columns[0])
    total = rows * ROW_OVERHEAD
    given = set(names)
    for i, name in enumerate(names):
        total += column_bytes(hosted.spec.column(name).type, columns[i])
        if absent and absent[i]:
            total += len(absent[i]) * _absent_bytes(hosted, name)
    for col in hosted.spec.columns:
        if col.name not in given:
            total += rows * _absent_bytes(hosted, col.name)
    return total


def row_bytes(hosted: HostedTable, row: Mapping[str, Any]) -> int:
    """The bytes of one stored row (all its columns, as read back)."""
    return ROW_OVERHEAD + sum(cell_bytes(row.get(c.name)) for c in hosted.spec.columns)


def values_bytes(values: Mapping[str, Any]) -> int:
    """The bytes the given columns of one row take."""
    return sum(cell_bytes(v) for v in values.values())


def _sql_bytes(hosted: HostedTable, name: str, dialect: str) -> sa.ColumnElement[Any]:
    c = hosted.table.c[name]
    col_type = hosted.spec.column(name).type
    if col_type == "text":
        n = sa.func.octet_length(c) if dialect == "postgresql" else sa.func.length(sa.cast(c, sa.LargeBinary))
        return sa.func.coalesce(n, 0)
    if col_type == "blob":
        return sa.func.coalesce(sa.func.length(c), 0)
    return sa.case((c.is_(None), 0), else_=FIXED)


def bytes_expr(
    hosted: HostedTable, dialect: str, columns: Sequence[str] | None = None
) -> sa.ColumnElement[Any]:
    """SQL for the bytes of one stored row: of the named `columns`, or of the whole row (with its
    overhead) when None."""
    names = [c.name for c in hosted.spec.columns] if columns is None else list(columns)
    size: sa.ColumnElement[Any] = sa.literal(ROW_OVERHEAD if columns is None else 0)
    for name in names:
        size = size + _sql_bytes(hosted, name, dialect)
    return size


def stored_bytes(
    conn: sa.Connection,
    hosted: HostedTable,
    where: sa.ColumnElement[bool] | None = None,
    columns: Sequence[str] | None = None,
) -> tuple[int, int]:
    """(rows, bytes) of the stored rows `where` selects (all rows when None): of the named
    `columns` only, or of whole rows (with their overhead) when None."""
    size = bytes_expr(hosted, conn.dialect.name, columns)
    stmt = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(size), 0)).select_from(hosted.table)
    if where is not None:
        stmt = stmt.where(where)
    rows, total = conn.execute(stmt).one()
    return int(rows), int(total)

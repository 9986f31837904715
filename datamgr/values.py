"""Conversions between Python values and the wire messages (Value, Column, Page).

Python cell values are `None | int | float | str | bool | bytes` (an OpenHarmony ValuesBucket value).
Pages travel column-wise so that a page of thousands of rows encodes with a few `extend` calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from datamgr.errors import InvalidArgument
from datamgr.v1 import types_pb2

Cell = None | int | float | str | bool | bytes

DT = types_pb2.DataType
_PLACEHOLDER: dict[int, Any] = {
    DT.DATA_TYPE_LONG: 0,
    DT.DATA_TYPE_DOUBLE: 0.0,
    DT.DATA_TYPE_STRING: "",
    DT.DATA_TYPE_BLOB: b"",
    DT.DATA_TYPE_BOOL: False,
}
_FIELD = {
    DT.DATA_TYPE_LONG: "ints",
    DT.DATA_TYPE_DOUBLE: "doubles",
    DT.DATA_TYPE_STRING: "strings",
    DT.DATA_TYPE_BLOB: "blobs",
    DT.DATA_TYPE_BOOL: "bools",
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def data_type_of(value: Cell) -> int:
    """The DataType of one Python value."""
    if value is None:
        return DT.DATA_TYPE_NULL
    if isinstance(value, bool):
        return DT.DATA_TYPE_BOOL
    if isinstance(value, int):
        return DT.DATA_TYPE_LONG
    if isinstance(value, float):
        return DT.DATA_TYPE_DOUBLE
    if isinstance(value, str):
        return DT.DATA_TYPE_STRING
    if isinstance(value, (bytes, bytearray, memoryview)):
        return DT.DATA_TYPE_BLOB
    raise InvalidArgument(
        f"unsupported value type {type(value).__name__}: use int, float, str, bool, bytes or None"
    )


def to_value(value: Cell) -> types_pb2.Value:
    v = types_pb2.Value()
    set_value(v, value)
    return v


def set_value(v: types_pb2.Value, value: Cell) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidArgument(f"integer {value} does not fit in 64 bits")
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, str):
        v.string_value = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        v.bytes_value = bytes(value)
    else:
        raise InvalidArgument(
            f"unsupported value type {type(value).__name__}: use int, float, str, bool, bytes or None"
        )


def from_value(v: types_pb2.Value) -> Cell:
    kind = v.WhichOneof("kind")
    return None if kind is None else getattr(v, kind)


def to_bucket(values: Mapping[str, Cell], target: Any) -> None:
    """Fills a `map<string, Value>` field from a dict."""
    for key, value in values.items():
        if not isinstance(key, str):
            raise InvalidArgument(f"column names must be strings, got {key!r}")
        set_value(target[key], value)


def from_bucket(values: Mapping[str, types_pb2.Value]) -> dict[str, Cell]:
    return {key: from_value(v) for key, v in values.items()}


_KIND_OF_TYPE = {
    int: DT.DATA_TYPE_LONG,
    float: DT.DATA_TYPE_DOUBLE,
    str: DT.DATA_TYPE_STRING,
    bytes: DT.DATA_TYPE_BLOB,
    bool: DT.DATA_TYPE_BOOL,
}
_NONE = type(None)


def encode_column(values: Sequence[Cell], col: types_pb2.Column, declared: int | None = None) -> None:
    """Fills `col` with `values`; `declared` is the column's DataType when known (used for all-NULL columns).

    Type detection is one C-level pass (`set(map(type, ...))`); a homogeneous column is one `extend`.
    """
    types = set(map(type, values))
    nulls = _NONE in types
    types.discard(_NONE)
    if not types:
        col.type = declared if declared in _FIELD else DT.DATA_TYPE_NULL  # type: ignore[assignment]
        if values:
            col.null_rows.extend(range(len(values)))
            if col.type in _FIELD:
                getattr(col, _FIELD[col.type]).extend([_PLACEHOLDER[col.type]] * len(values))
        return
    kind = _KIND_OF_TYPE.get(types.pop()) if len(types) == 1 else None
    if kind is None:  # mixed types, or bytearray/memoryview/subclasses: one Value per cell
        col.type = DT.DATA_TYPE_UNSPECIFIED
        col.mixed.extend(to_value(x) for x in values)
        return
    col.type = kind
    field = getattr(col, _FIELD[kind])
    if nulls:
        placeholder = _PLACEHOLDER[kind]
        col.null_rows.extend(i for i, x in enumerate(values) if x is None)
        values = [placeholder if x is None else x for x in values]
    try:
        field.extend(values)
    except ValueError as exc:  # an int out of 64-bit range
        raise InvalidArgument(f"value out of range: {exc}") from None


def decode_column(col: types_pb2.Column) -> list[Cell]:
    if col.type == DT.DATA_TYPE_UNSPECIFIED:
        return [from_value(v) for v in col.mixed]
    field = _FIELD.get(col.type)
    if field is None:  # all NULL
        return [None] * len(col.null_rows)
    values: list[Cell] = list(getattr(col, field))
    for i in col.null_rows:
        if i >= len(values):
            raise InvalidArgument(f"null row {i} out of range")
        values[i] = None
    return values


def encode_page(
    columns: Sequence[Sequence[Cell]],
    page: types_pb2.Page,
    declared: Sequence[int] | None = None,
    absent: Sequence[Sequence[int]] | None = None,
) -> None:
    """Fills `page` from column-wise values (all columns the same length); `absent[i]` lists the rows
    where column i was not given (sent as NULL and marked absent)."""
    page.row_count = len(columns[0]) if columns else 0
    for i, values in enumerate(columns):
        col = page.columns.add()
        encode_column(values, col, declared[i] if declared else None)
        if absent and absent[i]:
            col.absent_rows.extend(absent[i])


def encode_rows(
    rows: Sequence[Sequence[Cell]], ncols: int, page: types_pb2.Page, declared: Sequence[int] | None = None
) -> None:
    """Fills `page` from row tuples."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * ncols
    encode_page(columns, page, declared)
    page.row_count = len(rows)


def decode_page(page: types_pb2.Page) -> list[list[Cell]]:
    """Column-wise values of a page; checks every column has `row_count` values."""
    columns = [decode_column(c) for c in page.columns]
    for values in columns:
        if len(values) != page.row_count:
            raise InvalidArgument(f"page column has {len(values)} values, expected {page.row_count}")
    return columns


def page_absent(page: types_pb2.Page) -> list[list[int]]:
    """Per column, the rows where the value was not given (checked to be NULL rows in range)."""
    absent = []
    for col in page.columns:
        rows = list(col.absent_rows)
        if rows and (max(rows) >= page.row_count or not set(rows) <= set(col.null_rows)):
            raise InvalidArgument("absent rows must be NULL rows within the page")
        absent.append(rows)
    return absent


def rows_to_columns(
    rows: Iterable[Mapping[str, Cell]],
) -> tuple[list[str], list[list[Cell]], list[list[int]]]:
    """Column names, column-wise values and, per column, the rows that lack the key (ValuesBuckets
    need not all have the same keys: a missing key means the column default, not NULL)."""
    rows = list(rows)
    if not rows:
        return [], [], []
    keys = rows[0].keys()
    if all(r.keys() == keys for r in rows):
        # every row gives the same columns: one C-level pass per column
        cols = list(keys)
        if len(cols) == 1:
            return cols, [[r[cols[0]] for r in rows]], [[]]
        return cols, [list(c) for c in zip(*map(itemgetter(*cols), rows), strict=True)], [[] for _ in cols]
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    cols = list(names)
    absent: list[list[int]] = [[] for _ in cols]
    for i, name in enumerate(cols):
        absent[i] = [r for r, row in enumerate(rows) if name not in row]
    return cols, [[row.get(c) for row in rows] for c in cols], absent

"""DataSharePredicates: OpenHarmony's chainable filter builder, spelled in snake_case.

The builder only records operations; it never builds SQL. The daemon compiles the recorded ops
(`datamgr.datashare._compile`) against a known table, and that is where untrusted input is checked.

    DataSharePredicates().equal_to("name", "Rose").or_().greater_than("age", 30).limit(10)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from datamgr.errors import InvalidArgument
from datamgr.v1 import datashare_pb2
from datamgr.values import Cell, data_type_of, from_value, set_value

_PREFIX = "PREDICATE_OP_TYPE_"
_ENUM = datashare_pb2.PredicateOpType


@dataclass(frozen=True, slots=True)
class PredicateOp:
    """One recorded operation. `type` is the PredicateOpType name without its prefix, e.g. "EQUAL_TO"."""

    type: str
    field: str = ""
    values: tuple[Cell, ...] = ()
    fields: tuple[str, ...] = ()


# type -> (builder method, argument shape); the shape drives __repr__.
_METHODS: dict[str, tuple[str, str]] = {
    "EQUAL_TO": ("equal_to", "field_value"),
    "NOT_EQUAL_TO": ("not_equal_to", "field_value"),
    "GREATER_THAN": ("greater_than", "field_value"),
    "LESS_THAN": ("less_than", "field_value"),
    "GREATER_THAN_OR_EQUAL_TO": ("greater_than_or_equal_to", "field_value"),
    "LESS_THAN_OR_EQUAL_TO": ("less_than_or_equal_to", "field_value"),
    "AND": ("and_", "none"),
    "OR": ("or_", "none"),
    "BEGIN_WRAP": ("begin_wrap", "none"),
    "END_WRAP": ("end_wrap", "none"),
    "LIKE": ("like", "field_value"),
    "UNLIKE": ("unlike", "field_value"),
    "GLOB": ("glob", "field_value"),
    "CONTAINS": ("contains", "field_value"),
    "BEGINS_WITH": ("begins_with", "field_value"),
    "ENDS_WITH": ("ends_with", "field_value"),
    "IS_NULL": ("is_null", "field"),
    "IS_NOT_NULL": ("is_not_null", "field"),
    "IN": ("in_", "field_list"),
    "NOT_IN": ("not_in", "field_list"),
    "BETWEEN": ("between", "field_values"),
    "NOT_BETWEEN": ("not_between", "field_values"),
    "ORDER_BY_ASC": ("order_by_asc", "field"),
    "ORDER_BY_DESC": ("order_by_desc", "field"),
    "LIMIT": ("limit", "values"),
    "DISTINCT": ("distinct", "none"),
    "GROUP_BY": ("group_by", "fields"),
}
OP_TYPES = frozenset(_METHODS)


def _cell(value: object) -> Cell:
    data_type_of(value)  # type: ignore[arg-type]  # raises InvalidArgument for unsupported types
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value  # type: ignore[return-value]


def _field(field: object) -> str:
    if not isinstance(field, str):
        raise InvalidArgument(f"a field name must be a string, got {type(field).__name__}")
    return field


class DataSharePredicates:
    """A chainable list of filter, order and paging operations; every builder method returns self.

    Conditions are joined by AND unless `or_()` stands between them; AND binds tighter than OR;
    `begin_wrap()`/`end_wrap()` are parentheses. Not thread-safe (like OpenHarmony's).
    """

    __slots__ = ("_ops",)

    def __init__(self, ops: Iterable[PredicateOp] = ()) -> None:
        self._ops: list[PredicateOp] = list(ops)

    @property
    def ops(self) -> tuple[PredicateOp, ...]:
        return tuple(self._ops)

    def __iter__(self) -> Iterator[PredicateOp]:
        return iter(tuple(self._ops))

    def __len__(self) -> int:
        return len(self._ops)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataSharePredicates):
            return NotImplemented
        return self._ops == other._ops

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        calls = [_call_repr(op) for op in self._ops]
        if None in calls:  # an op no builder method makes (e.g. decoded from a bad message)
            return f"DataSharePredicates({self._ops!r})"
        return "DataSharePredicates()" + "".join(calls)  # type: ignore[arg-type]

    def _add(
        self, type_: str, field: str = "", values: Sequence[Cell] = (), fields: Sequence[str] = ()
    ) -> DataSharePredicates:
        self._ops.append(PredicateOp(type_, field, tuple(values), tuple(fields)))
        return self

    def _field_value(self, type_: str, field: str, value: Cell) -> DataSharePredicates:
        return self._add(type_, _field(field), (_cell(value),))

    # ---- comparisons ----

    def equal_to(self, field: str, value: Cell) -> DataSharePredicates:
        return self._field_value("EQUAL_TO", field, value)

    def not_equal_to(self, field: str, value: Cell) -> DataSharePredicates:
        return self._field_value("NOT_EQUAL_TO", field, value)

    def greater_than(self, field: str, value: Cell) -> DataSharePredicates:
        return self._field_value("GREATER_THAN", field, value)

    def less_than(self, field: str, value: Cell) -> DataSharePredicates:
        return self._field_value("LESS_THAN", field, value)

    def greater_than_or_equal_to(self, field: str, value: Cell) -> DataSharePredicates:
        return self._field_value("GREATER_THAN_OR_EQUAL_TO", field, value)

    def less_than_or_equal_to(self, field: str, value: Cell) -> DataSharePredicates:
        return self._field_value("LESS_THAN_OR_EQUAL_TO", field, value)

    # ---- connectives ----

    def and_(self) -> DataSharePredicates:
        return self._add("AND")

    def or_(self) -> DataSharePredicates:
        return self._add("OR")

    def begin_wrap(self) -> DataSharePredicates:
        return self._add("BEGIN_WRAP")

    def end_wrap(self) -> DataSharePredicates:
        return self._add("END_WRAP")

    # ---- patterns ----

    def like(self, field: str, pattern: str) -> DataSharePredicates:
        """SQL LIKE: `%` any run, `_` one character. Case follows the database (SQLite: ASCII-insensitive)."""
        return self._field_value("LIKE", field, pattern)

    def unlike(self, field: str, pattern: str) -> DataSharePredicates:
        return self._field_value("UNLIKE", field, pattern)

    def glob(self, field: str, pattern: str) -> DataSharePredicates:
        """SQLite GLOB: `*`, `?`, `[...]`; case-sensitive."""
        return self._field_value("GLOB", field, pattern)

    def contains(self, field: str, value: str) -> DataSharePredicates:
        """The text contains `value` literally (`%` and `_` in it are not wildcards)."""
        return self._field_value("CONTAINS", field, value)

    def begins_with(self, field: str, value: str) -> DataSharePredicates:
        return self._field_value("BEGINS_WITH", field, value)

    def ends_with(self, field: str, value: str) -> DataSharePredicates:
        return self._field_value("ENDS_WITH", field, value)

    # ---- NULL, sets and ranges ----

    def is_null(self, field: str) -> DataSharePredicates:
        return self._add("IS_NULL", _field(field))

    def is_not_null(self, field: str) -> DataSharePredicates:
        return self._add("IS_NOT_NULL", _field(field))

    def in_(self, field: str, values: Iterable[Cell]) -> DataSharePredicates:
        """An empty list matches no row."""
        return self._add("IN", _field(field), _cells(values))

    def not_in(self, field: str, values: Iterable[Cell]) -> DataSharePredicates:
        """An empty list matches every row."""
        return self._add("NOT_IN", _field(field), _cells(values))

    def between(self, field: str, low: Cell, high: Cell) -> DataSharePredicates:
        """low <= field <= high."""
        return self._add("BETWEEN", _field(field), (_cell(low), _cell(high)))

    def not_between(self, field: str, low: Cell, high: Cell) -> DataSharePredicates:
        return self._add("NOT_BETWEEN", _field(field), (_cell(low), _cell(high)))

    # ---- ordering, paging, grouping ----

    def order_by_asc(self, field: str) -> DataSharePredicates:
        return self._add("ORDER_BY_ASC", _field(field))

    def order_by_desc(self, field: str) -> DataSharePredicates:
        return self._add("ORDER_BY_DESC", _field(field))

    def limit(self, total: int, offset: int = 0) -> DataSharePredicates:
        """At most `total` rows after skipping `offset`; `total == 0` means no limit (OpenHarmony RDB)."""
        for name, n in (("total", total), ("offset", offset)):
            if isinstance(n, bool) or not isinstance(n, int):
                raise InvalidArgument(f"limit {name} must be an int, got {type(n).__name__}")
            if n < 0:
                raise InvalidArgument(f"limit {name} must be >= 0, got {n}")
        return self._add("LIMIT", values=(total, offset))

    def distinct(self) -> DataSharePredicates:
        return self._add("DISTINCT")

    def group_by(self, fields: Sequence[str]) -> DataSharePredicates:
        if isinstance(fields, str):
            raise InvalidArgument("group_by takes a list of field names, not a string")
        if not fields:
            raise InvalidArgument("group_by needs at least one field")
        return self._add("GROUP_BY", fields=[_field(f) for f in fields])

    # ---- wire ----

    def to_proto(self) -> datashare_pb2.Predicates:
        msg = datashare_pb2.Predicates()
        for op in self._ops:
            if op.type not in _METHODS:
                raise InvalidArgument(f"unknown predicate op type {op.type!r}")
            pb = msg.ops.add(type=_ENUM.Value(_PREFIX + op.type), field=op.field, fields=op.fields)
            for value in op.values:
                set_value(pb.values.add(), value)
        return msg

    @classmethod
    def from_proto(cls, msg: datashare_pb2.Predicates) -> DataSharePredicates:
        """Decodes without judging: unknown op types and odd shapes are left to the compiler to refuse."""
        return cls(
            PredicateOp(
                _type_name(pb.type), pb.field, tuple(from_value(v) for v in pb.values), tuple(pb.fields)
            )
            for pb in msg.ops
        )


def _cells(values: Iterable[Cell]) -> list[Cell]:
    if isinstance(values, (str, bytes, bytearray, memoryview)) or not isinstance(values, Iterable):
        raise InvalidArgument(f"expected a list of values, got {type(values).__name__}")
    return [_cell(v) for v in values]


def _type_name(number: int) -> str:
    try:
        name: str = _ENUM.Name(number)
    except ValueError:
        return f"UNKNOWN_{number}"
    return name.removeprefix(_PREFIX)


def _value_repr(value: Cell) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


_SHAPES: dict[str, tuple[bool, int | None, bool]] = {
    # shape: (has field, number of values or None for any, has fields)
    "none": (False, 0, False),
    "field": (True, 0, False),
    "field_value": (True, 1, False),
    "field_values": (True, 2, False),
    "field_list": (True, None, False),
    "fields": (False, 0, True),
    "values": (False, 2, False),
}


def _call_repr(op: PredicateOp) -> str | None:
    """The builder call that records `op`, or None when no builder call does."""
    if op.type not in _METHODS:
        return None
    method, shape = _METHODS[op.type]
    has_field, nvalues, has_fields = _SHAPES[shape]
    if (
        bool(op.field) != has_field
        or bool(op.fields) != has_fields
        or (nvalues is not None and len(op.values) != nvalues)
    ):
        return None
    values = [_value_repr(v) for v in op.values]
    if shape == "field_list":
        args = [repr(op.field), "[" + ", ".join(values) + "]"]
    elif shape == "fields":
        args = [repr(list(op.fields))]
    else:
        args = ([repr(op.field)] if has_field else []) + values
    return f".{method}({', '.join(args)})"

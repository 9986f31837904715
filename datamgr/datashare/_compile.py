"""Compiles DataSharePredicates ops into SQLAlchemy Core constructs for one table.

The ops arrive from the network, so they are checked here: column names are only ever looked up in
`table.c` (never put into SQL), values only reach the database as bound parameters, and every
malformed op list raises InvalidArgument naming the problem and the op's index (`ops[3]`).

Semantics follow OpenHarmony, which turns the op list into a WHERE string: consecutive conditions
are ANDed unless `or()` stands between them, AND binds tighter than OR, and begin_wrap/end_wrap are
parentheses. `limit(total, offset)` follows OpenHarmony's RDB store (`AbsPredicates::Limit`): a
total <= 0 means no limit and an offset <= 0 means none. LIKE's case sensitivity is the database's
(SQLite ignores ASCII case, PostgreSQL does not). NULLs sort first ascending and last descending on
both databases, as in SQLite. GLOB is SQLite's operator there and an equivalent regex on PostgreSQL.
Op lists are bounded (MAX_*) so that hostile ones fail as InvalidArgument, not as database errors,
and so are patterns (`PatternLimits`): one LIKE/GLOB match runs as one uninterruptible step.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from datamgr.datashare.predicates import DataSharePredicates, PredicateOp
from datamgr.errors import InvalidArgument

MAX_WRAP_DEPTH = 32
# SQLite parses `a OR b OR ...` into a tree as deep as the chain and refuses depth 1000; PostgreSQL
# and SQLite cap bound parameters (65535, 32766). Untrusted input gets InvalidArgument well before.
MAX_CONDITIONS = 500
MAX_VALUES = 10_000
# Matching costs up to pattern length x text length per row, in one step that no interrupt reaches
# (SQLite: ~3 ns per pair, so 128 chars over 800 KB of text take ~0.3 s); PostgreSQL refuses long
# regexes. The defaults of datashare.max_pattern_chars and datashare.max_pattern_wildcards.
MAX_PATTERN_CHARS = 128
MAX_PATTERN_WILDCARDS = 16
DIALECTS = ("sqlite", "postgresql")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class CompiledPredicates:
    """The parts of a statement that one predicate list asks for; `where` None means every row."""

    where: ColumnElement[bool] | None
    order_by: tuple[ColumnElement[Any], ...]
    limit: int | None
    offset: int | None
    distinct: bool
    group_by: tuple[sa.Column[Any], ...]
    order_columns: tuple[sa.Column[Any], ...] = ()  # the columns of `order_by`, in the same order


@dataclass(frozen=True, slots=True)
class PatternLimits:
    """Bounds on one pattern: its length (the value of contains/begins_with/ends_with counts too) and
    its wildcards (% _ for like/unlike, * ? [ for glob)."""

    chars: int = MAX_PATTERN_CHARS
    wildcards: int = MAX_PATTERN_WILDCARDS


_WILDCARDS = {"LIKE": "%_", "UNLIKE": "%_", "GLOB": "*?["}


# ---- op kinds ----

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "EQUAL_TO": operator.eq,
    "NOT_EQUAL_TO": operator.ne,
    "GREATER_THAN": operator.gt,
    "LESS_THAN": operator.lt,
    "GREATER_THAN_OR_EQUAL_TO": operator.ge,
    "LESS_THAN_OR_EQUAL_TO": operator.le,
}
_PATTERN = frozenset({"LIKE", "UNLIKE", "GLOB", "CONTAINS", "BEGINS_WITH", "ENDS_WITH"})
_NULL_TEST = frozenset({"IS_NULL", "IS_NOT_NULL"})
_SET = frozenset({"IN", "NOT_IN"})
_RANGE = frozenset({"BETWEEN", "NOT_BETWEEN"})
CONDITIONS = frozenset(_COMPARE) | _PATTERN | _NULL_TEST | _SET | _RANGE
_CONNECTIVES = frozenset({"AND", "OR", "BEGIN_WRAP", "END_WRAP"})

# Python types a column of each SQLAlchemy type accepts (bool is never an int here).
_ACCEPTS: tuple[tuple[type[sa.types.TypeEngine[Any]], str, tuple[type, ...]], ...] = (
    (sa.Boolean, "booleans", (bool,)),
    (sa.Integer, "integers", (int,)),
    (sa.Float, "reals", (int, float)),
    (sa.String, "text", (str,)),
    (sa.LargeBinary, "blobs", (bytes,)),
)


def _name(op: PredicateOp) -> str:
    return op.type.lower()


def _where(i: int, op: PredicateOp) -> str:
    return f"{_name(op)}() at ops[{i}]"


def _column(table: sa.Table, field: str, what: str) -> sa.Column[Any]:
    col = table.c.get(field) if isinstance(field, str) and field else None
    if col is None:
        raise InvalidArgument(
            f"{what}: unknown column {field!r} in {table.info.get('uri') or repr(table.name)}"
        )
    return col


def _accepts(col: sa.Column[Any], what: str) -> tuple[str, tuple[type, ...]]:
    for type_, kind, accepted in _ACCEPTS:
        if isinstance(col.type, type_):
            return kind, accepted
    raise InvalidArgument(f"{what}: column {col.name!r} has a type predicates do not support ({col.type})")


def _bind_type(col: sa.Column[Any], what: str) -> sa.types.TypeEngine[Any]:
    """The type to bind values compared with `col` as. Left to itself, SQLAlchemy types a number by
    the Python value, so PostgreSQL would get `real_col IN (0::INTEGER, 1.5::INTEGER)` (1.5 rounded)
    or an int4 cast that overflows; integers bind as BIGINT and reals as DOUBLE instead."""
    kind = _accepts(col, what)[0]
    if kind == "integers":
        return sa.BigInteger()
    if kind == "reals":
        return sa.Double()
    return col.type


def _bind(col: sa.Column[Any], value: object, what: str) -> sa.BindParameter[Any]:
    return sa.bindparam(None, value, type_=_bind_type(col, what))


def _check_value(col: sa.Column[Any], value: object, what: str) -> object:
    if value is None:
        raise InvalidArgument(f"{what}: NULL never compares equal to anything; use is_null()/is_not_null()")
    kind, accepted = _accepts(col, what)
    if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
        raise InvalidArgument(
            f"{what}: column {col.name!r} holds {kind}, got a {type(value).__name__} value {value!r:.40}"
        )
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidArgument(f"{what}: integer {value} does not fit in 64 bits")
    if isinstance(value, float) and math.isnan(value):
        raise InvalidArgument(f"{what}: NaN cannot be compared")
    if isinstance(value, str) and "\x00" in value:
        raise InvalidArgument(f"{what}: text values cannot contain NUL characters")
    return float(value) if kind == "reals" else value  # type: ignore[arg-type]


def _check_shape(i: int, op: PredicateOp, field: bool, nvalues: int | None, fields: bool = False) -> None:
    """Checks that op carries a field, a number of values (None: any) and grouping fields as it should."""
    what = _where(i, op)
    if field and not op.field:
        raise InvalidArgument(f"{what}: needs a field")
    if not field and op.field:
        raise InvalidArgument(f"{what}: takes no field, got {op.field!r}")
    if nvalues is not None and len(op.values) != nvalues:
        raise InvalidArgument(f"{what}: takes {nvalues} value(s), got {len(op.values)}")
    if fields and not op.fields:
        raise InvalidArgument(f"{what}: needs at least one field")
    if not fields and op.fields:
        raise InvalidArgument(f"{what}: takes no list of fields")


# ---- conditions ----


def _condition(
    i: int, op: PredicateOp, table: sa.Table, dialect: str, limits: PatternLimits
) -> ColumnElement[bool]:
    t, what = op.type, _where(i, op)
    if t in _NULL_TEST:
        _check_shape(i, op, True, 0)
        col = _column(table, op.field, what)
        return col.is_(None) if t == "IS_NULL" else col.is_not(None)
    if t in _SET:
        _check_shape(i, op, True, None)
        col = _column(table, op.field, what)
        values = [_check_value(col, v, what) for v in op.values]
        param = sa.bindparam(None, values, type_=_bind_type(col, what), expanding=True)
        return col.in_(param) if t == "IN" else col.not_in(param)
    nvalues = 2 if t in _RANGE else 1
    _check_shape(i, op, True, nvalues)
    col = _column(table, op.field, what)
    if t in _PATTERN and _accepts(col, what)[0] != "text":
        raise InvalidArgument(f"{what}: needs a text column, {col.name!r} holds {_accepts(col, what)[0]}")
    values = [_check_value(col, v, what) for v in op.values]
    if t in _COMPARE:
        return _COMPARE[t](col, _bind(col, values[0], what))  # type: ignore[no-any-return]
    if t in _RANGE:
        between = col.between(_bind(col, values[0], what), _bind(col, values[1], what))
        return between if t == "BETWEEN" else ~between
    value: str = values[0]  # type: ignore[assignment]
    if len(value) > limits.chars:
        raise InvalidArgument(
            f"{what}: pattern longer than {limits.chars} characters (datashare.max_pattern_chars)"
        )
    if t in _WILDCARDS and (n := sum(map(value.count, _WILDCARDS[t]))) > limits.wildcards:
        raise InvalidArgument(
            f"{what}: pattern with {n} wildcards, more than {limits.wildcards} "
            "(datashare.max_pattern_wildcards)"
        )
    if t == "LIKE":
        return col.like(value)
    if t == "UNLIKE":
        return col.not_like(value)
    if t == "CONTAINS":
        return col.contains(value, autoescape=True)
    if t == "BEGINS_WITH":
        return col.startswith(value, autoescape=True)
    if t == "ENDS_WITH":
        return col.endswith(value, autoescape=True)
    assert t == "GLOB", t
    if dialect == "sqlite":
        return col.op("GLOB", is_comparison=True)(value)
    regex = glob_to_regex(value)
    return sa.false() if regex is None else col.regexp_match(regex)


class _Parser:
    """Recursive descent over the condition/connective ops: or_expr := and_expr (OR and_expr)*,
    and_expr := atom ([AND] atom)*, atom := condition | BEGIN_WRAP or_expr END_WRAP."""

    def __init__(
        self, items: list[tuple[int, PredicateOp]], table: sa.Table, dialect: str, limits: PatternLimits
    ) -> None:
        self.items, self.table, self.dialect, self.limits, self.pos = items, table, dialect, limits, 0

    def parse(self) -> ColumnElement[bool]:
        expr = self.or_expr(0)
        if self.pos < len(self.items):  # or_expr stops only at an END_WRAP
            i, op = self.items[self.pos]
            raise InvalidArgument(f"{_where(i, op)}: no begin_wrap() to close")
        return expr

    def peek(self) -> str | None:
        return self.items[self.pos][1].type if self.pos < len(self.items) else None

    def or_expr(self, depth: int) -> ColumnElement[bool]:
        terms = [self.and_expr(depth)]
        while self.peek() == "OR":
            self.pos += 1
            terms.append(self.and_expr(depth))
        return terms[0] if len(terms) == 1 else sa.or_(*terms)

    def and_expr(self, depth: int) -> ColumnElement[bool]:
        factors = [self.atom(depth)]
        while (t := self.peek()) in ("AND", "BEGIN_WRAP") or t in CONDITIONS:
            if t == "AND":
                self.pos += 1
            factors.append(self.atom(depth))
        return factors[0] if len(factors) == 1 else sa.and_(*factors)

    def atom(self, depth: int) -> ColumnElement[bool]:
        prev = self.items[self.pos - 1] if self.pos else None
        if self.pos == len(self.items):
            assert prev is not None
            if prev[1].type == "BEGIN_WRAP":
                raise InvalidArgument(f"{_where(*prev)}: never closed by end_wrap()")
            raise InvalidArgument(f"{_where(*prev)}: dangling, no condition follows it")
        i, op = self.items[self.pos]
        if op.type in CONDITIONS:
            self.pos += 1
            return _condition(i, op, self.table, self.dialect, self.limits)
        if op.type == "BEGIN_WRAP":
            if depth >= MAX_WRAP_DEPTH:
                raise InvalidArgument(f"{_where(i, op)}: wraps nest deeper than {MAX_WRAP_DEPTH}")
            self.pos += 1
            if self.peek() == "END_WRAP":
                raise InvalidArgument(f"{_where(i, op)}: empty wrap, no condition before end_wrap()")
            expr = self.or_expr(depth + 1)
            if self.peek() != "END_WRAP":
                raise InvalidArgument(f"{_where(i, op)}: never closed by end_wrap()")
            self.pos += 1
            return expr
        # AND, OR or END_WRAP where a condition must stand
        if prev is not None and prev[1].type in ("AND", "OR"):
            raise InvalidArgument(
                f"{_where(*prev)}: dangling, followed by {_name(op)}() instead of a condition"
            )
        if op.type == "END_WRAP":
            raise InvalidArgument(f"{_where(i, op)}: no begin_wrap() to close")
        place = "the start" if prev is None else "the start of a wrap"
        raise InvalidArgument(f"{_where(i, op)}: stands at {place}, with no condition before it")


# ---- the whole list ----


def _int(i: int, op: PredicateOp, value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{_where(i, op)}: {what} must be an integer, got {type(value).__name__}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidArgument(f"{_where(i, op)}: {what} {value} does not fit in 64 bits")
    return value


def compile_predicates(
    ops: DataSharePredicates | Iterable[PredicateOp],
    table: sa.Table,
    dialect: str = "sqlite",
    limits: PatternLimits = PatternLimits(),
) -> CompiledPredicates:
    """Checks and compiles an (untrusted) op list against `table` for `dialect` ("sqlite" or "postgresql")."""
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r}; expected one of {DIALECTS}")
    ops = ops.ops if isinstance(ops, DataSharePredicates) else tuple(ops)
    where_items: list[tuple[int, PredicateOp]] = []
    order_by: list[ColumnElement[Any]] = []
    order_columns: list[sa.Column[Any]] = []
    group_by: list[sa.Column[Any]] = []
    limit: int | None = None
    offset: int | None = None
    limited = distinct = False
    for i, op in enumerate(ops):
        t = op.type
        if t in CONDITIONS or t in _CONNECTIVES:
            if t in _CONNECTIVES:
                _check_shape(i, op, False, 0)
            where_items.append((i, op))
        elif t in ("ORDER_BY_ASC", "ORDER_BY_DESC"):
            _check_shape(i, op, True, 0)
            col = _column(table, op.field, _where(i, op))
            order_columns.append(col)
            if t == "ORDER_BY_ASC":
                order_by.append(col.asc().nulls_first() if dialect == "postgresql" else col.asc())
            else:
                order_by.append(col.desc().nulls_last() if dialect == "postgresql" else col.desc())
        elif t == "LIMIT":
            _check_shape(i, op, False, 2)
            if limited:
                raise InvalidArgument(f"{_where(i, op)}: limit() given more than once")
            limited = True
            total = _int(i, op, op.values[0], "total")
            skip = _int(i, op, op.values[1], "offset")
            limit = total if total > 0 else None
            offset = skip if skip > 0 else None
        elif t == "DISTINCT":
            _check_shape(i, op, False, 0)
            distinct = True
        elif t == "GROUP_BY":
            _check_shape(i, op, False, 0, fields=True)
            group_by.extend(_column(table, f, _where(i, op)) for f in op.fields)
        else:
            raise InvalidArgument(f"ops[{i}]: unknown predicate op type {t!r}")
    conditions = [op for _, op in where_items if op.type in CONDITIONS]
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidArgument(
            f"more than {MAX_CONDITIONS} conditions ({len(conditions)}); use in_() for long lists of values"
        )
    if (nvalues := sum(len(op.values) for op in conditions)) > MAX_VALUES:
        raise InvalidArgument(f"more than {MAX_VALUES} values ({nvalues}) in one predicate list")
    where = _Parser(where_items, table, dialect, limits).parse() if where_items else None
    return CompiledPredicates(
        where, tuple(order_by), limit, offset, distinct, tuple(group_by), tuple(order_columns)
    )


def build_select(
    table: sa.Table, compiled: CompiledPredicates, columns: Iterable[str] | None = None
) -> sa.Select[Any]:
    """SELECT `columns` (None or empty: all, in table order) FROM table with the compiled clauses.

    With group_by only grouped columns may be selected or ordered by, and with distinct only selected
    columns may be ordered by: PostgreSQL refuses anything else, so it is refused on both databases.
    """
    names = list(columns or ())
    cols = [_column(table, n, "select") for n in names] if names else list(table.c)
    if len({c.key for c in cols}) != len(cols):
        raise InvalidArgument(f"select: a column is listed twice in {names!r}")
    if compiled.group_by:
        grouped = {c.key for c in compiled.group_by}
        loose = [c.name for c in (*cols, *compiled.order_columns) if c.key not in grouped]
        if loose:
            raise InvalidArgument(
                f"with group_by(), only grouped columns can be selected or ordered by: {loose}"
            )
    if compiled.distinct:
        selected = {c.key for c in cols}
        loose = [c.name for c in compiled.order_columns if c.key not in selected]
        if loose:
            raise InvalidArgument(f"with distinct(), only selected columns can be ordered by: {loose}")
    stmt = sa.select(*cols)
    if compiled.where is not None:
        stmt = stmt.where(compiled.where)
    if compiled.group_by:
        stmt = stmt.group_by(*compiled.group_by)
    if compiled.distinct:
        stmt = stmt.distinct()
    return _page(stmt, compiled)


def _page(stmt: sa.Select[Any], compiled: CompiledPredicates) -> sa.Select[Any]:
    if compiled.order_by:
        stmt = stmt.order_by(*compiled.order_by)
    # BIGINT: SQLAlchemy would cast to INTEGER, and PostgreSQL refuses a limit over 2**31 - 1 then
    if compiled.limit is not None:
        stmt = stmt.limit(sa.bindparam(None, compiled.limit, type_=sa.BigInteger()))
    if compiled.offset is not None:
        stmt = stmt.offset(sa.bindparam(None, compiled.offset, type_=sa.BigInteger()))
    return stmt


def build_where_for_write(
    table: sa.Table, compiled: CompiledPredicates, pk_column: sa.Column[Any] | str
) -> ColumnElement[bool] | None:
    """The WHERE of an UPDATE or DELETE. With limit/offset it selects the rows by primary key:
    `pk IN (SELECT pk FROM table WHERE ... ORDER BY ... LIMIT ... OFFSET ...)`, which both SQLite and
    PostgreSQL accept. Ordering alone does not change which rows are written, so it is then ignored."""
    if compiled.distinct or compiled.group_by:
        raise InvalidArgument("distinct() and group_by() cannot be used to update or delete")
    if compiled.limit is None and compiled.offset is None:
        return compiled.where
    pk = _column(table, pk_column, "primary key") if isinstance(pk_column, str) else pk_column
    assert pk.table is table, "pk_column must belong to table"
    sub = sa.select(pk)
    if compiled.where is not None:
        sub = sub.where(compiled.where)
    # correlate(None): the subquery keeps its own FROM table instead of binding to the outer row
    return pk.in_(_page(sub, compiled).correlate(None))


# ---- GLOB for PostgreSQL ----


def _regex_char(c: str) -> str:
    # Escaping every ASCII non-alphanumeric is valid in both POSIX AREs and Python; letters and
    # digits must stay bare, as `\` + alphanumeric is a class or escape in both.
    return "\\" + c if c.isascii() and not c.isalnum() else c


def glob_to_regex(pattern: str) -> str | None:
    """An anchored regex (PostgreSQL ARE, also valid Python) matching what SQLite's GLOB matches,
    or None when nothing can match (an unterminated `[`). `*` any run, `?` one character,
    `[...]` a set with ranges, `[^...]` its complement, `]` first in a set is literal."""
    out = ["(?s)^"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c != "[":
            out.append(_regex_char(c))
        else:
            invert = i < n and pattern[i] == "^"
            i += invert
            members: list[str] = []
            if i < n and pattern[i] == "]":
                members.append(_regex_char("]"))
                i += 1
            prior: str | None = None
            while i < n and pattern[i] != "]":
                c = pattern[i]
                if c == "-" and prior is not None and i + 1 < n and pattern[i + 1] != "]":
                    high = pattern[i + 1]
                    if prior < high:  # the range replaces its start; a reversed one adds nothing
                        members[-1] = f"{_regex_char(prior)}-{_regex_char(high)}"
                    prior = None
                    i += 2
                else:
                    members.append(_regex_char(c))
                    prior = c
                    i += 1
            if i >= n:
                return None  # SQLite: a set without its `]` never matches
            i += 1
            out.append("[" + ("^" if invert else "") + "".join(members) + "]")
    out.append("$")
    return "".join(out)

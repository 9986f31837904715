"""Query: OpenHarmony's KV store query builder (snake_case), and its evaluation over a store's entries.

The builder only records operations. `compile_query` checks an op list (it may come from the network)
and `CompiledQuery.select` runs it over `(key, value)` entries in Python, with no database involved.

Field predicates look inside values that are JSON objects in a string (what an OpenHarmony schema
store holds): `equal_to("$.age", 30)` or `equal_to("age", 30)`; `$.a.b` walks nested objects. An entry
whose value is not a JSON-object string matches no field predicate at all (not even `is_null`).
Semantics follow SQLite's `json_extract`, which OpenHarmony queries compile to, with one difference:
values compare only within their kind (number, string, boolean), so `equal_to("f", 1)` does not match
`"1"` or `true`. A missing field is null. Comparisons with null are false, `not_equal_to` and the
`not_in_*` predicates are true for any non-null value that differs. `like` is SQL LIKE (`%`, `_`,
ASCII case ignored; `PatternLimits` bound a pattern). Conditions are ANDed unless `or_()` stands
between them; AND binds tighter than OR; `begin_group()`/`end_group()` are parentheses. Ordering
puts null first ascending, then booleans, numbers, strings, objects; ties keep key order.
`limit(total, offset)` is SQLite's: a negative total means no limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Any, TypeVar

from datamgr.errors import InvalidArgument
from datamgr.kv._like import unbounded
from datamgr.kv._match import LISTS, PATTERNS, Cond, Doc, Node, Or, Scalar, evaluate, order_key

K = TypeVar("K", str, bytes)

MAX_CONDITIONS = 500
MAX_GROUP_DEPTH = 32
MAX_VALUES = 10_000
# The defaults of kv.max_pattern_chars and kv.max_pattern_wildcards (as DataShare's): a match costs up
# to pattern length x value length, and values hold up to 4 MB.
MAX_PATTERN_CHARS = 128
MAX_PATTERN_WILDCARDS = 16
MAX_FIELD_CHARS = 1024
# Entries evaluated between two checks of the query's budget (long matches also check within).
_CHECK_EVERY = 32

_COMPARE = (
    *("EQUAL_TO", "NOT_EQUAL_TO", "GREATER_THAN", "LESS_THAN"),
    *("GREATER_THAN_OR_EQUAL_TO", "LESS_THAN_OR_EQUAL_TO"),
)
_NULLS = ("IS_NULL", "IS_NOT_NULL")
CONDITIONS = frozenset((*_COMPARE, *PATTERNS, *_NULLS, *LISTS))
_CONNECTORS = frozenset(("AND", "OR", "BEGIN_GROUP", "END_GROUP"))
_MODIFIERS = frozenset(("ORDER_BY_ASC", "ORDER_BY_DESC", "LIMIT", "PREFIX_KEY", "DEVICE_ID"))
OP_TYPES = CONDITIONS | _CONNECTORS | _MODIFIERS


@dataclass(frozen=True, slots=True)
class PatternLimits:
    """Bounds on one like/unlike pattern: its length and its wildcards (`%` and `_`)."""

    chars: int = MAX_PATTERN_CHARS
    wildcards: int = MAX_PATTERN_WILDCARDS


@dataclass(frozen=True, slots=True)
class QueryOp:
    """One recorded operation; `type` is the op's name, e.g. "EQUAL_TO"."""

    type: str
    field: str = ""
    values: tuple[Scalar, ...] = ()


def _scalar(value: object, what: str) -> Scalar:
    if not isinstance(value, (str, int, float)):  # bool is an int
        raise InvalidArgument(f"{what} must be a string, number or boolean, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number, got {value}")
    return value


def _list(values: object, kind: str, what: str) -> tuple[Scalar, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidArgument(f"{what} takes a list of {kind}s, got {type(values).__name__}")
    out = tuple(values)
    for v in out:
        is_number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if (kind == "number" and not is_number) or (kind == "string" and not isinstance(v, str)):
            raise InvalidArgument(f"{what} takes a list of {kind}s, got a {type(v).__name__}")
        _scalar(v, what)
    return out


class Query:
    """A chainable KV store query; every builder method returns self. Not thread-safe (as OpenHarmony's)."""

    __slots__ = ("_ops",)

    def __init__(self, ops: Iterable[QueryOp] = ()) -> None:
        self._ops: list[QueryOp] = list(ops)

    @property
    def ops(self) -> tuple[QueryOp, ...]:
        return tuple(self._ops)

    def __iter__(self) -> Iterator[QueryOp]:
        return iter(tuple(self._ops))

    def __len__(self) -> int:
        return len(self._ops)

    def __eq__(self, other: object) -> bool:
        return self._ops == other._ops if isinstance(other, Query) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Query({self._ops!r})"

    def _add(self, type_: str, field: str = "", values: tuple[Scalar, ...] = ()) -> Query:
        if type_ in CONDITIONS or type_ in ("ORDER_BY_ASC", "ORDER_BY_DESC"):
            _path(field, type_.lower())
        self._ops.append(QueryOp(type_, field, values))
        return self

    def reset(self) -> Query:
        """Forgets every recorded op."""
        self._ops.clear()
        return self

    def equal_to(self, field: str, value: Scalar) -> Query:
        return self._add("EQUAL_TO", field, (_scalar(value, "equal_to's value"),))

    def not_equal_to(self, field: str, value: Scalar) -> Query:
        return self._add("NOT_EQUAL_TO", field, (_scalar(value, "not_equal_to's value"),))

    def greater_than(self, field: str, value: Scalar) -> Query:
        return self._add("GREATER_THAN", field, (_scalar(value, "greater_than's value"),))

    def less_than(self, field: str, value: Scalar) -> Query:
        return self._add("LESS_THAN", field, (_scalar(value, "less_than's value"),))

    def greater_than_or_equal_to(self, field: str, value: Scalar) -> Query:
        return self._add("GREATER_THAN_OR_EQUAL_TO", field, (_scalar(value, "the value"),))

    def less_than_or_equal_to(self, field: str, value: Scalar) -> Query:
        return self._add("LESS_THAN_OR_EQUAL_TO", field, (_scalar(value, "the value"),))

    def is_null(self, field: str) -> Query:
        """The field is null or missing."""
        return self._add("IS_NULL", field)

    def is_not_null(self, field: str) -> Query:
        return self._add("IS_NOT_NULL", field)

    def in_number(self, field: str, values: Iterable[int | float]) -> Query:
        return self._add("IN_NUMBER", field, _list(values, "number", "in_number"))

    def in_string(self, field: str, values: Iterable[str]) -> Query:
        return self._add("IN_STRING", field, _list(values, "string", "in_string"))

    def not_in_number(self, field: str, values: Iterable[int | float]) -> Query:
        return self._add("NOT_IN_NUMBER", field, _list(values, "number", "not_in_number"))

    def not_in_string(self, field: str, values: Iterable[str]) -> Query:
        return self._add("NOT_IN_STRING", field, _list(values, "string", "not_in_string"))

    def like(self, field: str, pattern: str) -> Query:
        """SQL LIKE: `%` any run of characters, `_` one character, ASCII case ignored."""
        if not isinstance(pattern, str):
            raise InvalidArgument(f"like takes a string pattern, got {type(pattern).__name__}")
        return self._add("LIKE", field, (pattern,))

    def unlike(self, field: str, pattern: str) -> Query:
        if not isinstance(pattern, str):
            raise InvalidArgument(f"unlike takes a string pattern, got {type(pattern).__name__}")
        return self._add("UNLIKE", field, (pattern,))

    def and_(self) -> Query:
        return self._add("AND")

    def or_(self) -> Query:
        return self._add("OR")

    def begin_group(self) -> Query:
        return self._add("BEGIN_GROUP")

    def end_group(self) -> Query:
        return self._add("END_GROUP")

    def order_by_asc(self, field: str) -> Query:
        return self._add("ORDER_BY_ASC", field)

    def order_by_desc(self, field: str) -> Query:
        return self._add("ORDER_BY_DESC", field)

    def limit(self, total: int, offset: int = 0) -> Query:
        """At most `total` entries (negative: all) after skipping `offset`."""
        for name, n in (("total", total), ("offset", offset)):
            if isinstance(n, bool) or not isinstance(n, int):
                raise InvalidArgument(f"limit's {name} must be an int, got {type(n).__name__}")
        return self._add("LIMIT", values=(total, offset))

    def prefix_key(self, prefix: str) -> Query:
        """Only keys that start with `prefix`."""
        if not isinstance(prefix, str):
            raise InvalidArgument(f"prefix_key takes a string, got {type(prefix).__name__}")
        return self._add("PREFIX_KEY", values=(prefix,))

    def device_id(self, device_id: str) -> Query:
        """Read the key space of this device (DEVICE_COLLABORATION stores)."""
        if not isinstance(device_id, str) or not device_id:
            raise InvalidArgument("device_id takes a non-empty string")
        return self._add("DEVICE_ID", values=(device_id,))


# ---- compiling ----


def _path(field: object, where: str) -> tuple[str, ...]:
    if not isinstance(field, str) or not field:
        raise InvalidArgument(f"{where}: a field name (e.g. '$.name') is required")
    if len(field) > MAX_FIELD_CHARS:
        raise InvalidArgument(f"{where}: field names are at most {MAX_FIELD_CHARS} characters")
    parts = tuple(field.removeprefix("$.").split("."))
    if field == "$" or not all(parts):
        raise InvalidArgument(f"{where}: {field!r} is not a field path like '$.a.b' or 'a.b'")
    return parts


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A checked query: key prefix, device, condition tree, ordering and paging."""

    prefix: str = ""
    device_id: str = ""
    where: Or | None = None
    order: tuple[tuple[tuple[str, ...], bool], ...] = ()  # (path, descending)
    limit: int | None = None
    offset: int = 0

    def matches(self, value: object) -> bool:
        """Whether a value passes the conditions (prefix, ordering and paging aside)."""
        return self.where is None or evaluate(self.where, Doc(value))

    def select(
        self, entries: Iterable[tuple[K, object]], check: Callable[[], None] = unbounded
    ) -> list[tuple[K, object]]:
        """The entries the query returns, in its order; keys (str or UTF-8 bytes) sort first by key.

        `entries` may be a stream: only the matches are kept. `check` (the query's budget) runs every
        few entries and within long matches; what it raises stops the query."""
        text, raw = self.prefix, self.prefix.encode()
        where = self.where
        rows: list[tuple[K, Doc]] = []
        stream = iter(entries)
        while batch := list(islice(stream, _CHECK_EVERY)):
            check()
            for k, v in batch:
                if text and not k.startswith(raw if isinstance(k, bytes) else text):  # type: ignore[arg-type]
                    continue
                doc = Doc(v)
                if where is None or evaluate(where, doc, check):
                    rows.append((k, doc))
        rows.sort(key=itemgetter(0))
        for path, desc in reversed(self.order):  # stable sorts, least significant first
            rows = _ordered(rows, path, desc, check)
        end = None if self.limit is None else self.offset + self.limit
        return [(k, d.value) for k, d in rows[self.offset : end]]


def _ordered(
    rows: list[tuple[K, Doc]], path: tuple[str, ...], desc: bool, check: Callable[[], None]
) -> list[tuple[K, Doc]]:
    """`rows` stably sorted by the field at `path`; the keys are computed with budget checks."""
    keys: list[tuple[int, Any]] = []
    for start in range(0, len(rows), _CHECK_EVERY):
        check()
        keys += [order_key(doc.field(path)) for _, doc in rows[start : start + _CHECK_EVERY]]
    order = sorted(range(len(rows)), key=keys.__getitem__, reverse=desc)  # stable, as list.sort
    return [rows[i] for i in order]


def compile_query(ops: Sequence[QueryOp], patterns: PatternLimits = PatternLimits()) -> CompiledQuery:
    """Checks `ops` and builds the query; InvalidArgument names the first bad op (`ops[3]`)."""
    prefix = device = None
    limit: tuple[int, int] | None = None
    order: list[tuple[tuple[str, ...], bool]] = []
    tokens: list[tuple[int, QueryOp]] = []
    for i, op in enumerate(ops):
        where = f"ops[{i}] {op.type.lower()}"
        if op.type not in OP_TYPES:
            raise InvalidArgument(f"ops[{i}]: unknown query op {op.type!r}")
        if op.type in ("ORDER_BY_ASC", "ORDER_BY_DESC"):
            _no_values(op, where)
            order.append((_path(op.field, where), op.type == "ORDER_BY_DESC"))
        elif op.type in ("PREFIX_KEY", "DEVICE_ID"):
            if op.field or len(op.values) != 1 or not isinstance(op.values[0], str):
                raise InvalidArgument(f"{where}: takes one string")
            if (prefix if op.type == "PREFIX_KEY" else device) is not None:
                raise InvalidArgument(f"{where}: given twice")
            if op.type == "PREFIX_KEY":
                prefix = op.values[0]
            elif not (device := op.values[0]):
                raise InvalidArgument(f"{where}: the device id is empty")
        elif op.type == "LIMIT":
            values = op.values
            if op.field or len(values) != 2 or not all(type(v) is int for v in values):
                raise InvalidArgument(f"{where}: takes two ints (total, offset)")
            if limit is not None:
                raise InvalidArgument(f"{where}: given twice")
            limit = (int(values[0]), int(values[1]))
        else:
            tokens.append((i, op))
    conditions = sum(1 for _, op in tokens if op.type in CONDITIONS)
    if conditions > MAX_CONDITIONS:
        raise InvalidArgument(f"a query may hold at most {MAX_CONDITIONS} conditions, not {conditions}")
    total_values = sum(len(op.values) for op in ops)
    if total_values > MAX_VALUES:
        raise InvalidArgument(f"a query may hold at most {MAX_VALUES} values, not {total_values}")
    where_tree = _Parser(tokens, patterns).parse() if tokens else None
    total, offset = limit if limit is not None else (-1, 0)
    return CompiledQuery(
        prefix or "", device or "", where_tree, tuple(order), None if total < 0 else total, max(offset, 0)
    )


def _no_values(op: QueryOp, where: str) -> None:
    if op.values:
        raise InvalidArgument(f"{where}: takes no values")


def _condition(i: int, op: QueryOp, limits: PatternLimits) -> Cond:
    where = f"ops[{i}] {op.type.lower()}"
    path = _path(op.field, where)
    t, values = op.type, op.values
    if t in _NULLS:
        _no_values(op, where)
    elif t in LISTS:
        _list(values, LISTS[t], where)
    elif len(values) != 1:
        raise InvalidArgument(f"{where}: takes one value, got {len(values)}")
    elif t in PATTERNS:
        if not isinstance(values[0], str):
            raise InvalidArgument(f"{where}: the pattern must be a string")
        if len(values[0]) > limits.chars:
            raise InvalidArgument(
                f"{where}: pattern longer than {limits.chars} characters (kv.max_pattern_chars)"
            )
        if (n := values[0].count("%") + values[0].count("_")) > limits.wildcards:
            raise InvalidArgument(
                f"{where}: pattern with {n} wildcards, more than {limits.wildcards} "
                "(kv.max_pattern_wildcards)"
            )
    else:
        _scalar(values[0], f"{where}: the value")
    return Cond.of(t, path, values)


class _Parser:
    """expr := term (OR term)* ; term := factor (AND? factor)* ; factor := condition | ( expr )."""

    def __init__(self, tokens: list[tuple[int, QueryOp]], patterns: PatternLimits) -> None:
        self._tokens = tokens
        self._patterns = patterns
        self._pos = 0

    def parse(self) -> Or:
        tree = self._expr(0)
        if self._pos < len(self._tokens):
            i, op = self._tokens[self._pos]
            raise InvalidArgument(f"ops[{i}] {op.type.lower()}: no group is open")
        return tree

    def _peek(self) -> tuple[int, QueryOp] | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _expr(self, depth: int) -> Or:
        terms = [self._term(depth)]
        while (tok := self._peek()) is not None and tok[1].type == "OR":
            self._pos += 1
            terms.append(self._term(depth, after=tok))
        return Or(tuple(terms))

    def _term(self, depth: int, after: tuple[int, QueryOp] | None = None) -> tuple[Node, ...]:
        factors = [self._factor(depth, after)]
        while (tok := self._peek()) is not None and tok[1].type not in ("OR", "END_GROUP"):
            if tok[1].type == "AND":
                self._pos += 1
                factors.append(self._factor(depth, after=tok))
            else:
                factors.append(self._factor(depth))
        return tuple(factors)

    def _factor(self, depth: int, after: tuple[int, QueryOp] | None = None) -> Node:
        tok = self._peek()
        if tok is None or tok[1].type in ("AND", "OR", "END_GROUP"):
            if after is not None:
                raise InvalidArgument(f"ops[{after[0]}] {after[1].type.lower()}: no condition follows")
            if tok is None:
                raise InvalidArgument("the query's conditions end with an open group")
            what = "an empty group" if tok[1].type == "END_GROUP" else "nothing before it to join"
            raise InvalidArgument(f"ops[{tok[0]}] {tok[1].type.lower()}: {what}")
        i, op = tok
        self._pos += 1
        if op.type != "BEGIN_GROUP":
            return _condition(i, op, self._patterns)
        if op.field or op.values:
            raise InvalidArgument(f"ops[{i}] begin_group: takes no field or values")
        if depth >= MAX_GROUP_DEPTH:
            raise InvalidArgument(f"ops[{i}] begin_group: groups nest at most {MAX_GROUP_DEPTH} deep")
        inner = self._expr(depth + 1)
        close = self._peek()
        if close is None or close[1].type != "END_GROUP":
            raise InvalidArgument(f"ops[{i}] begin_group: the group is never closed")
        self._pos += 1
        return inner

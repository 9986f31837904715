"""Evaluating a compiled KV query on one entry: the JSON document a value holds, conditions, ordering.

Pure and private to `datamgr.kv.query`, whose docstring states the semantics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datamgr.kv._like import Like, ascii_lower, unbounded

Scalar = str | int | float | bool
PATTERNS = ("LIKE", "UNLIKE")
LISTS = {"IN_NUMBER": "number", "NOT_IN_NUMBER": "number", "IN_STRING": "string", "NOT_IN_STRING": "string"}
MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Cond:
    type: str
    path: tuple[str, ...]
    values: tuple[Scalar, ...]
    # like/unlike: the compiled pattern; in_*/not_in_*: the values by kind (see `_kind`)
    pattern: Like | None = field(default=None, compare=False, repr=False)
    sets: dict[int, frozenset[Scalar]] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, type_: str, path: tuple[str, ...], values: tuple[Scalar, ...]) -> Cond:
        """A condition with what evaluating it on many entries needs prepared once."""
        if type_ in PATTERNS:
            return cls(type_, path, values, pattern=Like(str(values[0])))
        if type_ in LISTS:
            sets: dict[int, set[Scalar]] = {}
            for v in values:
                sets.setdefault(_kind(v), set()).add(v)
            return cls(type_, path, values, sets={k: frozenset(s) for k, s in sets.items()})
        return cls(type_, path, values)


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[tuple[Node, ...], ...]  # OR of ANDs


Node = Cond | Or


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


class Doc:
    """A value and, parsed once when first needed, the JSON object it holds (None if it holds none)."""

    __slots__ = ("_doc", "_lower", "value")

    def __init__(self, value: object) -> None:
        self.value = value
        self._doc: Any = MISSING
        self._lower: dict[tuple[str, ...], str] | None = None

    def doc(self) -> dict[str, Any] | None:
        if self._doc is MISSING:
            self._doc = None
            if isinstance(self.value, str):
                try:
                    parsed = json.loads(self.value, parse_constant=_no_constants)
                except (ValueError, RecursionError):
                    parsed = None
                self._doc = parsed if isinstance(parsed, dict) else None
        return self._doc  # type: ignore[no-any-return]

    def field(self, path: tuple[str, ...]) -> Any:
        """The field's value, None for null or missing; MISSING when the value is no JSON object."""
        node: Any = self.doc()
        if node is None:
            return MISSING
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def lowered(self, path: tuple[str, ...], text: str) -> str:
        """`ascii_lower` of the string field at `path`, computed once for all patterns on it."""
        if self._lower is None:
            self._lower = {}
        low = self._lower.get(path)
        if low is None:
            low = self._lower[path] = ascii_lower(text)
        return low


def _kind(v: Any) -> int:
    """Ordering and comparison class: null 0, boolean 1, number 2, string 3, object or array 4."""
    if v is None or v is MISSING:
        return 0
    if isinstance(v, bool):
        return 1
    if isinstance(v, (int, float)):
        return 2
    return 3 if isinstance(v, str) else 4


def order_key(v: Any) -> tuple[int, Any]:
    kind = _kind(v)
    if kind == 0:
        return (0, 0)
    return (kind, json.dumps(v, sort_keys=True)) if kind == 4 else (kind, v)


def _test(cond: Cond, doc: Doc, check: Callable[[], None]) -> bool:
    v = doc.field(cond.path)
    if v is MISSING:
        return False
    t = cond.type
    if t == "IS_NULL":
        return v is None
    if v is None:
        return False
    if t == "IS_NOT_NULL":
        return True
    if t in PATTERNS:
        if not isinstance(v, str):
            return False
        pattern = cond.pattern or Like(str(cond.values[0]))
        return pattern.match(v, check, doc.lowered(cond.path, v)) == (t == "LIKE")
    kind = _kind(v)
    if t in LISTS:
        sets = cond.sets if cond.sets is not None else Cond.of(t, cond.path, cond.values).sets
        found = kind != 4 and v in sets.get(kind, ())  # type: ignore[union-attr]
        return found if t.startswith("IN_") else not found
    same = [x for x in cond.values if _kind(x) == kind]
    if t == "EQUAL_TO":
        return bool(same) and v == same[0]
    if t == "NOT_EQUAL_TO":
        return not same or v != same[0]
    if not same or kind == 4:
        return False
    x = same[0]
    if t == "GREATER_THAN":
        return bool(v > x)
    if t == "LESS_THAN":
        return bool(v < x)
    if t == "GREATER_THAN_OR_EQUAL_TO":
        return bool(v >= x)
    return bool(v <= x)


def evaluate(node: Node, doc: Doc, check: Callable[[], None] = unbounded) -> bool:
    """Whether `doc` passes `node`; `check` runs between the steps of long pattern matches."""
    if isinstance(node, Cond):
        return _test(node, doc, check)
    return any(all(evaluate(f, doc, check) for f in term) for term in node.terms)

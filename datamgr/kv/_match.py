"""Evaluating a compiled KV query on one entry: the JSON document a value holds, conditions, ordering.

Pure and private to `datamgr.kv.query`, whose docstring states the semantics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Scalar = str | int | float | bool
PATTERNS = ("LIKE", "UNLIKE")
LISTS = {"IN_NUMBER": "number", "NOT_IN_NUMBER": "number", "IN_STRING": "string", "NOT_IN_STRING": "string"}
MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Cond:
    type: str
    path: tuple[str, ...]
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[tuple[Node, ...], ...]  # OR of ANDs


Node = Cond | Or


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


class Doc:
    """A value and, parsed once when first needed, the JSON object it holds (None if it holds none)."""

    __slots__ = ("_doc", "value")

    def __init__(self, value: object) -> None:
        self.value = value
        self._doc: Any = MISSING

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


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _seg_at(text: str, seg: str, at: int) -> bool:
    return len(text) - at >= len(seg) and all(c in ("_", text[at + j]) for j, c in enumerate(seg))


def _seg_find(text: str, seg: str, start: int) -> int:
    for at in range(start, len(text) - len(seg) + 1):
        if _seg_at(text, seg, at):
            return at
    return -1


def like(text: str, pattern: str) -> bool:
    """SQL LIKE without backtracking: the `%`-separated parts match leftmost, in order."""
    text, pattern = text.translate(_ASCII_LOWER), pattern.translate(_ASCII_LOWER)
    parts = pattern.split("%")
    if len(parts) == 1:
        return len(text) == len(pattern) and _seg_at(text, pattern, 0)
    first, *middle, last = parts
    if not _seg_at(text, first, 0):
        return False
    pos = len(first)
    for seg in middle:
        found = _seg_find(text, seg, pos)
        if found < 0:
            return False
        pos = found + len(seg)
    return len(text) - pos >= len(last) and _seg_at(text, last, len(text) - len(last))


def _test(cond: Cond, doc: Doc) -> bool:
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
        return isinstance(v, str) and like(v, str(cond.values[0])) == (t == "LIKE")
    kind = _kind(v)
    same = [x for x in cond.values if _kind(x) == kind]
    if t in LISTS:
        found = any(v == x for x in same)
        return found if t.startswith("IN_") else not found
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


def evaluate(node: Node, doc: Doc) -> bool:
    if isinstance(node, Cond):
        return _test(node, doc)
    return any(all(evaluate(f, doc) for f in term) for term in node.terms)

"""SQL LIKE for KV queries, in bounded steps: a match over a long text checks the query's budget
between steps, so that no single match holds a reader thread (or the GIL) for long.

`%` is any run of characters, `_` one character, ASCII case is ignored (as SQLite's LIKE). The
`%`-separated segments match leftmost, in order, which needs no backtracking: a match costs at most
(text length x longest segment) character comparisons, done in C (`str.find`, or a regex of fixed width
when the segment holds `_`), `_STEP` comparisons at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Character comparisons between two budget checks: a few milliseconds of C.
_STEP = 1 << 21
_MIN_WINDOW = 1024


def unbounded() -> None:
    """A check that never stops anything (tests, and callers without a budget)."""


def ascii_lower(text: str) -> str:
    """`text` with ASCII letters lowered and every other character kept (bytes.lower is ASCII-only;
    surrogatepass keeps lone surrogates, which JSON may hold)."""
    if text.isascii():
        return text.lower()
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


class _Segment:
    """One `%`-free part of a pattern, lowered; `_` in it is any one character."""

    __slots__ = ("_rx", "length", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.length = len(text)
        self._rx: re.Pattern[str] | None = None  # compiled on first use, on the reader thread

    def _regex(self) -> re.Pattern[str]:
        if self._rx is None:
            source = "".join("." if c == "_" else re.escape(c) for c in self.text)
            self._rx = re.compile(source, re.DOTALL)
        return self._rx

    def at(self, text: str, pos: int) -> bool:
        """Whether the segment matches `text` at `pos` (O(segment))."""
        if len(text) - pos < self.length:
            return False
        if "_" not in self.text:
            return text.startswith(self.text, pos)
        return self._regex().match(text, pos) is not None

    def find(self, text: str, start: int, check: Callable[[], None]) -> int:
        """The leftmost position >= `start` where the segment matches, or -1; `check` runs between
        windows of about `_STEP` comparisons."""
        n, width = len(text), self.length
        last = n - width  # the last position a match may start at
        window = max(_MIN_WINDOW, _STEP // max(width, 1))
        literal = "_" not in self.text
        rx = None if literal else self._regex()
        pos = start
        while pos <= last:
            end = min(n, pos + window + width - 1)  # matches starting in [pos, pos + window)
            if rx is None:
                found = text.find(self.text, pos, end)
            else:
                m = rx.search(text, pos, end)
                found = -1 if m is None else m.start()
            if found >= 0:
                return found
            pos += window
            if pos <= last:
                check()
        return -1


class Like:
    """A compiled LIKE pattern; `match` may be called from any thread."""

    __slots__ = ("_first", "_last", "_middle", "_whole")

    def __init__(self, pattern: str) -> None:
        parts = ascii_lower(pattern).split("%")
        self._whole = _Segment(parts[0]) if len(parts) == 1 else None
        self._first = _Segment(parts[0])
        self._middle = tuple(_Segment(p) for p in parts[1:-1] if p)
        self._last = _Segment(parts[-1])

    def match(self, text: str, check: Callable[[], None] = unbounded, lowered: str | None = None) -> bool:
        """Whether `text` matches; `lowered` is `ascii_lower(text)` when the caller has it already."""
        text = ascii_lower(text) if lowered is None else lowered
        if self._whole is not None:
            return len(text) == self._whole.length and self._whole.at(text, 0)
        if not self._first.at(text, 0):
            return False
        pos = self._first.length
        for seg in self._middle:
            found = seg.find(text, pos, check)
            if found < 0:
                return False
            pos = found + seg.length
        last = self._last
        return len(text) - pos >= last.length and last.at(text, len(text) - last.length)


def like(text: str, pattern: str) -> bool:
    """SQL LIKE of `text` against `pattern` (compiles the pattern each call)."""
    return Like(pattern).match(text)

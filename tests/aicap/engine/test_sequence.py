"""A sequence's token spans: exactly the slices of prompt + output, without building that list."""

from __future__ import annotations

from aicap.engine.sequence import Sequence


def test_a_span_is_the_slice_of_all_its_tokens() -> None:
    s = Sequence(1, "com.a", [10, 11, 12, 13], max_tokens=8)
    s.output = [20, 21, 22]
    tokens = s.tokens
    for start in range(len(tokens) + 1):
        for n in range(len(tokens) - start + 1):
            assert s.span(start, n) == tokens[start : start + n], (start, n)

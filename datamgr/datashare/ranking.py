"""Pure parts of retrieval: a user's text as a safe full-text query, and rank fusion.

A query is what an app's user typed: quotes, parentheses, `AND`/`NOT`/`NEAR`, `*`, `-` or a column
filter (`body:`) are FTS5 syntax, and raw they would raise errors or change the query's meaning. Only
its words are kept, each quoted as an FTS5 string (a word is never an operator inside quotes), and
OR-ed: BM25 then ranks the rows that hold more (and rarer) of them first. PostgreSQL gets the same
words for `websearch_to_tsquery`, which never raises on syntax, joined by its `or`.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009), as most hybrid retrievers use
MAX_TERMS = 64  # words of a query kept (a longer one adds little to BM25 and costs a scan per word)
_WORD = re.compile(r"\w+")


def query_words(text: str, max_terms: int = MAX_TERMS) -> list[str]:
    """The distinct words of `text`, lower-cased, in order, at most `max_terms`."""
    words: dict[str, None] = {}
    for match in _WORD.finditer(text):
        word = match.group().lower()
        if word in ("or", "and", "not"):  # operators to websearch_to_tsquery; stop words to BM25 anyway
            continue
        words[word] = None
        if len(words) >= max_terms:
            break
    return list(words)


def fts5_query(text: str, max_terms: int = MAX_TERMS) -> str | None:
    """An FTS5 MATCH expression for `text`: its words quoted and OR-ed (None: it has no words)."""
    words = query_words(text, max_terms)
    return " OR ".join(f'"{w}"' for w in words) or None


def websearch_query(text: str, max_terms: int = MAX_TERMS) -> str | None:
    """The same words for PostgreSQL's `websearch_to_tsquery` (None: no words)."""
    return " or ".join(query_words(text, max_terms)) or None


def rrf(rankings: Iterable[Sequence[K]], k: int = RRF_K) -> list[tuple[K, float]]:
    """Reciprocal rank fusion: each key scores the sum of 1 / (k + rank) over the rankings that hold it
    (rank 1 is the best); best first, ties in the order the keys were first seen."""
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def best_per_key(hits: Iterable[tuple[K, float, str]]) -> list[tuple[K, float, str]]:
    """(key, score, column) hits of several columns: each key once, with its best score and the column
    that gave it; best first."""
    best: dict[K, tuple[K, float, str]] = {}
    for hit in hits:
        old = best.get(hit[0])
        if old is None or hit[1] > old[1]:
            best[hit[0]] = hit
    return sorted(best.values(), key=lambda h: -h[1])

"""Ranking texts that have no index by the words they share with a query (a grounded chat's KV entries):
Okapi BM25 (k1 1.2, b 0.75) with Lucene's idf, ln(1 + (N - n + 0.5) / (n + 0.5)), which stays positive
when a word is in half the texts or more: a store of four entries is a normal case here, and SQLite
FTS5's idf gives such a word no weight at all.

Words are runs of letters and digits, case and diacritics folded, a plural's final s dropped
("Passwords" is "password"), for the texts and the query alike. A text sharing no word with the query
is not ranked. Pure Python and CPU-bound: run it off the event loop.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

K1 = 1.2
B = 0.75
MAX_TERMS = 64  # distinct query words used, in order of first appearance
_WORD = re.compile(r"\w+")


def words(text: str) -> Counter[str]:
    """The words of `text` as ranking compares them, with how often each occurs."""
    found: Counter[str] = Counter()
    for word, times in Counter(_WORD.findall(unicodedata.normalize("NFC", text).casefold())).items():
        found[_fold(word)] += times
    return found


@functools.lru_cache(maxsize=1 << 16)
def _fold(word: str) -> str:
    """`word` without diacritics, and without a plural's final s."""
    word = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def rank(texts: Sequence[str], query: str, k: int) -> list[tuple[int, float]]:
    """The indexes of the `k` texts best matching `query`, best first (ties: the earlier text), with
    their BM25 score s mapped to s / (1 + s), in (0, 1)."""
    terms = list(words(query))[:MAX_TERMS]
    if not terms or not texts or k <= 0:
        return []
    counts: list[dict[str, int]] = []
    lengths: list[int] = []
    for text in texts:
        found = words(text)
        lengths.append(found.total())
        counts.append({t: found[t] for t in terms if t in found})
    n, avg = len(texts), max(sum(lengths) / len(texts), 1.0)
    holding = Counter(w for c in counts for w in c)
    idf = {t: math.log(1 + (n - holding[t] + 0.5) / (holding[t] + 0.5)) for t in terms}
    scored = []
    for i, (c, length) in enumerate(zip(counts, lengths, strict=True)):
        if not c:
            continue
        norm = K1 * (1 - B + B * length / avg)
        s = sum(idf[t] * tf * (K1 + 1) / (tf + norm) for t, tf in c.items())
        scored.append((i, s))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return [(i, s / (1 + s)) for i, s in scored[:k]]

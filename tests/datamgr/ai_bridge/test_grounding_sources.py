"""Grounded chats' KV and UDMF sources on the daemon's side (datamgr.ai_bridge): BM25 ranking of KV
entries against a reference computed by hand, how KV values and UDMF records become passages, and
which call each source kind makes (fakes stand for the data services: only the dispatch is tested)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aicap.grounding import Passage, Source
from datamgr.ai_bridge import lexical
from datamgr.ai_bridge.grounding import AppRetriever, Bounds, value_text

# ---- ranking ----


def bm25(texts: list[list[str]], query: list[str]) -> list[float]:
    """Okapi BM25 with Lucene's idf, written out from the formula."""
    n = len(texts)
    avg = sum(map(len, texts)) / n
    out = []
    for words in texts:
        s = 0.0
        for term in dict.fromkeys(query):
            df = sum(term in other for other in texts)
            tf = words.count(term)
            if tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                s += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(words) / avg))
        out.append(s)
    return out


def test_rank_is_bm25_best_first_and_leaves_out_texts_without_a_query_word() -> None:
    texts = [
        "note/1 the wifi password at the cabin is bluefjord",
        "note/2 the dentist is on tuesday",
        "wifi router in the hall",
        "note/3 water the tomatoes",
        "nothing here",
    ]
    query = "what is the wifi password"
    want = bm25([t.replace("/", " ").split() for t in texts], query.split())
    got = lexical.rank(texts, query, 10)
    order = sorted((i for i, s in enumerate(want) if s > 0), key=lambda i: -want[i])
    assert [i for i, _ in got] == order and 4 not in order
    for i, score in got:
        assert score == pytest.approx(want[i] / (1 + want[i]))
    assert [i for i, _ in lexical.rank(texts, query, 2)] == order[:2]


def test_a_word_in_most_texts_still_counts() -> None:
    """FTS5's idf gives a word in half the texts or more no weight; here it still ranks."""
    texts = ["wifi at home", "wifi at work", "wifi on the train", "the cabin"]
    (best, _), *_ = lexical.rank(texts, "wifi cabin", 4)
    assert best == 3
    assert {i for i, _ in lexical.rank(texts, "wifi", 4)} == {0, 1, 2}


def test_words_fold_case_diacritics_and_plurals() -> None:
    assert lexical.words("Café CAFE cafés Passwords glass bus") == {
        "cafe": 3,
        "password": 1,
        "glass": 1,
        "bus": 1,
    }
    assert lexical.rank(["the password is x"], "PASSWORDS?", 1)[0][0] == 0


def test_queries_without_words_and_ties() -> None:
    assert lexical.rank(["a b c"], '" OR NEAR( * ?', 4) == []
    assert lexical.rank([], "a", 4) == [] and lexical.rank(["a"], "a", 0) == []
    assert [i for i, _ in lexical.rank(["tie x", "tie y", "tie z"], "tie", 3)] == [0, 1, 2]  # earlier first


@given(st.lists(st.text(max_size=60), max_size=12), st.text(max_size=30), st.integers(0, 14))
def test_rank_properties(texts: list[str], query: str, k: int) -> None:
    got = lexical.rank(texts, query, k)
    assert len(got) <= k and len({i for i, _ in got}) == len(got)
    assert all(0 < s < 1 for _, s in got)
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    terms = set(lexical.words(query))
    assert all(terms & set(lexical.words(texts[i])) for i, _ in got)


# ---- passages ----


def test_kv_values_as_text() -> None:
    assert value_text("plain") == "plain"
    assert value_text('{"a": 1}') == '{"a": 1}'
    assert (value_text(3), value_text(2.5), value_text(True)) == ("3", "2.5", "true")
    assert value_text(b"\x00") is None


class Services:
    """Stands for the data services: records the calls each source kind makes."""

    def __init__(self, entries: list[tuple[str, Any]], texts: list[str]) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.entries = entries
        self.texts = texts

    async def datashare(self, *args: Any) -> list[Any]:
        self.calls.append(("datashare", *args))
        return []

    async def kv(self, *args: Any) -> list[tuple[str, Any]]:
        self.calls.append(("kv", *args))
        return self.entries

    async def udmf_check(self, *args: Any) -> None:
        self.calls.append(("udmf_check", *args))

    async def udmf_texts(self, *args: Any) -> list[str]:
        self.calls.append(("udmf_texts", *args))
        return self.texts


BOUNDS = Bounds(scan_entries=100, scan_bytes=1 << 20, udmf_bytes=1 << 22, text_chars=500)


def retriever(s: Services) -> AppRetriever:
    return AppRetriever(s.datashare, s.kv, s.udmf_check, s.udmf_texts, BOUNDS)


def test_a_kv_source_ranks_the_stores_entries_and_cites_their_keys() -> None:
    entries = [
        ("recipes/pancakes", "flour, milk, two eggs"),
        ("recipes/bread", "flour, water, salt, yeast"),
        ("recipes/blob", b"eggs eggs eggs"),  # bytes never enter
        ("recipes/eggs", 12),  # the key matches
    ]
    s = Services(entries, [])
    source = Source("kv://kitchen", 2, kind="kv", store="kitchen", prefix="recipes/")
    got = asyncio.run(retriever(s).retrieve("com.a", source, "how many eggs"))
    assert s.calls == [("kv", "com.a", "kitchen", "recipes/", 100, 1 << 20)]
    assert [(p.uri, p.row_id, p.key, p.text) for p in got] == [
        ("kv://kitchen", -1, "recipes/eggs", "12"),  # the shorter entry holding "egg" ranks first
        ("kv://kitchen", -1, "recipes/pancakes", "flour, milk, two eggs"),
    ]
    assert all(0 < p.score < 1 for p in got)


def test_a_udmf_source_is_one_passage_per_record_with_text() -> None:
    s = Services([], ["first record", "", "third record"])
    key = "udmf://drag/com.b/abc"
    r = retriever(s)
    asyncio.run(r.check("com.a", Source(key, 0, kind="udmf")))
    got = asyncio.run(r.retrieve("com.a", Source(key, 0, kind="udmf"), "ignored"))
    limit = (1 << 22, "ai.max_context_udmf_bytes")
    assert s.calls == [("udmf_check", "com.a", key, limit), ("udmf_texts", "com.a", key, limit, 500)]
    assert got == [Passage(key, 0, 1.0, "first record"), Passage(key, 2, 1.0, "third record")]


def test_checks_only_touch_udmf_and_datashare_goes_where_it_went() -> None:
    s = Services([], [])
    r = retriever(s)
    asyncio.run(r.check("com.a", Source("kv://x", 4, kind="kv", store="x")))
    asyncio.run(r.check("com.a", Source("datashare:///com.b/s/t", 4)))
    assert s.calls == []
    asyncio.run(r.retrieve("com.a", Source("datashare:///com.b/s/t", 3, b"\x01", "q"), "question"))
    assert s.calls == [("datashare", "com.a", "datashare:///com.b/s/t", "question", 3, b"\x01")]

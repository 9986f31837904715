"""Retrieval's pure parts: a user's text as a safe FTS5 / tsquery query, reciprocal rank fusion, and the
manifest's index declarations."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamgr.datashare.manifest import parse_manifest
from datamgr.datashare.ranking import best_per_key, fts5_query, query_words, rrf, websearch_query
from datamgr.errors import InvalidArgument


@pytest.fixture(scope="module")
def fts() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
    db.executemany(
        "INSERT INTO docs(rowid, body) VALUES (?, ?)",
        [
            (1, "How to reset your password"),
            (2, "Running shoes for beginners"),
            (3, 'The "NEAR" operator and body: columns'),
            (4, "café au lait"),
        ],
    )
    return db


def _match(db: sqlite3.Connection, text: str) -> list[int]:
    query = fts5_query(text)
    if query is None:
        return []
    return [r for (r,) in db.execute("SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY rank", (query,))]


def test_words_are_quoted_and_ored() -> None:
    assert fts5_query("reset Password!") == '"reset" OR "password"'
    assert websearch_query("reset Password!") == "reset or password"
    assert fts5_query("  ?!  ") is None
    assert websearch_query("") is None


def test_operators_and_repeats_are_dropped() -> None:
    assert query_words("cats AND dogs or NOT cats") == ["cats", "dogs"]
    assert query_words("a b c d", max_terms=2) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reset my password", [1]),
        ('"reset" NEAR(password', [1, 3]),  # quotes and operators are words, not syntax
        ("body:running", [2, 3]),  # a column filter is not one: both words are searched
        ("run", [2]),  # porter: running -> run
        ("cafe", [4]),  # diacritics removed
        ("* - ^ ( ) :", []),
    ],
)
def test_hostile_queries_search_words(fts: sqlite3.Connection, text: str, expected: list[int]) -> None:
    assert sorted(_match(fts, text)) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_valid_fts5_query(text: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(body, tokenize='porter unicode61')")
    db.execute("INSERT INTO docs(body) VALUES ('some text')")
    _match(db, text)  # never an FTS5 syntax error


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert [key for key, _ in fused] == ["a", "c", "b"]


def test_rrf_ties_keep_first_seen_order_and_empty_rankings() -> None:
    assert [k for k, _ in rrf([["x", "y"], ["y", "x"]])] == ["x", "y"]
    assert rrf([[], []]) == []
    assert [k for k, _ in rrf([[], ["q"]])] == ["q"]


def test_best_per_key_keeps_the_best_column() -> None:
    hits = [(1, 0.5, "title"), (2, 0.9, "body"), (1, 0.7, "body"), (3, 0.1, "title")]
    assert best_per_key(hits) == [(2, 0.9, "body"), (1, 0.7, "body"), (3, 0.1, "title")]


def _manifest(**column: object) -> str:
    return json.dumps(
        {
            "bundle": "com.example.notes",
            "stores": [
                {
                    "name": "main",
                    "tables": [
                        {
                            "name": "notes",
                            "primary_key": "id",
                            "columns": [{"name": "id", "type": "integer"}, {"name": "body", **column}],
                        }
                    ],
                }
            ],
        }
    )


def test_a_text_column_may_be_indexed() -> None:
    m = parse_manifest(_manifest(type="text", index={"vector": True, "fulltext": True}))
    spec = m.stores[0].tables[0]
    assert spec.vector_columns == ("body",) and spec.fulltext_columns == ("body",)
    assert (
        parse_manifest(_manifest(type="text", index={"fulltext": True})).stores[0].tables[0].vector_columns
        == ()
    )
    assert parse_manifest(_manifest(type="text")).stores[0].tables[0].fulltext_columns == ()


@pytest.mark.parametrize("column_type", ["integer", "real", "blob", "boolean"])
def test_only_text_columns_may_be_indexed(column_type: str) -> None:
    with pytest.raises(
        InvalidArgument, match=f"column 'body' is {column_type}: only text columns may be indexed"
    ):
        parse_manifest(_manifest(type=column_type, index={"vector": True}))


def test_unknown_index_kinds_are_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"index\.hnsw: Extra inputs are not permitted"):
        parse_manifest(_manifest(type="text", index={"hnsw": True}))

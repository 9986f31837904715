"""Batch inserts take a column-wise executemany when nobody subscribed and row dicts with RETURNING
when someone did; both must store exactly the same values."""

from __future__ import annotations

from typing import Any

from harness import PEOPLE_URI

ROWS: list[dict[str, Any]] = [
    {"name": "ints into real", "score": 3, "age": 1, "starred": True, "photo": b"\x00\xff"},
    {"name": "nulls", "score": None, "age": None, "starred": None, "photo": None, "phone": None},
    {"name": "floats", "score": 2.5, "age": -(2**63), "starred": False, "photo": b"", "phone": "é\u2603"},
]


def _stored(h: Any) -> list[dict[str, Any]]:
    with h.query(PEOPLE_URI) as rs:
        return [{k: v for k, v in row.items() if k != "id"} for row in rs.rows()]


def test_both_batch_paths_store_the_same_values(contacts) -> None:
    with contacts.daemon.helper(contacts.dialer) as h:
        assert h.batch_insert(PEOPLE_URI, ROWS) == len(ROWS)  # no subscriber: column-wise
        plain = _stored(h)
        h.delete(PEOPLE_URI)
        with h.subscribe(PEOPLE_URI) as sub:
            assert h.batch_insert(PEOPLE_URI, ROWS) == len(ROWS)  # a subscriber: row dicts + RETURNING
            change = sub.next()
        assert _stored(h) == plain
        assert [{k: v for k, v in r.items() if k != "id"} for r in change.values] == plain
    assert plain[0]["score"] == 3.0 and isinstance(plain[0]["score"], float)
    assert plain[0]["starred"] is True and plain[2]["starred"] is False and plain[1]["starred"] is None
    assert plain[2]["age"] == -(2**63) and plain[2]["phone"] == "é\u2603" and plain[2]["photo"] == b""

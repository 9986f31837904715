"""The basic path end to end: provider registers, consumer inserts and queries."""

from __future__ import annotations

from harness import PEOPLE_URI

from datamgr.client import DataSharePredicates


def test_insert_and_query(contacts) -> None:
    with contacts.daemon.helper(contacts.dialer) as h:
        row_id = h.insert(PEOPLE_URI, {"name": "Ada", "age": 36, "photo": b"\x00\x01"})
        assert row_id == 1
        with h.query(
            PEOPLE_URI, DataSharePredicates().equal_to("name", "Ada"), ["id", "name", "photo"]
        ) as rs:
            assert rs.column_names == ["id", "name", "photo"]
            assert rs.go_to_first_row()
            assert (rs.get_long(0), rs.get_string(1), rs.get_blob(2)) == (1, "Ada", b"\x00\x01")
            assert not rs.go_to_next_row()

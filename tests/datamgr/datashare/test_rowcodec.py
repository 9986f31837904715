"""The mirror encoding of distributed tables' rows: keys and rows round-trip exactly (blobs, floats,
booleans, NULLs, any text), and whatever a peer sends that does not fit the local table is refused
with a reason instead of reaching the database."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamgr.datashare._rowcodec import decode_key, decode_row, encode_key, encode_row, fit_row
from datamgr.datashare.manifest import TableSpec

text = st.text(st.characters(exclude_categories=("Cs",)))  # what a proto string can carry
key_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))  # text refuses NUL
cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(allow_nan=False),
    text,
    st.binary(),
)
SPEC = TableSpec.model_validate(
    {
        "name": "notes",
        "primary_key": "uid",
        "distributed": True,
        "columns": [
            {"name": "uid", "type": "text"},
            {"name": "title", "type": "text", "nullable": False},
            {"name": "n", "type": "integer"},
            {"name": "score", "type": "real"},
            {"name": "done", "type": "boolean", "default": False},
            {"name": "photo", "type": "blob"},
        ],
    }
)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same type (True is not 1, 1.0 is not 1, -0.0 is not 0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return type(a) is type(b) and a == b


@given(
    st.dictionaries(
        st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=64), cells, max_size=12
    )
)
def test_a_row_round_trips_with_its_types(row: dict[str, Any]) -> None:
    back = decode_row(encode_row(row))
    assert back.keys() == row.keys()
    assert all(_same(back[k], v) for k, v in row.items())


@given(st.one_of(key_text.map(lambda v: ("text", v)), st.binary().map(lambda v: ("blob", v)),
                 st.booleans().map(lambda v: ("boolean", v)),
                 st.integers(-(1 << 63), (1 << 63) - 1).map(lambda v: ("integer", v)),
                 st.floats(allow_nan=False).map(lambda v: ("real", v))))  # fmt: skip
def test_a_key_round_trips(typed: tuple[str, Any]) -> None:
    column_type, value = typed
    key = encode_key(column_type, value)
    assert len(key) >= 1 and key[:1] in b"sbd?i"
    back = decode_key(column_type, key)
    assert back == value and type(back) is type(value)


def test_keys_name_rows_as_the_database_does() -> None:
    assert encode_key("real", -0.0) == encode_key("real", 0.0) == encode_key("real", 0)  # one row in SQL
    assert encode_key("text", "") == b"s"  # an empty key is still a KV key
    assert encode_key("text", "a") != encode_key("blob", b"a")


@pytest.mark.parametrize(
    ("column_type", "key"),
    [
        ("text", b"bab"),  # a blob key for a text column
        ("text", b"s\xff"),  # not UTF-8
        ("text", b"sa\x00b"),  # NUL
        ("real", b"d\x00"),  # too short
        ("real", b"d" + struct.pack(">d", math.nan)),
        ("boolean", b"?\x02"),
        ("integer", b"i123"),
        ("blob", b""),
    ],
)
def test_a_key_that_is_not_one_is_refused(column_type: str, key: bytes) -> None:
    with pytest.raises(ValueError):
        decode_key(column_type, key)


@pytest.mark.parametrize(
    "raw",
    [b"[1, 2]", b"{", b"\xff", b'{"a": {"b": 1}}', b'{"a": [1]}', b'{"a": ["**"]}', b"[" * 100_000],
)
def test_a_value_that_is_no_row_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_row(raw)


def test_fit_row_keeps_the_declared_columns_and_the_keys_primary_key() -> None:
    row = {"uid": "forged", "title": "t", "n": 1, "score": 2, "photo": b"\x00", "added_later": 5}
    assert fit_row(SPEC, row, "u1") == {"uid": "u1", "title": "t", "n": 1, "score": 2, "photo": b"\x00"}
    # columns the peer did not send are left out (a defaulted or nullable column keeps its value)
    assert fit_row(SPEC, {"title": "t"}, "u1") == {"title": "t", "uid": "u1"}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({}, "column title is required"),
        ({"title": None}, "title may not be null"),
        ({"title": 3}, "title is text, not int"),
        ({"title": "t", "n": True}, "n is integer, not bool"),
        ({"title": "t", "n": 1 << 63}, "out of the 64-bit range"),
        ({"title": "t", "score": math.nan}, "NaN"),
        ({"title": "a\x00b"}, "NUL"),
        ({"title": "\ud800"}, "not valid Unicode"),
        ({"title": "t", "photo": "not bytes"}, "photo is blob, not str"),
    ],
)
def test_fit_row_refuses_what_does_not_fit(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        fit_row(SPEC, row, "u1")


def test_a_peers_json_with_escapes_decodes_to_the_same_values() -> None:
    raw = json.dumps({"title": "caf\u00e9 \u2603", "photo": ["AP8="], "score": 1e308}).encode()
    assert decode_row(raw) == {"title": "café ☃", "photo": b"\x00\xff", "score": 1e308}

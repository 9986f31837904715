"""Entry values ⇄ the proto `Value`: every kind, the int64 range, what cannot be sent, round trips."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udmf import values
from udmf.errors import InvalidArgument
from udmf.structs import HTML, ApplicationDefinedRecord, PixelMap, PlainText
from udmf.v1 import udmf_pb2 as pb

scalars = (
    st.none()
    | st.booleans()
    | st.integers(values.INT64_MIN, values.INT64_MAX)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
plain_values = st.recursive(
    scalars, lambda inner: st.dictionaries(st.text(), inner, max_size=4), max_leaves=20
)


@given(plain_values)
def test_round_trip(value: Any) -> None:
    msg = values.to_proto(value)
    assert values.from_proto(msg) == value
    assert values.from_proto(pb.Value.FromString(msg.SerializeToString())) == value


def test_each_kind_has_its_field() -> None:
    assert values.to_proto(None).WhichOneof("kind") == "null_value"
    assert values.to_proto(True).WhichOneof("kind") == "bool_value"  # not an int
    assert values.to_proto(0).WhichOneof("kind") == "int_value"
    assert values.to_proto(0.0).WhichOneof("kind") == "double_value"
    assert values.to_proto("").WhichOneof("kind") == "string_value"
    assert values.to_proto(b"").WhichOneof("kind") == "bytes_value"
    assert values.to_proto({}).WhichOneof("kind") == "object_value"
    assert values.from_proto(pb.Value()) is None  # unset reads as null


def test_int64_bounds() -> None:
    for edge in (values.INT64_MIN, values.INT64_MAX):
        assert values.from_proto(values.to_proto(edge)) == edge
    for outside in (values.INT64_MIN - 1, values.INT64_MAX + 1, 2**100):
        with pytest.raises(InvalidArgument, match="int64"):
            values.to_proto(outside)
    with pytest.raises(InvalidArgument, match="int64"):
        values.check({"deep": {"er": 2**64}})


def test_float_specials_travel() -> None:
    assert values.from_proto(values.to_proto(math.inf)) == math.inf
    assert math.isnan(values.from_proto(values.to_proto(math.nan)))


def test_bytes_like_values_read_back_as_bytes() -> None:
    for value in (bytearray(b"ab"), memoryview(b"ab"), memoryview(b"xaby")[1:3]):
        assert values.from_proto(values.to_proto(value)) == b"ab"


def test_structs_travel_as_their_wire_form() -> None:
    assert values.from_proto(values.to_proto(PlainText("t"))) == {"textContent": "t", "abstract": ""}
    assert values.from_proto(values.to_proto(ApplicationDefinedRecord("ApplicationDefined.x", b"r"))) == b"r"
    nested = {"html": HTML("<p>", "p"), "px": PixelMap(b"\x00", 1, 1)}
    assert values.from_proto(values.to_proto(nested)) == {
        "html": {"htmlContent": "<p>", "plainContent": "p"},
        "px": {"pixelMap": b"\x00", "width": 1, "height": 1},
    }


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([1, 2], "list cannot be"),
        ((1,), "tuple cannot be"),
        ({1: "a"}, "keys must be str"),
        ({"a": {2: 3}}, "keys must be str"),
        (object(), "object cannot be"),
        ({"set": {1}}, "set cannot be"),
    ],
)
def test_what_cannot_be_sent(value: Any, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        values.to_proto(value)


def test_nesting_is_bounded() -> None:
    value: dict[str, Any] = {}  # MAX_DEPTH objects, one in another
    for _ in range(values.MAX_DEPTH - 1):
        value = {"x": value}
    values.check(value)
    with pytest.raises(InvalidArgument, match="nest deeper"):
        values.check({"x": value})


def test_properties_map() -> None:
    msg = pb.Properties()
    values.map_to_proto(msg.extras, {"n": 1, "s": "x", "o": {"b": b"\x00"}})
    assert {k: values.from_proto(v) for k, v in msg.extras.items()} == {"n": 1, "s": "x", "o": {"b": b"\x00"}}
    with pytest.raises(InvalidArgument):
        values.map_to_proto(pb.Properties().extras, {"bad": [1]})

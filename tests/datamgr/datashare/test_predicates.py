"""DataSharePredicates: the builder records exactly the ops OpenHarmony's would, and survives the wire."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamgr.datashare.predicates import OP_TYPES, DataSharePredicates, PredicateOp
from datamgr.errors import InvalidArgument
from datamgr.v1 import datashare_pb2

P = DataSharePredicates


def test_every_builder_method_records_one_op_and_returns_self() -> None:
    p = P()
    calls: list[tuple[Callable[..., DataSharePredicates], tuple[Any, ...], PredicateOp]] = [
        (p.equal_to, ("a", 1), PredicateOp("EQUAL_TO", "a", (1,))),
        (p.not_equal_to, ("a", 1.5), PredicateOp("NOT_EQUAL_TO", "a", (1.5,))),
        (p.greater_than, ("a", "x"), PredicateOp("GREATER_THAN", "a", ("x",))),
        (p.less_than, ("a", b"\x00"), PredicateOp("LESS_THAN", "a", (b"\x00",))),
        (p.greater_than_or_equal_to, ("a", True), PredicateOp("GREATER_THAN_OR_EQUAL_TO", "a", (True,))),
        (p.less_than_or_equal_to, ("a", -3), PredicateOp("LESS_THAN_OR_EQUAL_TO", "a", (-3,))),
        (p.and_, (), PredicateOp("AND")),
        (p.or_, (), PredicateOp("OR")),
        (p.begin_wrap, (), PredicateOp("BEGIN_WRAP")),
        (p.end_wrap, (), PredicateOp("END_WRAP")),
        (p.like, ("a", "%x_"), PredicateOp("LIKE", "a", ("%x_",))),
        (p.unlike, ("a", "%x_"), PredicateOp("UNLIKE", "a", ("%x_",))),
        (p.glob, ("a", "x*"), PredicateOp("GLOB", "a", ("x*",))),
        (p.contains, ("a", "50%"), PredicateOp("CONTAINS", "a", ("50%",))),
        (p.begins_with, ("a", "x"), PredicateOp("BEGINS_WITH", "a", ("x",))),
        (p.ends_with, ("a", "x"), PredicateOp("ENDS_WITH", "a", ("x",))),
        (p.is_null, ("a",), PredicateOp("IS_NULL", "a")),
        (p.is_not_null, ("a",), PredicateOp("IS_NOT_NULL", "a")),
        (p.in_, ("a", [1, 2]), PredicateOp("IN", "a", (1, 2))),
        (p.not_in, ("a", (x for x in "xy")), PredicateOp("NOT_IN", "a", ("x", "y"))),
        (p.between, ("a", 1, 9), PredicateOp("BETWEEN", "a", (1, 9))),
        (p.not_between, ("a", "a", "m"), PredicateOp("NOT_BETWEEN", "a", ("a", "m"))),
        (p.order_by_asc, ("a",), PredicateOp("ORDER_BY_ASC", "a")),
        (p.order_by_desc, ("b",), PredicateOp("ORDER_BY_DESC", "b")),
        (p.limit, (10,), PredicateOp("LIMIT", values=(10, 0))),
        (p.limit, (10, 5), PredicateOp("LIMIT", values=(10, 5))),
        (p.distinct, (), PredicateOp("DISTINCT")),
        (p.group_by, (["a", "b"],), PredicateOp("GROUP_BY", fields=("a", "b"))),
    ]
    for n, (method, args, want) in enumerate(calls, start=1):
        assert method(*args) is p
        assert len(p) == n
        assert p.ops[-1] == want
    assert {op.type for op in p.ops} == OP_TYPES  # every op type has a builder method


def test_bytes_like_values_are_stored_as_bytes() -> None:
    p = P().equal_to("a", bytearray(b"ab")).in_("b", [memoryview(b"cd")])  # type: ignore[arg-type, list-item]
    assert p.ops[0].values == (b"ab",)
    assert p.ops[1].values == (b"cd",)


def test_ops_are_frozen_and_the_ops_view_is_a_copy() -> None:
    p = P().equal_to("a", 1)
    with pytest.raises(AttributeError):
        p.ops[0].field = "b"  # type: ignore[misc]
    assert isinstance(p.ops, tuple)
    assert list(p) == list(p.ops)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: P().limit(-1), "limit total must be >= 0"),
        (lambda: P().limit(1, -1), "limit offset must be >= 0"),
        (lambda: P().limit(1.5), "limit total must be an int"),  # type: ignore[arg-type]
        (lambda: P().limit(True), "limit total must be an int"),
        (lambda: P().equal_to("a", object()), "unsupported value type object"),  # type: ignore[arg-type]
        (lambda: P().equal_to("a", [1]), "unsupported value type list"),  # type: ignore[arg-type]
        (lambda: P().equal_to(1, 1), "field name must be a string"),  # type: ignore[arg-type]
        (lambda: P().in_("a", "abc"), "expected a list of values"),
        (lambda: P().in_("a", 3), "expected a list of values"),  # type: ignore[arg-type]
        (lambda: P().in_("a", [1, {}]), "unsupported value type dict"),  # type: ignore[list-item]
        (lambda: P().group_by("a"), "not a string"),
        (lambda: P().group_by([]), "at least one field"),
        (lambda: P().group_by(["a", 2]), "field name must be a string"),  # type: ignore[list-item]
    ],
)
def test_obvious_misuse_is_refused_at_build_time(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=message):
        build()


def test_equality_and_repr() -> None:
    a = P().equal_to("name", "Rose").or_().begin_wrap().in_("age", [1, 2]).end_wrap().limit(3, 1)
    b = P().equal_to("name", "Rose").or_().begin_wrap().in_("age", [1, 2]).end_wrap().limit(3, 1)
    assert a == b
    assert a != P().equal_to("name", "Rose")
    assert a != "not predicates"
    assert P() == P()
    with pytest.raises(TypeError):
        hash(a)
    assert repr(a) == (
        "DataSharePredicates().equal_to('name', 'Rose').or_().begin_wrap().in_('age', [1, 2])"
        ".end_wrap().limit(3, 1)"
    )
    assert repr(P().group_by(["a"]).distinct().between("x", 1, 2.5).is_null("y").glob("z", "*")) == (
        "DataSharePredicates().group_by(['a']).distinct().between('x', 1, 2.5).is_null('y').glob('z', '*')"
    )
    assert repr(P().equal_to("r", math.inf)) == "DataSharePredicates().equal_to('r', float('inf'))"


def test_repr_of_calls_no_builder_makes_shows_the_raw_ops() -> None:
    odd = P([PredicateOp("EQUAL_TO", "a", ())])
    assert repr(odd) == "DataSharePredicates([PredicateOp(type='EQUAL_TO', field='a', values=(), fields=())])"
    assert repr(P([PredicateOp("UNKNOWN_99")])).startswith(
        "DataSharePredicates([PredicateOp(type='UNKNOWN_99'"
    )


def test_repr_evaluates_back_to_an_equal_builder() -> None:
    p = (
        P()
        .like("s", "a%")
        .and_()
        .not_between("i", -1, 1)
        .order_by_desc("i")
        .in_("s", [])
        .not_in("b", [b"x", None])
    )
    assert eval(repr(p), {"DataSharePredicates": P}) == p


def test_to_proto_encodes_types_fields_and_values() -> None:
    msg = (
        P()
        .equal_to("a", None)
        .in_("b", [1, "x", 2.5, True, b"y"])
        .group_by(["a", "b"])
        .limit(4, 2)
        .to_proto()
    )
    assert isinstance(msg, datashare_pb2.Predicates)
    t = datashare_pb2.PredicateOpType
    assert [op.type for op in msg.ops] == [
        t.PREDICATE_OP_TYPE_EQUAL_TO,
        t.PREDICATE_OP_TYPE_IN,
        t.PREDICATE_OP_TYPE_GROUP_BY,
        t.PREDICATE_OP_TYPE_LIMIT,
    ]
    assert msg.ops[0].values[0].WhichOneof("kind") is None  # NULL
    assert [v.WhichOneof("kind") for v in msg.ops[1].values] == [
        "int_value",
        "string_value",
        "double_value",
        "bool_value",
        "bytes_value",
    ]
    assert list(msg.ops[2].fields) == ["a", "b"]
    assert [v.int_value for v in msg.ops[3].values] == [4, 2]


def test_to_proto_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(InvalidArgument, match="64 bits"):
        P().equal_to("a", 2**63).to_proto()
    with pytest.raises(InvalidArgument, match="unknown predicate op type 'NOPE'"):
        P([PredicateOp("NOPE")]).to_proto()


def test_from_proto_keeps_unknown_types_and_odd_shapes_for_the_compiler_to_judge() -> None:
    msg = datashare_pb2.Predicates()
    msg.ops.add(type=99, field="x")
    msg.ops.add(type=datashare_pb2.PREDICATE_OP_TYPE_UNSPECIFIED)
    msg.ops.add(type=datashare_pb2.PREDICATE_OP_TYPE_EQUAL_TO, field="a")  # no value
    assert P.from_proto(msg).ops == (
        PredicateOp("UNKNOWN_99", "x"),
        PredicateOp("UNSPECIFIED"),
        PredicateOp("EQUAL_TO", "a"),
    )
    assert P.from_proto(datashare_pb2.Predicates()) == P()


_cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
)
_names = st.text(min_size=1, max_size=6)


@st.composite
def _builders(draw: st.DrawFn) -> DataSharePredicates:
    p = P()
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["value", "none", "field", "list", "range", "limit", "group"]))
        if kind == "value":
            name = draw(
                st.sampled_from(["equal_to", "not_equal_to", "greater_than", "less_than", "like", "glob"])
            )
            getattr(p, name)(draw(_names), draw(_cells))
        elif kind == "none":
            getattr(p, draw(st.sampled_from(["and_", "or_", "begin_wrap", "end_wrap", "distinct"])))()
        elif kind == "field":
            getattr(p, draw(st.sampled_from(["is_null", "is_not_null", "order_by_asc", "order_by_desc"])))(
                draw(_names)
            )
        elif kind == "list":
            getattr(p, draw(st.sampled_from(["in_", "not_in"])))(
                draw(_names), draw(st.lists(_cells, max_size=4))
            )
        elif kind == "range":
            getattr(p, draw(st.sampled_from(["between", "not_between"])))(
                draw(_names), draw(_cells), draw(_cells)
            )
        elif kind == "limit":
            p.limit(draw(st.integers(0, 2**63 - 1)), draw(st.integers(0, 2**63 - 1)))
        else:
            p.group_by(draw(st.lists(_names, min_size=1, max_size=3)))
    return p


@given(_builders())
def test_proto_round_trip(p: DataSharePredicates) -> None:
    wire = p.to_proto().SerializeToString()
    back = P.from_proto(datashare_pb2.Predicates.FromString(wire))
    assert back == p
    assert repr(back) == repr(p)

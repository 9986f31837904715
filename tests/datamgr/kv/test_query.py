"""KV Query: the builder records OpenHarmony's ops, the compiler refuses malformed lists, and evaluation
over JSON-object values gives exactly the documented results."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamgr.errors import InvalidArgument
from datamgr.kv._like import like
from datamgr.kv.query import (
    MAX_CONDITIONS,
    MAX_GROUP_DEPTH,
    MAX_PATTERN_CHARS,
    MAX_VALUES,
    OP_TYPES,
    CompiledQuery,
    Query,
    QueryOp,
    compile_query,
)

Q = Query


def doc(**fields: Any) -> str:
    return json.dumps(fields)


# Entries covering every JSON kind, missing and null fields, nesting and values that hold no JSON object.
ENTRIES: dict[str, object] = {
    "a": doc(n=1, s="apple", b=True, tag="x"),
    "b": doc(n=2.5, s="Banana", b=False),
    "c": doc(n=-3, s="cherry", b=None, nested={"deep": 7}),
    "d": doc(n="1", s=None),  # n is a string here
    "e": doc(s="100%_done", n=True),  # n is a boolean here
    "f": doc(),  # every field missing
    "g": doc(n=10, nested={"deep": "seven"}, list=[1, 2]),
    "h": "plain text",  # not JSON
    "i": b'{"n": 1}',  # bytes: not a string value
    "j": 42,  # an int value
    "k": json.dumps([1, 2, 3]),  # JSON, but not an object
    "l": '{"n": NaN}',  # not JSON (NaN is not JSON)
}


def keys(query: Query, entries: dict[str, object] | None = None) -> list[str]:
    rows = (entries if entries is not None else ENTRIES).items()
    return [k for k, _ in compile_query(query.ops).select(rows)]


# ---- builder ----


def test_every_builder_method_records_one_op_and_returns_self() -> None:
    q = Q()
    calls: list[tuple[Callable[..., Query], tuple[Any, ...], QueryOp]] = [
        (q.equal_to, ("$.a", 1), QueryOp("EQUAL_TO", "$.a", (1,))),
        (q.not_equal_to, ("a", "x"), QueryOp("NOT_EQUAL_TO", "a", ("x",))),
        (q.greater_than, ("a", 1.5), QueryOp("GREATER_THAN", "a", (1.5,))),
        (q.less_than, ("a", True), QueryOp("LESS_THAN", "a", (True,))),
        (q.greater_than_or_equal_to, ("a", 0), QueryOp("GREATER_THAN_OR_EQUAL_TO", "a", (0,))),
        (q.less_than_or_equal_to, ("a.b", -2), QueryOp("LESS_THAN_OR_EQUAL_TO", "a.b", (-2,))),
        (q.is_null, ("a",), QueryOp("IS_NULL", "a")),
        (q.is_not_null, ("a",), QueryOp("IS_NOT_NULL", "a")),
        (q.in_number, ("a", [1, 2.5]), QueryOp("IN_NUMBER", "a", (1, 2.5))),
        (q.in_string, ("a", (s for s in "xy")), QueryOp("IN_STRING", "a", ("x", "y"))),
        (q.not_in_number, ("a", []), QueryOp("NOT_IN_NUMBER", "a", ())),
        (q.not_in_string, ("a", ["x"]), QueryOp("NOT_IN_STRING", "a", ("x",))),
        (q.like, ("a", "%x_"), QueryOp("LIKE", "a", ("%x_",))),
        (q.unlike, ("a", "x%"), QueryOp("UNLIKE", "a", ("x%",))),
        (q.and_, (), QueryOp("AND")),
        (q.or_, (), QueryOp("OR")),
        (q.begin_group, (), QueryOp("BEGIN_GROUP")),
        (q.end_group, (), QueryOp("END_GROUP")),
        (q.order_by_asc, ("a",), QueryOp("ORDER_BY_ASC", "a")),
        (q.order_by_desc, ("a",), QueryOp("ORDER_BY_DESC", "a")),
        (q.limit, (10,), QueryOp("LIMIT", values=(10, 0))),
        (q.limit, (10, 5), QueryOp("LIMIT", values=(10, 5))),
        (q.prefix_key, ("note/",), QueryOp("PREFIX_KEY", values=("note/",))),
        (q.device_id, ("dev1",), QueryOp("DEVICE_ID", values=("dev1",))),
    ]
    for n, (method, args, want) in enumerate(calls, start=1):
        assert method(*args) is q
        assert len(q) == n
        assert q.ops[-1] == want
    assert {op.type for op in q.ops} == OP_TYPES  # every op type has a builder method
    assert q.reset() is q and len(q) == 0


def test_queries_compare_by_their_ops() -> None:
    assert Q().equal_to("a", 1) == Q().equal_to("a", 1)
    assert Q().equal_to("a", 1) != Q().equal_to("a", 2)
    assert list(Q().or_()) == [QueryOp("OR")]
    assert "EQUAL_TO" in repr(Q().equal_to("a", 1))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Q().equal_to("a", b"x"), "string, number or boolean"),
        (lambda: Q().equal_to("a", None), "string, number or boolean"),
        (lambda: Q().greater_than("a", math.nan), "finite"),
        (lambda: Q().less_than("a", math.inf), "finite"),
        (lambda: Q().in_number("a", ["1"]), "list of numbers"),
        (lambda: Q().in_number("a", [True]), "list of numbers"),
        (lambda: Q().in_number("a", 1), "list of numbers"),
        (lambda: Q().in_string("a", "xy"), "list of strings"),
        (lambda: Q().in_string("a", [1]), "list of strings"),
        (lambda: Q().like("a", 1), "string pattern"),
        (lambda: Q().unlike("a", None), "string pattern"),
        (lambda: Q().limit(1.5), "int"),
        (lambda: Q().limit(1, True), "int"),
        (lambda: Q().prefix_key(b"x"), "string"),
        (lambda: Q().device_id(""), "non-empty"),
        (lambda: Q().equal_to("", 1), "field name"),
        (lambda: Q().equal_to(1, 1), "field name"),
        (lambda: Q().is_null("$"), "field path"),
        (lambda: Q().is_null("$."), "field path"),
        (lambda: Q().order_by_asc("a..b"), "field path"),
        (lambda: Q().order_by_desc("a" * 1025), "at most 1024"),
    ],
)
def test_the_builder_refuses_bad_arguments(build: Callable[[], Query], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build()


# ---- compiler ----


def ops(*items: tuple[Any, ...] | str) -> list[QueryOp]:
    """Shorthand: "AND" or ("EQUAL_TO", field, value, ...)."""
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(QueryOp(item))
        else:
            out.append(QueryOp(item[0], item[1], tuple(item[2:])))
    return out


EQ = ("EQUAL_TO", "n", 1)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (ops(("NO_SUCH_OP", "n")), r"ops\[0\]: unknown query op 'NO_SUCH_OP'"),
        (ops("AND", EQ), r"ops\[0\] and: nothing before it to join"),
        (ops("OR", EQ), r"ops\[0\] or: nothing before it to join"),
        (ops(EQ, "AND"), r"ops\[1\] and: no condition follows"),
        (ops(EQ, "OR"), r"ops\[1\] or: no condition follows"),
        (ops(EQ, "AND", "OR", EQ), r"ops\[1\] and: no condition follows"),
        (ops(EQ, "OR", "OR", EQ), r"ops\[1\] or: no condition follows"),
        (ops("BEGIN_GROUP", "END_GROUP"), r"ops\[1\] end_group: an empty group"),
        (ops("BEGIN_GROUP", EQ), r"ops\[0\] begin_group: the group is never closed"),
        (ops(EQ, "END_GROUP"), r"ops\[1\] end_group: no group is open"),
        (ops("BEGIN_GROUP"), "end with an open group"),
        (ops(("BEGIN_GROUP", "n"), EQ, "END_GROUP"), "takes no field"),
        (ops(("LIMIT", "", 1, 0), ("LIMIT", "", 2, 0)), r"ops\[1\] limit: given twice"),
        (ops(("LIMIT", "", 1)), "takes two ints"),
        (ops(("LIMIT", "", 1, 1.5)), "takes two ints"),
        (ops(("LIMIT", "", True, 0)), "takes two ints"),
        (ops(("PREFIX_KEY", "", "a"), ("PREFIX_KEY", "", "b")), "given twice"),
        (ops(("PREFIX_KEY", "", 1)), "takes one string"),
        (ops(("PREFIX_KEY", "n", "a")), "takes one string"),
        (ops(("DEVICE_ID", "", "")), "the device id is empty"),
        (ops(("DEVICE_ID", "", "a"), ("DEVICE_ID", "", "b")), "given twice"),
        (ops(("ORDER_BY_ASC", "n", 1)), "takes no values"),
        (ops(("ORDER_BY_DESC", "")), "field name"),
        (ops(("EQUAL_TO", "n")), "takes one value, got 0"),
        (ops(("EQUAL_TO", "n", 1, 2)), "takes one value, got 2"),
        (ops(("EQUAL_TO", "", 1)), "field name"),
        (ops(("EQUAL_TO", "n", b"x")), "string, number or boolean"),
        (ops(("EQUAL_TO", "n", None)), "string, number or boolean"),
        (ops(("GREATER_THAN", "n", math.nan)), "finite"),
        (ops(("IS_NULL", "n", 1)), "takes no values"),
        (ops(("IN_NUMBER", "n", "1")), "list of numbers"),
        (ops(("IN_STRING", "n", 1)), "list of strings"),
        (ops(("LIKE", "n", 1)), "pattern must be a string"),
        (ops(("LIKE", "n", "x" * (MAX_PATTERN_CHARS + 1))), r"longer than 128 .*\(kv.max_pattern_chars\)"),
    ],
)
def test_the_compiler_refuses_malformed_queries(bad: list[QueryOp], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        compile_query(bad)


def test_bounds_on_conditions_values_and_nesting() -> None:
    compile_query(ops(*[EQ] * MAX_CONDITIONS))
    with pytest.raises(InvalidArgument, match=f"at most {MAX_CONDITIONS} conditions"):
        compile_query(ops(*[EQ] * (MAX_CONDITIONS + 1)))
    with pytest.raises(InvalidArgument, match=f"at most {MAX_VALUES} values"):
        compile_query(ops(("IN_NUMBER", "n", *range(MAX_VALUES + 1))))
    deep = ["BEGIN_GROUP"] * MAX_GROUP_DEPTH + [EQ] + ["END_GROUP"] * MAX_GROUP_DEPTH
    compile_query(ops(*deep))
    with pytest.raises(InvalidArgument, match=f"nest at most {MAX_GROUP_DEPTH} deep"):
        compile_query(ops("BEGIN_GROUP", *deep, "END_GROUP"))


def test_modifiers_are_collected() -> None:
    q = compile_query(Q().prefix_key("p").device_id("d").order_by_desc("$.a.b").limit(3, 2).ops)
    assert q == CompiledQuery(prefix="p", device_id="d", order=((("a", "b"), True),), limit=3, offset=2)
    assert compile_query([]) == CompiledQuery()
    # SQLite's LIMIT: a negative total is no limit, a negative offset none
    assert compile_query(Q().limit(-1, -5).ops) == CompiledQuery(limit=None, offset=0)


# ---- conditions ----


@pytest.mark.parametrize(
    ("query", "want"),
    [
        (Q(), list("abcdefghijkl")),
        # numbers compare as numbers (1 == 1.0), never with strings or booleans
        (Q().equal_to("n", 1), ["a"]),
        (Q().equal_to("n", 1.0), ["a"]),
        (Q().equal_to("$.n", 2.5), ["b"]),
        (Q().equal_to("n", "1"), ["d"]),
        (Q().equal_to("n", True), ["e"]),
        (Q().equal_to("b", False), ["b"]),
        (Q().equal_to("s", "apple"), ["a"]),
        # not_equal_to: every non-null value that differs, of any kind
        (Q().not_equal_to("n", 1), ["b", "c", "d", "e", "g"]),
        (Q().not_equal_to("b", True), ["b"]),
        # ordering comparisons only within a kind
        (Q().greater_than("n", 1), ["b", "g"]),
        (Q().greater_than_or_equal_to("n", 1), ["a", "b", "g"]),
        (Q().less_than("n", 1), ["c"]),
        (Q().less_than_or_equal_to("n", 2.5), ["a", "b", "c"]),
        (Q().greater_than("n", "0"), ["d"]),
        (Q().less_than("s", "b"), ["a", "b", "e"]),  # code point order: "1" < "B" < "a" < "b"
        (Q().greater_than("b", False), ["a"]),
        (Q().greater_than("nested", 0), []),  # objects never compare
        # null: a missing field or a JSON null
        (Q().is_null("b"), ["c", "d", "e", "f", "g"]),
        (Q().is_null("s"), ["d", "f", "g"]),
        (Q().is_not_null("s"), ["a", "b", "c", "e"]),
        (Q().is_not_null("nested"), ["c", "g"]),
        # nested fields; a path through a non-object is null
        (Q().equal_to("$.nested.deep", 7), ["c"]),
        (Q().equal_to("nested.deep", "seven"), ["g"]),
        (Q().is_null("$.n.deeper"), ["a", "b", "c", "d", "e", "f", "g"]),
        (Q().is_not_null("list"), ["g"]),
        # sets
        (Q().in_number("n", [1, -3, 99]), ["a", "c"]),
        (Q().in_number("n", []), []),
        (Q().not_in_number("n", [1, -3]), ["b", "d", "e", "g"]),
        (Q().not_in_number("n", []), ["a", "b", "c", "d", "e", "g"]),
        (Q().in_string("s", ["apple", "cherry", "nope"]), ["a", "c"]),
        (Q().in_string("n", ["1"]), ["d"]),
        (Q().not_in_string("s", ["apple"]), ["b", "c", "e"]),
        # LIKE: % and _, ASCII case ignored, only on strings
        (Q().like("s", "%an%"), ["b"]),
        (Q().like("s", "BANANA"), ["b"]),
        (Q().like("s", "_pple"), ["a"]),
        (Q().like("s", "%"), ["a", "b", "c", "e"]),
        (Q().like("s", "100%"), ["e"]),
        (Q().like("n", "1"), ["d"]),
        (Q().unlike("s", "%e%"), ["b"]),
        (Q().unlike("n", "%"), []),
    ],
)
def test_conditions(query: Query, want: list[str]) -> None:
    assert keys(query) == want


def test_values_holding_no_json_object_match_no_field_condition() -> None:
    not_objects = {"h", "i", "j", "k", "l"}
    for query in (
        Q().is_null("n"),
        Q().not_equal_to("n", "zzz"),
        Q().not_in_number("n", []),
        Q().unlike("n", "x"),
    ):
        assert not set(keys(query)) & not_objects
    assert keys(Q().prefix_key("h")) == ["h"]  # but they are entries like any other


def test_and_binds_tighter_than_or_and_groups_are_parentheses() -> None:
    a, c, g = Q().equal_to("s", "apple"), Q().equal_to("n", -3), Q().equal_to("n", 10)
    assert keys(Q(a.ops).or_().equal_to("n", -3).and_().is_null("b")) == ["a", "c"]
    assert keys(Q(a.ops).or_().equal_to("n", -3).and_().is_not_null("b")) == ["a"]
    grouped = Q().begin_group().equal_to("s", "apple").or_().equal_to("n", -3).end_group().is_not_null("b")
    assert keys(grouped) == ["a"]  # conditions side by side are ANDed
    assert keys(Q(c.ops).or_().begin_group().equal_to("n", 10).end_group()) == ["c", "g"]
    assert keys(Q(c.ops).and_().equal_to("n", 10)) == []
    assert keys(Q(g.ops)) == ["g"]


def test_prefix_order_and_limit() -> None:
    entries = {
        "n/1": doc(p=3, t="b"),
        "n/2": doc(p=1, t="a"),
        "n/3": doc(t="c"),
        "n/4": doc(p=None),
        "n/5": doc(p=3, t="a"),
        "m/1": doc(p=0),
        "n/6": doc(p="high"),
        "n/7": doc(p=True),
        "n/8": doc(p={"x": 1}),
    }
    assert keys(Q().prefix_key("n/"), entries) == [f"n/{i}" for i in range(1, 9)]
    # nulls first, then booleans, numbers, strings, objects; ties stay in key order
    assert keys(Q().prefix_key("n/").order_by_asc("p"), entries) == [
        *["n/3", "n/4", "n/7", "n/2", "n/1", "n/5", "n/6", "n/8"]
    ]
    assert keys(Q().prefix_key("n/").order_by_desc("p"), entries) == [
        *["n/8", "n/6", "n/1", "n/5", "n/2", "n/7", "n/3", "n/4"]
    ]
    by_p_then_t = Q().is_not_null("p").order_by_desc("p").order_by_asc("t")
    assert keys(by_p_then_t, entries) == ["n/8", "n/6", "n/5", "n/1", "n/2", "m/1", "n/7"]
    assert keys(Q().prefix_key("n/").limit(2, 1), entries) == ["n/2", "n/3"]
    assert keys(Q().prefix_key("n/").limit(0), entries) == []
    assert keys(Q().prefix_key("n/").limit(-1, 6), entries) == ["n/7", "n/8"]
    assert keys(Q().prefix_key("n/").limit(5, 100), entries) == []
    assert keys(Q().prefix_key("zzz"), entries) == []


def test_bytes_keys_and_matches() -> None:
    q = compile_query(Q().prefix_key("é").greater_than("n", 0).ops)
    rows = [("é2".encode(), doc(n=1)), (b"a", doc(n=1)), ("é1".encode(), doc(n=0))]
    assert q.select(rows) == [("é2".encode(), doc(n=1))]
    assert q.matches(doc(n=1)) and not q.matches(doc(n=0)) and not q.matches(b"x")
    assert CompiledQuery().matches("anything")


# ---- LIKE against a regex reference ----


def test_like_folds_ascii_case_only() -> None:
    assert like("ABC", "abc") and like("abc", "A_C")
    assert not like("É", "é")  # SQLite's LIKE folds ASCII only
    assert like("", "%") and like("", "") and not like("", "_")
    assert like("a%b", "a%b") and like("a.b", "a.b") and not like("axb", "a.b")


def _like_reference(text: str, pattern: str) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    lower = str.maketrans("AB", "ab")
    return re.fullmatch(regex.translate(lower), text.translate(lower), re.DOTALL) is not None


@given(st.text(alphabet="abAB%_\n", max_size=12), st.text(alphabet="abAB%_\n", max_size=8))
def test_like_matches_the_regex_reference(text: str, pattern: str) -> None:
    assert like(text, pattern) == _like_reference(text, pattern)


def test_like_is_linear_on_hostile_patterns() -> None:
    text = "a" * 200_000
    assert not like(text, "%a%a%a%a%a%a%a%a%a%a%b")  # backtracking regexes take forever here


# ---- precedence against Python's and/or ----


_atoms = st.sampled_from(["T", "F"])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> list[str]:
    """Token lists: T/F atoms, AND, OR, implicit AND, and ( ) groups."""
    terms = draw(st.integers(1, 3))
    tokens: list[str] = []
    for t in range(terms):
        if t:
            tokens.append("OR")
        for f in range(draw(st.integers(1, 3))):
            if f and draw(st.booleans()):
                tokens.append("AND")
            if depth < 3 and draw(st.integers(0, 4)) == 0:
                tokens += ["(", *draw(expressions(depth + 1)), ")"]
            else:
                tokens.append(draw(_atoms))
    return tokens


@given(expressions())
def test_grouping_and_precedence_match_python(tokens: list[str]) -> None:
    q = Q()
    python: list[str] = []
    for i, tok in enumerate(tokens):
        if tok in ("T", "F"):
            # an implicit AND between neighbours (a condition or ")" before, a condition or "(" now)
            if i and tokens[i - 1] in ("T", "F", ")"):
                python.append("and")
            q.equal_to("v", tok == "T")  # the entry holds v = true: T matches, F does not
            python.append(str(tok == "T"))
        elif tok == "(":
            if i and tokens[i - 1] in ("T", "F", ")"):
                python.append("and")
            q.begin_group()
            python.append("(")
        elif tok == ")":
            q.end_group()
            python.append(")")
        else:
            q.and_() if tok == "AND" else q.or_()
            python.append(tok.lower())
    expr = " ".join(python)
    want = eval(expr)  # only True/False/and/or/parentheses
    assert compile_query(q.ops).matches(doc(v=True)) is want

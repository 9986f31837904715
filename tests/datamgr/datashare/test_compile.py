"""Predicate compilation: every op run on a real SQLite table against a Python reference, every
validation error, injection attempts, writes with order/limit, and property tests with NULLs."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from datamgr.datashare._compile import (
    MAX_CONDITIONS,
    MAX_PATTERN_CHARS,
    MAX_PATTERN_WILDCARDS,
    MAX_VALUES,
    MAX_WRAP_DEPTH,
    CompiledPredicates,
    build_select,
    build_where_for_write,
    compile_predicates,
    glob_to_regex,
)
from datamgr.datashare.predicates import DataSharePredicates, PredicateOp
from datamgr.errors import InvalidArgument

P = DataSharePredicates
# A shared, loaded machine must not turn slow examples into failures.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

metadata = sa.MetaData()
people = sa.Table(
    "people",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("age", sa.Integer),
    sa.Column("salary", sa.Float),
    sa.Column("photo", sa.LargeBinary),
    sa.Column("active", sa.Boolean),
)
COLUMNS = ("id", "name", "age", "salary", "photo", "active")
ROWS: list[dict[str, Any]] = [
    dict(zip(COLUMNS, row, strict=True))
    for row in [
        (1, "Rose", 30, 1000.5, b"\x01", True),
        (2, "Lisa", 25, 2000.0, None, False),
        (3, "rose", 40, None, b"\x02", None),
        (4, None, 35, 1500.0, None, True),
        (5, "50%", None, 0.0, b"", False),
        (6, "a_b", 22, -1.5, None, True),
        (7, "axb", 60, 3000.0, b"\x01\x02", False),
        (8, "500 apples", 30, 1000.5, None, None),
        (9, "O'Brien", 51, 2500.0, b"\x03", True),
    ]
]
ALL_IDS = [r["id"] for r in ROWS]


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine("sqlite://")
    metadata.create_all(eng)
    with eng.begin() as conn:
        conn.execute(people.insert(), ROWS)
    yield eng
    eng.dispose()


def select_ids(engine: sa.Engine, p: Any, columns: list[str] | None = None) -> list[int]:
    compiled = compile_predicates(p, people)
    with engine.connect() as conn:
        return [row.id for row in conn.execute(build_select(people, compiled, columns or ["id"]))]


def where(col: str, test: Callable[[Any], bool]) -> list[int]:
    """ids of the rows whose `col` is not NULL and passes `test` (NULL never satisfies a comparison)."""
    return [r["id"] for r in ROWS if r[col] is not None and test(r[col])]


def _like(pattern: str, s: str) -> bool:
    """SQLite LIKE: % and _ wildcards, ASCII case ignored."""
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, s, re.DOTALL | re.IGNORECASE | re.ASCII) is not None


def ilike(pattern: str) -> Callable[[str], bool]:
    return lambda s: _like(pattern, s)


# ---- every op on SQLite ----

CASES: list[tuple[str, DataSharePredicates, list[int]]] = [
    ("equal_to text", P().equal_to("name", "Rose"), where("name", lambda v: v == "Rose")),
    ("equal_to int", P().equal_to("age", 30), where("age", lambda v: v == 30)),
    ("equal_to real", P().equal_to("salary", 1000.5), where("salary", lambda v: v == 1000.5)),
    ("equal_to real by int", P().equal_to("salary", 2000), where("salary", lambda v: v == 2000)),
    ("equal_to blob", P().equal_to("photo", b"\x01"), where("photo", lambda v: v == b"\x01")),
    ("equal_to bool", P().equal_to("active", True), where("active", lambda v: v is True)),
    ("equal_to false", P().equal_to("active", False), where("active", lambda v: v is False)),
    ("not_equal_to", P().not_equal_to("age", 30), where("age", lambda v: v != 30)),
    ("not_equal_to bool", P().not_equal_to("active", True), where("active", lambda v: v is not True)),
    ("greater_than", P().greater_than("age", 30), where("age", lambda v: v > 30)),
    ("greater_than text", P().greater_than("name", "Rose"), where("name", lambda v: v > "Rose")),
    ("less_than", P().less_than("salary", 1500), where("salary", lambda v: v < 1500)),
    ("less_than blob", P().less_than("photo", b"\x02"), where("photo", lambda v: v < b"\x02")),
    ("greater_than_or_equal_to", P().greater_than_or_equal_to("age", 35), where("age", lambda v: v >= 35)),
    ("less_than_or_equal_to", P().less_than_or_equal_to("age", 25), where("age", lambda v: v <= 25)),
    ("like", P().like("name", "r%"), where("name", ilike("r%"))),
    ("like underscore", P().like("name", "a_b"), where("name", ilike("a_b"))),
    ("like percent is a wildcard", P().like("name", "50%"), where("name", ilike("50%"))),
    ("unlike", P().unlike("name", "%s%"), where("name", lambda v: not ilike("%s%")(v))),
    ("glob", P().glob("name", "[rR]o*"), where("name", lambda v: re.fullmatch("[rR]o.*", v) is not None)),
    ("glob is case-sensitive", P().glob("name", "r*"), where("name", lambda v: v.startswith("r"))),
    ("glob ?", P().glob("name", "a?b"), where("name", lambda v: len(v) == 3 and v[0] == "a" and v[2] == "b")),
    ("glob negated set", P().glob("name", "[^a-z]*"), where("name", lambda v: not "a" <= v[0] <= "z")),
    ("glob unterminated set", P().glob("name", "[abc"), []),
    ("contains escapes %", P().contains("name", "50%"), where("name", lambda v: "50%" in v)),
    ("contains escapes _", P().contains("name", "_"), where("name", lambda v: "_" in v)),
    ("contains ignores ASCII case", P().contains("name", "OS"), where("name", lambda v: "os" in v.lower())),
    ("contains quote", P().contains("name", "'"), where("name", lambda v: "'" in v)),
    ("begins_with escapes", P().begins_with("name", "a_"), where("name", lambda v: v.startswith("a_"))),
    ("begins_with", P().begins_with("name", "50"), where("name", lambda v: v.startswith("50"))),
    ("ends_with", P().ends_with("name", "SE"), where("name", lambda v: v.lower().endswith("se"))),
    ("ends_with escapes", P().ends_with("name", "%"), where("name", lambda v: v.endswith("%"))),
    ("is_null", P().is_null("name"), [r["id"] for r in ROWS if r["name"] is None]),
    ("is_not_null", P().is_not_null("salary"), where("salary", lambda v: True)),
    ("in_", P().in_("age", [30, 40, 99]), where("age", lambda v: v in (30, 40, 99))),
    ("in_ text", P().in_("name", ["Lisa", "rose"]), where("name", lambda v: v in ("Lisa", "rose"))),
    ("in_ empty matches nothing", P().in_("age", []), []),
    ("not_in", P().not_in("age", [30, 40]), where("age", lambda v: v not in (30, 40))),
    ("not_in empty matches everything", P().not_in("name", []), ALL_IDS),
    ("between", P().between("age", 25, 35), where("age", lambda v: 25 <= v <= 35)),
    ("between reversed is empty", P().between("age", 35, 25), []),
    ("between reals", P().between("salary", 0, 1000.5), where("salary", lambda v: 0 <= v <= 1000.5)),
    ("between text", P().between("name", "L", "S"), where("name", lambda v: "L" <= v <= "S")),
    ("not_between", P().not_between("age", 25, 35), where("age", lambda v: not 25 <= v <= 35)),
]


@pytest.mark.parametrize(("p", "expected"), [(p, e) for _, p, e in CASES], ids=[c[0] for c in CASES])
def test_each_condition_selects_what_the_reference_selects(
    engine: sa.Engine, p: DataSharePredicates, expected: list[int]
) -> None:
    assert sorted(select_ids(engine, p)) == sorted(expected)
    assert sorted(select_ids(engine, P.from_proto(p.to_proto()))) == sorted(expected)  # through the wire


def test_the_cases_are_not_trivial() -> None:
    # A reference that selects nothing (or everything) everywhere would prove little.
    nontrivial = [name for name, _, e in CASES if 0 < len(e) < len(ROWS)]
    assert len(nontrivial) >= len(CASES) - 6


def test_like_case_sensitivity_follows_sqlite(engine: sa.Engine) -> None:
    """Documented, not fought: SQLite's LIKE ignores ASCII case (PostgreSQL's does not)."""
    assert sorted(select_ids(engine, P().like("name", "ROSE"))) == [1, 3]
    assert select_ids(engine, P().equal_to("name", "ROSE")) == []


def test_no_predicates_select_every_row(engine: sa.Engine) -> None:
    compiled = compile_predicates(P(), people)
    assert compiled == CompiledPredicates(None, (), None, None, False, ())
    assert sorted(select_ids(engine, P())) == ALL_IDS


# ---- and / or / wraps ----

AGE30 = where("age", lambda v: v == 30)
LISA = where("name", lambda v: v == "Lisa")
ACTIVE = where("active", lambda v: v is True)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (P().equal_to("age", 30).equal_to("active", True), set(AGE30) & set(ACTIVE)),
        (P().equal_to("age", 30).and_().equal_to("active", True), set(AGE30) & set(ACTIVE)),
        (P().equal_to("age", 30).or_().equal_to("active", True), set(AGE30) | set(ACTIVE)),
        # AND binds tighter than OR, on either side
        (
            P().equal_to("name", "Lisa").or_().equal_to("age", 30).and_().equal_to("active", True),
            set(LISA) | (set(AGE30) & set(ACTIVE)),
        ),
        (
            P().equal_to("age", 30).equal_to("active", True).or_().equal_to("name", "Lisa"),
            (set(AGE30) & set(ACTIVE)) | set(LISA),
        ),
        # wraps are parentheses
        (
            P()
            .begin_wrap()
            .equal_to("name", "Lisa")
            .or_()
            .equal_to("age", 30)
            .end_wrap()
            .equal_to("active", True),
            (set(LISA) | set(AGE30)) & set(ACTIVE),
        ),
        (
            P()
            .equal_to("active", True)
            .begin_wrap()
            .equal_to("name", "Lisa")
            .or_()
            .equal_to("age", 30)
            .end_wrap(),
            (set(LISA) | set(AGE30)) & set(ACTIVE),
        ),
        (P().begin_wrap().begin_wrap().equal_to("age", 30).end_wrap().end_wrap(), set(AGE30)),
        # ordering and paging ops between conditions do not break the chain
        (P().equal_to("age", 30).order_by_asc("id").or_().equal_to("name", "Lisa"), set(AGE30) | set(LISA)),
    ],
)
def test_connectives_follow_sql_precedence(
    engine: sa.Engine, p: DataSharePredicates, expected: set[int]
) -> None:
    assert set(select_ids(engine, p)) == expected


def test_the_column_types_the_store_creates_are_understood() -> None:
    table = sa.Table(
        "store_types",
        sa.MetaData(),
        sa.Column("i", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
        sa.Column("r", sa.Double()),
        sa.Column("s", sa.String(20)),
    )
    compile_predicates(P().equal_to("i", 1).equal_to("r", 1).equal_to("r", 0.5).like("s", "a%"), table)
    with pytest.raises(InvalidArgument, match="holds integers"):
        compile_predicates(P().equal_to("i", 0.5), table)
    with pytest.raises(InvalidArgument, match="holds reals"):
        compile_predicates(P().equal_to("r", "1"), table)


def test_a_column_type_predicates_do_not_know_is_refused() -> None:
    table = sa.Table("odd", sa.MetaData(), sa.Column("d", sa.Date()))
    with pytest.raises(InvalidArgument, match="column 'd' has a type predicates do not support"):
        compile_predicates(P().equal_to("d", "2024-01-01"), table)
    assert compile_predicates(P().is_null("d").order_by_asc("d"), table).where is not None


def test_builder_and_plain_op_lists_compile_the_same() -> None:
    p = P().equal_to("age", 30).or_().is_null("name")
    a, b = compile_predicates(p, people), compile_predicates(list(p.ops), people)
    assert str(a.where) == str(b.where)


# ---- order, limit, distinct, group by ----


def test_order_by_puts_nulls_first_ascending_and_last_descending(engine: sa.Engine) -> None:
    def key(r: dict[str, Any]) -> tuple[bool, int]:
        return (r["age"] is not None, r["age"] or 0)

    asc = [r["id"] for r in sorted(ROWS, key=lambda r: (*key(r), r["id"]))]
    assert select_ids(engine, P().order_by_asc("age").order_by_asc("id")) == asc
    desc = [r["id"] for r in sorted(ROWS, key=lambda r: (*key(r), r["id"]), reverse=True)]
    assert select_ids(engine, P().order_by_desc("age").order_by_desc("id")) == desc


def test_limit_and_offset(engine: sa.Engine) -> None:
    ordered = P().order_by_asc("id")
    assert select_ids(engine, P(ordered.ops).limit(3)) == ALL_IDS[:3]
    assert select_ids(engine, P(ordered.ops).limit(3, 2)) == ALL_IDS[2:5]
    assert select_ids(engine, P(ordered.ops).limit(3, 100)) == []
    assert select_ids(engine, P(ordered.ops).limit(0, 4)) == ALL_IDS[4:]  # total 0: no limit


@pytest.mark.parametrize(
    ("values", "limit", "offset"),
    [((-1, 0), None, None), ((-5, -5), None, None), ((0, 3), None, 3), ((2, -1), 2, None), ((2, 0), 2, None)],
)
def test_limit_follows_openharmony_rdb_for_non_positive_numbers(
    values: tuple[int, int], limit: int | None, offset: int | None
) -> None:
    """AbsPredicates::Limit: a total <= 0 means no limit; a negative offset means none."""
    compiled = compile_predicates([PredicateOp("LIMIT", values=values)], people)
    assert (compiled.limit, compiled.offset) == (limit, offset)


def test_limits_beyond_32_bits(engine: sa.Engine) -> None:
    p = P().order_by_asc("id").limit(2**62, 2)
    assert select_ids(engine, p) == ALL_IDS[2:]
    assert select_ids(engine, P().limit(2, 2**62)) == []
    sql = str(
        build_select(people, compile_predicates(p, people, "postgresql"), ["id"]).compile(
            dialect=postgresql.dialect()
        )
    )
    assert "INTEGER" not in sql


def test_offset_without_limit_runs_on_sqlite(engine: sa.Engine) -> None:
    ops = [PredicateOp("ORDER_BY_ASC", "id"), PredicateOp("LIMIT", values=(-1, 7))]
    assert select_ids(engine, ops) == ALL_IDS[7:]


def test_distinct(engine: sa.Engine) -> None:
    compiled = compile_predicates(P().distinct().order_by_asc("age"), people)
    with engine.connect() as conn:
        ages = [row.age for row in conn.execute(build_select(people, compiled, ["age"]))]
    assert ages == sorted({r["age"] for r in ROWS}, key=lambda a: (a is not None, a or 0))


def test_group_by(engine: sa.Engine) -> None:
    compiled = compile_predicates(
        P().is_not_null("salary").group_by(["salary"]).order_by_desc("salary"), people
    )
    with engine.connect() as conn:
        got = [row.salary for row in conn.execute(build_select(people, compiled, ["salary"]))]
    assert got == sorted({r["salary"] for r in ROWS if r["salary"] is not None}, reverse=True)


def test_select_columns(engine: sa.Engine) -> None:
    compiled = compile_predicates(P().equal_to("id", 1), people)
    with engine.connect() as conn:
        assert conn.execute(build_select(people, compiled, ["name", "id"])).all() == [("Rose", 1)]
        assert list(conn.execute(build_select(people, compiled, None)).one()) == list(ROWS[0].values())
        assert list(conn.execute(build_select(people, compiled, [])).one()) == list(ROWS[0].values())


@pytest.mark.parametrize(
    ("p", "columns", "message"),
    [
        (P(), ["nope"], "unknown column 'nope'"),
        (P(), ["id", "id"], "listed twice"),
        (P().group_by(["age"]), ["age", "name"], r"only grouped columns .*\['name'\]"),
        (P().group_by(["age"]), None, "only grouped columns"),
        (P().group_by(["age"]).order_by_asc("id"), ["age"], r"only grouped columns .*\['id'\]"),
        (P().distinct().order_by_asc("id"), ["name"], r"only selected columns .*\['id'\]"),
    ],
)
def test_build_select_refuses(p: DataSharePredicates, columns: list[str] | None, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build_select(people, compile_predicates(p, people), columns)


# ---- validation of untrusted op lists ----

OP = PredicateOp
VALIDATION: list[tuple[str, list[PredicateOp], str]] = [
    ("unknown column", [OP("EQUAL_TO", "nope", (1,))], r"equal_to\(\) at ops\[0\]: unknown column 'nope'"),
    ("unknown order column", [OP("ORDER_BY_DESC", "nope")], "unknown column 'nope'"),
    ("unknown group column", [OP("GROUP_BY", fields=("age", "nope"))], "unknown column 'nope'"),
    ("empty field", [OP("IS_NULL", "")], "needs a field"),
    ("unclosed wrap", [OP("BEGIN_WRAP"), OP("IS_NULL", "age")], r"begin_wrap\(\) at ops\[0\]: never closed"),
    ("lone begin_wrap", [OP("BEGIN_WRAP")], r"ops\[0\]: never closed"),
    ("unopened wrap", [OP("IS_NULL", "age"), OP("END_WRAP")], r"end_wrap\(\) at ops\[1\]: no begin_wrap"),
    ("lone end_wrap", [OP("END_WRAP")], "no begin_wrap"),
    (
        "wrap closed twice",
        [OP("BEGIN_WRAP"), OP("IS_NULL", "age"), OP("END_WRAP"), OP("END_WRAP")],
        r"ops\[3\]: no begin_wrap",
    ),
    ("empty wrap", [OP("BEGIN_WRAP"), OP("END_WRAP")], "empty wrap"),
    ("empty inner wrap", [OP("IS_NULL", "age"), OP("BEGIN_WRAP"), OP("END_WRAP")], r"ops\[1\]: empty wrap"),
    ("dangling and", [OP("IS_NULL", "age"), OP("AND")], r"and\(\) at ops\[1\]: dangling"),
    ("dangling or", [OP("IS_NULL", "age"), OP("OR")], r"or\(\) at ops\[1\]: dangling"),
    (
        "dangling or in a wrap",
        [OP("BEGIN_WRAP"), OP("IS_NULL", "age"), OP("OR"), OP("END_WRAP")],
        r"or\(\) at ops\[2\]: dangling, followed by end_wrap",
    ),
    ("and then or", [OP("IS_NULL", "age"), OP("AND"), OP("OR"), OP("IS_NULL", "id")], r"and\(\) at ops\[1\]"),
    ("or at the start", [OP("OR"), OP("IS_NULL", "age")], r"or\(\) at ops\[0\]: stands at the start"),
    ("and at the start", [OP("AND"), OP("IS_NULL", "age")], r"and\(\) at ops\[0\]: stands at the start"),
    (
        "or at the start of a wrap",
        [OP("BEGIN_WRAP"), OP("OR"), OP("IS_NULL", "age"), OP("END_WRAP")],
        r"or\(\) at ops\[1\]: stands at the start of a wrap",
    ),
    ("only connectives", [OP("AND")], "stands at the start"),
    ("no value", [OP("EQUAL_TO", "age")], r"equal_to\(\) at ops\[0\]: takes 1 value\(s\), got 0"),
    ("two values", [OP("LIKE", "name", ("a", "b"))], "takes 1 value"),
    ("one bound", [OP("BETWEEN", "age", (1,))], "takes 2 value"),
    ("value on is_null", [OP("IS_NULL", "age", (1,))], "takes 0 value"),
    ("value on order_by", [OP("ORDER_BY_ASC", "age", (1,))], "takes 0 value"),
    ("field on and", [OP("AND", "age")], "takes no field"),
    ("field on distinct", [OP("DISTINCT", "age")], "takes no field"),
    ("values on or", [OP("IS_NULL", "age"), OP("OR", values=(1,)), OP("IS_NULL", "id")], "takes 0 value"),
    ("fields on a condition", [OP("IS_NULL", "age", fields=("id",))], "takes no list of fields"),
    ("group_by without fields", [OP("GROUP_BY")], "needs at least one field"),
    ("equal_to NULL", [OP("EQUAL_TO", "age", (None,))], "use is_null"),
    ("NULL in a list", [OP("IN", "age", (1, None))], "use is_null"),
    ("NULL bound", [OP("BETWEEN", "age", (None, 3))], "use is_null"),
    ("str for int", [OP("EQUAL_TO", "age", ("30",))], "column 'age' holds integers, got a str"),
    ("bool for int", [OP("GREATER_THAN", "age", (True,))], "column 'age' holds integers, got a bool"),
    ("float for int", [OP("EQUAL_TO", "age", (30.0,))], "holds integers, got a float"),
    ("str for real", [OP("LESS_THAN", "salary", ("1",))], "holds reals, got a str"),
    ("bool for real", [OP("LESS_THAN", "salary", (False,))], "holds reals, got a bool"),
    ("int for text", [OP("EQUAL_TO", "name", (1,))], "holds text, got a int"),
    ("bytes for text", [OP("IN", "name", ("a", b"b"))], "holds text, got a bytes"),
    ("str for blob", [OP("EQUAL_TO", "photo", ("x",))], "holds blobs, got a str"),
    ("int for bool", [OP("EQUAL_TO", "active", (1,))], "holds booleans, got a int"),
    ("like on int", [OP("LIKE", "age", ("3%",))], r"like\(\) at ops\[0\]: needs a text column"),
    ("glob on blob", [OP("GLOB", "photo", ("*",))], "needs a text column"),
    ("contains on int", [OP("CONTAINS", "age", ("3",))], "needs a text column"),
    ("NaN", [OP("EQUAL_TO", "salary", (float("nan"),))], "NaN"),
    ("huge int", [OP("EQUAL_TO", "age", (2**63,))], "64 bits"),
    ("NUL in text", [OP("EQUAL_TO", "name", ("a\x00b",))], "NUL"),
    (
        "long pattern",
        [OP("GLOB", "name", ("a" * (MAX_PATTERN_CHARS + 1),))],
        rf"pattern longer than {MAX_PATTERN_CHARS} characters \(datashare.max_pattern_chars\)",
    ),
    ("long contains", [OP("CONTAINS", "name", ("a" * (MAX_PATTERN_CHARS + 1),))], "pattern longer"),
    ("limit without values", [OP("LIMIT")], r"limit\(\) at ops\[0\]: takes 2 value"),
    ("limit with one value", [OP("LIMIT", values=(3,))], "takes 2 value"),
    ("limit total not int", [OP("LIMIT", values=("3", 0))], "total must be an integer"),
    ("limit offset bool", [OP("LIMIT", values=(3, True))], "offset must be an integer"),
    ("limit huge", [OP("LIMIT", values=(2**64, 0))], "does not fit in 64 bits"),
    (
        "two limits",
        [OP("LIMIT", values=(3, 0)), OP("LIMIT", values=(4, 0))],
        r"ops\[1\]: limit\(\) given more",
    ),
    ("unknown op", [OP("UNKNOWN_99", "age")], r"ops\[0\]: unknown predicate op type 'UNKNOWN_99'"),
    ("unspecified op", [OP("UNSPECIFIED")], "unknown predicate op type 'UNSPECIFIED'"),
    ("lowercase op", [OP("equal_to", "age", (1,))], "unknown predicate op type"),
]


@pytest.mark.parametrize(
    ("ops", "message"), [(o, m) for _, o, m in VALIDATION], ids=[v[0] for v in VALIDATION]
)
def test_invalid_op_lists_are_refused_with_a_clear_message(ops: list[PredicateOp], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        compile_predicates(ops, people)


def test_validation_also_applies_to_what_arrives_over_the_wire() -> None:
    p = P().equal_to("age", 1).or_()
    with pytest.raises(InvalidArgument, match="dangling"):
        compile_predicates(P.from_proto(p.to_proto()), people)


def test_wraps_may_not_nest_without_bound() -> None:
    ok = [OP("BEGIN_WRAP")] * MAX_WRAP_DEPTH + [OP("IS_NULL", "age")] + [OP("END_WRAP")] * MAX_WRAP_DEPTH
    assert compile_predicates(ok, people).where is not None
    deep = 10_000
    with pytest.raises(InvalidArgument, match="nest deeper"):
        compile_predicates(
            [OP("BEGIN_WRAP")] * deep + [OP("IS_NULL", "age")] + [OP("END_WRAP")] * deep, people
        )


def test_long_chains_run_up_to_a_bound(engine: sa.Engine) -> None:
    """SQLite parses `a OR b OR ...` into a tree as deep as the chain and stops at depth 1000."""
    p = P()
    for n in range(MAX_CONDITIONS - 1):
        p.equal_to("age", n).or_()
    p.is_null("age")
    expected = [r["id"] for r in ROWS if r["age"] is None or r["age"] < MAX_CONDITIONS - 1]
    assert sorted(select_ids(engine, p)) == expected
    with pytest.raises(InvalidArgument, match=f"more than {MAX_CONDITIONS} conditions"):
        compile_predicates(P(p.ops).and_().is_null("name"), people)


def test_bound_values_are_bounded(engine: sa.Engine) -> None:
    ids = list(range(MAX_VALUES))
    assert sorted(select_ids(engine, P().in_("id", ids))) == ALL_IDS
    with pytest.raises(InvalidArgument, match=f"more than {MAX_VALUES} values"):
        compile_predicates(P().in_("id", ids).or_().equal_to("id", 1), people)


def test_patterns_up_to_the_bound_run(engine: sa.Engine) -> None:
    w = MAX_PATTERN_WILDCARDS
    assert select_ids(engine, P().like("name", "%" * w)) == where("name", lambda v: True)
    assert select_ids(engine, P().glob("name", "*" * w)) == where("name", lambda v: True)
    longest = "%" * w + "x" * (MAX_PATTERN_CHARS - w)
    assert select_ids(engine, P().like("name", longest)) == []
    assert select_ids(engine, P().contains("name", "%_" * (MAX_PATTERN_CHARS // 2))) == []


@pytest.mark.parametrize(
    ("op", "pattern"),
    [
        ("LIKE", "%a" * MAX_PATTERN_WILDCARDS + "_"),
        ("UNLIKE", "_" * (MAX_PATTERN_WILDCARDS + 1)),
        ("GLOB", "*?[" * (MAX_PATTERN_WILDCARDS // 3) + "]*?"),
    ],
)
def test_wildcards_are_bounded(op: str, pattern: str) -> None:
    """Each pattern holds one wildcard more than allowed; literal values (contains) have none."""
    limit = rf"{MAX_PATTERN_WILDCARDS} \(datashare.max_pattern_wildcards\)"
    with pytest.raises(InvalidArgument, match=limit):
        compile_predicates([OP(op, "name", (pattern,))], people)


def test_pattern_limits_are_the_callers() -> None:
    """The daemon passes its settings; the defaults are those of datashare.max_pattern_*."""
    from datamgr.config import DataShareSettings
    from datamgr.datashare._compile import PatternLimits

    defaults = DataShareSettings()
    assert (defaults.max_pattern_chars, defaults.max_pattern_wildcards) == (
        MAX_PATTERN_CHARS,
        MAX_PATTERN_WILDCARDS,
    )
    tight = PatternLimits(chars=4, wildcards=1)
    assert compile_predicates([OP("LIKE", "name", ("ab%",))], people, limits=tight).where is not None
    with pytest.raises(InvalidArgument, match="longer than 4 characters"):
        compile_predicates([OP("BEGINS_WITH", "name", ("abcde",))], people, limits=tight)
    with pytest.raises(InvalidArgument, match="2 wildcards, more than 1"):
        compile_predicates([OP("LIKE", "name", ("%a%",))], people, limits=tight)


def test_unknown_dialect_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unsupported dialect 'mysql'"):
        compile_predicates([], people, dialect="mysql")


# ---- injection ----

EVIL = "x'; DROP TABLE people; --"


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(people)).scalar_one())


@pytest.mark.parametrize(
    "p",
    [
        P().equal_to("name", EVIL),
        P().equal_to("name", "' OR '1'='1"),
        P().like("name", "%' OR 1=1 --"),
        P().glob("name", "*' OR 1=1 --"),
        P().contains("name", EVIL),
        P().in_("name", [EVIL, '") OR 1=1 --']),
        P().between("name", EVIL, EVIL + "z"),
        P().equal_to("photo", EVIL.encode()),
    ],
)
def test_injection_in_values_matches_nothing_and_changes_nothing(
    engine: sa.Engine, p: DataSharePredicates
) -> None:
    assert select_ids(engine, p) == []
    assert _count(engine) == len(ROWS)
    sql = str(build_select(people, compile_predicates(p, people), None).compile(dialect=postgresql.dialect()))
    assert "DROP" not in sql
    assert "1=1" not in sql


@pytest.mark.parametrize(
    "name", ["name; DROP", "name; DROP TABLE people; --", "people.name", '"name"', "name ", "NAME", "1", "*"]
)
def test_injection_in_names_is_refused(name: str) -> None:
    for p in (
        P().equal_to(name, "x"),
        P().is_null(name),
        P().order_by_asc(name),
        P().in_(name, []),
        P().group_by(["age", name]),
    ):
        with pytest.raises(InvalidArgument, match="unknown column"):
            compile_predicates(p, people)
    with pytest.raises(InvalidArgument, match="unknown column"):
        build_select(people, compile_predicates(P(), people), ["id", name])


def test_delete_with_an_injected_value_deletes_nothing(engine: sa.Engine) -> None:
    compiled = compile_predicates(P().equal_to("name", EVIL).limit(5), people)
    with engine.begin() as conn:
        assert conn.execute(sa.delete(people).where(write_where(people, compiled, "id"))).rowcount == 0
    assert _count(engine) == len(ROWS)


# ---- update / delete ----


@pytest.fixture
def write_engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine("sqlite://")
    metadata.create_all(eng)
    with eng.begin() as conn:
        conn.execute(people.insert(), ROWS)
    yield eng
    eng.dispose()


def write_where(
    table: sa.Table, compiled: CompiledPredicates, pk: sa.Column[Any] | str
) -> ColumnElement[bool]:
    where = build_where_for_write(table, compiled, pk)
    assert where is not None
    return where


def _ids_left(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(people.c.id)).scalars())


def test_delete_with_order_and_limit_removes_exactly_those_rows(write_engine: sa.Engine) -> None:
    p = P().is_not_null("age").order_by_desc("age").limit(2)
    compiled = compile_predicates(p, people)
    oldest = [r["id"] for r in sorted((r for r in ROWS if r["age"] is not None), key=lambda r: -r["age"])[:2]]
    with write_engine.begin() as conn:
        assert conn.execute(sa.delete(people).where(write_where(people, compiled, "id"))).rowcount == 2
    assert _ids_left(write_engine) == sorted(set(ALL_IDS) - set(oldest))


def test_update_with_limit_and_offset(write_engine: sa.Engine) -> None:
    compiled = compile_predicates(P().equal_to("active", True).order_by_asc("id").limit(2, 1), people)
    active = [r["id"] for r in ROWS if r["active"] is True]
    stmt = sa.update(people).where(write_where(people, compiled, people.c.id)).values(name="changed")
    with write_engine.begin() as conn:
        assert conn.execute(stmt).rowcount == 2
        changed = conn.execute(sa.select(people.c.id).where(people.c.name == "changed")).scalars().all()
    assert sorted(changed) == active[1:3]


def test_delete_with_offset_only(write_engine: sa.Engine) -> None:
    compiled = compile_predicates([OP("ORDER_BY_ASC", "id"), OP("LIMIT", values=(0, 7))], people)
    with write_engine.begin() as conn:
        conn.execute(sa.delete(people).where(write_where(people, compiled, "id")))
    assert _ids_left(write_engine) == ALL_IDS[:7]


def test_write_without_limit_uses_the_plain_where(write_engine: sa.Engine) -> None:
    compiled = compile_predicates(P().greater_than("age", 30).order_by_asc("age"), people)
    assert build_where_for_write(people, compiled, "id") is compiled.where
    assert build_where_for_write(people, compile_predicates(P(), people), "id") is None
    with write_engine.begin() as conn:
        conn.execute(sa.delete(people).where(write_where(people, compiled, "id")))
    assert _ids_left(write_engine) == sorted(set(ALL_IDS) - set(where("age", lambda v: v > 30)))


@pytest.mark.parametrize("p", [P().distinct(), P().group_by(["age"]), P().distinct().limit(1)])
def test_write_refuses_distinct_and_group_by(p: DataSharePredicates) -> None:
    with pytest.raises(InvalidArgument, match="cannot be used to update or delete"):
        build_where_for_write(people, compile_predicates(p, people), "id")


def test_write_refuses_an_unknown_primary_key_name() -> None:
    with pytest.raises(InvalidArgument, match="unknown column 'nope'"):
        build_where_for_write(people, compile_predicates(P().limit(1), people), "nope")


# ---- PostgreSQL ----


def _every_op() -> DataSharePredicates:
    return (
        P()
        .equal_to("name", "a")
        .not_equal_to("age", 1)
        .greater_than("salary", 1.5)
        .less_than("photo", b"x")
        .greater_than_or_equal_to("age", 2)
        .less_than_or_equal_to("age", 3)
        .or_()
        .begin_wrap()
        .like("name", "a%")
        .unlike("name", "b_")
        .glob("name", "[a-c]*?")
        .contains("name", "50%")
        .begins_with("name", "x")
        .ends_with("name", "y")
        .end_wrap()
        .and_()
        .is_null("age")
        .is_not_null("salary")
        .in_("age", [1, 2])
        .not_in("name", ["q"])
        .in_("age", [])
        .not_in("age", [])
        .between("age", 1, 9)
        .not_between("salary", 0, 1)
        .equal_to("active", True)
        .order_by_asc("age")
        .order_by_desc("name")
        .limit(10, 5)
    )


def test_postgresql_compile_produces_valid_looking_sql() -> None:
    compiled = compile_predicates(_every_op(), people, dialect="postgresql")
    stmt = build_select(people, compiled, ["id", "name", "age"])
    pg = postgresql.dialect()
    sql = str(stmt.compile(dialect=pg))
    assert "GLOB" not in sql
    assert "people.name ~ %(" in sql
    assert "ORDER BY people.age ASC NULLS FIRST, people.name DESC NULLS LAST" in sql
    assert re.search(r"LIMIT %\(param_\d+\)s::BIGINT OFFSET %\(param_\d+\)s::BIGINT$", sql)
    assert "ESCAPE '/'" in sql
    assert "NOT BETWEEN" in sql
    params = stmt.compile(dialect=pg).params
    assert "(?s)^[a-c].*.$" in params.values()
    assert "50/%" in params.values()  # contains() escaped the user's %
    # literal rendering exercises every bind type with the PostgreSQL dialect
    literal = str(stmt.compile(dialect=pg, compile_kwargs={"literal_binds": True}))
    assert "people.name ~ '(?s)^[a-c].*.$'" in literal
    write = sa.delete(people).where(write_where(people, compiled, "id"))
    write_sql = str(write.compile(dialect=pg))
    assert write_sql.startswith(
        "DELETE FROM people WHERE people.id IN (SELECT people.id \nFROM people \nWHERE"
    )


def test_postgresql_binds_numbers_by_the_column_type_not_the_python_value() -> None:
    """Typed by the value, `real IN (0, 1.5)` became `IN (0::INTEGER, 1.5::INTEGER)` on PostgreSQL."""
    p = P().in_("salary", [0, 1.5]).equal_to("salary", 3_000_000_000).between("age", 1, 2**40).in_("age", [2])
    stmt = build_select(people, compile_predicates(p, people, dialect="postgresql"), ["id"])
    compiled = stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"render_postcompile": True})
    assert "INTEGER" not in str(compiled)
    assert str(compiled).count("::BIGINT") == 3
    params = list(compiled.params.values())
    assert sorted(map(repr, params)) == sorted(map(repr, [0.0, 1.5, 3e9, 1, 2**40, 2]))


def test_postgresql_glob_that_cannot_match_compiles_to_false() -> None:
    compiled = compile_predicates(P().glob("name", "a[bc"), people, dialect="postgresql")
    assert str(build_select(people, compiled, ["id"]).compile(dialect=postgresql.dialect())).endswith(
        "WHERE false"
    )


def test_sqlite_keeps_the_default_null_order_and_uses_glob() -> None:
    compiled = compile_predicates(P().glob("name", "a*").order_by_asc("age").order_by_desc("id"), people)
    sql = str(build_select(people, compiled, ["id"]).compile(dialect=sqlite.dialect()))
    assert "people.name GLOB ?" in sql
    assert "ORDER BY people.age ASC, people.id DESC" in sql


# ---- GLOB translation, checked against SQLite's own GLOB ----


def test_glob_to_regex_examples() -> None:
    assert glob_to_regex("a*b?c") == "(?s)^a.*b.c$"
    assert glob_to_regex("[^]a-c-]") == r"(?s)^[^\]a-c\-]$"
    assert glob_to_regex("x.y(z)\\") == r"(?s)^x\.y\(z\)\\$"
    assert glob_to_regex("é+") == r"(?s)^é\+$"
    assert glob_to_regex("[z-a]") == "(?s)^[z]$"  # a reversed range adds nothing, z stays
    assert glob_to_regex("[a-a-]") == r"(?s)^[a\-]$"
    assert glob_to_regex("[") is None
    assert glob_to_regex("a[]") is None
    assert glob_to_regex("") == "(?s)^$"


@pytest.fixture(scope="module")
def sqlite_conn() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    yield conn
    conn.close()


_glob_alphabet = "ab-]^[*?\\.$(|+{é\n"


@relaxed
@given(st.text(_glob_alphabet, max_size=8), st.text(_glob_alphabet, max_size=6))
def test_glob_to_regex_matches_like_sqlite_glob(
    sqlite_conn: sqlite3.Connection, pattern: str, s: str
) -> None:
    want = bool(sqlite_conn.execute("SELECT ? GLOB ?", (s, pattern)).fetchone()[0])
    regex = glob_to_regex(pattern)
    assert (regex is not None and re.fullmatch(regex, s) is not None) == want


# ---- property: random well-formed predicates vs a three-valued-logic reference ----

props = sa.MetaData()
t = sa.Table(
    "t",
    props,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("i", sa.Integer),
    sa.Column("r", sa.Float),
    sa.Column("s", sa.Text),
)
# Few letters so that values and patterns often match; every LIKE and GLOB metacharacter appears.
_texts = st.text(st.sampled_from("aaAbb%_-[*"), max_size=3)
_patterns = st.text(st.sampled_from("aAb%%__**?[]^-"), max_size=3)
_ints = st.integers(-3, 3)
_reals = st.one_of(st.integers(-2, 3), st.sampled_from([-1.5, 0.0, 0.5, 1.0, 2.5]))
_VALUES = {"i": _ints, "r": _reals, "s": _texts}
_rows = st.lists(
    st.fixed_dictionaries({"i": st.none() | _ints, "r": st.none() | _reals, "s": st.none() | _texts}),
    max_size=12,
).map(lambda rows: [{"id": n, **row} for n, row in enumerate(rows, start=1)])

_COMPARE_OPS = ["EQUAL_TO", "NOT_EQUAL_TO", "GREATER_THAN", "LESS_THAN"]
_COMPARE_OPS += ["GREATER_THAN_OR_EQUAL_TO", "LESS_THAN_OR_EQUAL_TO"]
_TEXT_OPS = ["LIKE", "UNLIKE", "GLOB", "CONTAINS", "BEGINS_WITH", "ENDS_WITH"]


_ALL_OPS = [*_COMPARE_OPS, "IN", "NOT_IN", "BETWEEN", "NOT_BETWEEN", "IS_NULL", "IS_NOT_NULL", *_TEXT_OPS]


@st.composite
def _conditions(draw: st.DrawFn, types: list[str] = _ALL_OPS) -> PredicateOp:
    """One condition on a column it fits, with values of the column's type."""
    ty = draw(st.sampled_from(types))
    col = "s" if ty in _TEXT_OPS else draw(st.sampled_from("irs"))
    value = _VALUES[col]
    if ty in ("IN", "NOT_IN"):
        return OP(ty, col, tuple(draw(st.lists(value, max_size=3))))
    if ty in ("BETWEEN", "NOT_BETWEEN"):
        return OP(ty, col, (draw(value), draw(value)))
    if ty in ("IS_NULL", "IS_NOT_NULL"):
        return OP(ty, col)
    return OP(ty, col, (draw(_patterns | _texts if ty in _TEXT_OPS else value),))


# A tree is ("leaf", op) or ("and" | "or", [subtrees]).
_trees = st.recursive(
    _conditions().map(lambda op: ("leaf", op)),
    lambda sub: st.tuples(st.sampled_from(["and", "or"]), st.lists(sub, min_size=2, max_size=3)),
    max_leaves=8,
)


def _flatten(tree: Any, parent: str, draw: Callable[[Any], Any]) -> list[PredicateOp]:
    """The op list for `tree`: explicit or implicit ANDs, wraps where precedence needs them and
    sometimes where it does not."""
    kind = tree[0]
    if kind == "leaf":
        ops = [tree[1]]
    else:
        ops = _flatten(tree[1][0], kind, draw)
        for sub in tree[1][1:]:
            if kind == "or":
                ops.append(OP("OR"))
            elif draw(st.booleans()):
                ops.append(OP("AND"))
            ops += _flatten(sub, kind, draw)
    if (kind == "or" and parent == "and") or draw(st.integers(0, 4)) == 0:
        ops = [OP("BEGIN_WRAP"), *ops, OP("END_WRAP")]
    return ops


def _eval_op(op: PredicateOp, row: dict[str, Any]) -> bool | None:
    """SQL's answer for one row: True, False or None (unknown)."""
    v: Any = row[op.field]
    args, ty = op.values, op.type
    if ty == "IS_NULL":
        return v is None
    if ty == "IS_NOT_NULL":
        return v is not None
    if ty in ("IN", "NOT_IN") and not args:
        return ty == "NOT_IN"
    if v is None:
        return None
    if ty in ("IN", "NOT_IN"):
        return (v in args) == (ty == "IN")
    if ty in ("BETWEEN", "NOT_BETWEEN"):
        return (args[0] <= v <= args[1]) == (ty == "BETWEEN")
    a: Any = args[0]
    results: dict[str, Callable[[], bool]] = {
        "EQUAL_TO": lambda: v == a,
        "NOT_EQUAL_TO": lambda: v != a,
        "GREATER_THAN": lambda: v > a,
        "LESS_THAN": lambda: v < a,
        "GREATER_THAN_OR_EQUAL_TO": lambda: v >= a,
        "LESS_THAN_OR_EQUAL_TO": lambda: v <= a,
        "LIKE": lambda: _like(a, v),
        "UNLIKE": lambda: not _like(a, v),
        # literal text (the compiler escapes % and _), ASCII case ignored as by SQLite's LIKE
        "CONTAINS": lambda: a.lower() in v.lower(),
        "BEGINS_WITH": lambda: v.lower().startswith(a.lower()),
        "ENDS_WITH": lambda: v.lower().endswith(a.lower()),
        "GLOB": lambda: (rx := glob_to_regex(a)) is not None and re.fullmatch(rx, v) is not None,
    }
    return results[ty]()


def _eval(tree: Any, row: dict[str, Any]) -> bool | None:
    if tree[0] == "leaf":
        return _eval_op(tree[1], row)
    results = [_eval(sub, row) for sub in tree[1]]
    if tree[0] == "and":
        return False if False in results else None if None in results else True
    return True if True in results else None if None in results else False


@pytest.fixture(scope="module")
def prop_engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine("sqlite://")
    props.create_all(eng)
    yield eng
    eng.dispose()


def _run(engine: sa.Engine, rows: list[dict[str, Any]], stmt: sa.Select[Any]) -> list[int]:
    with engine.connect() as conn, conn.begin() as tx:
        if rows:
            conn.execute(t.insert(), rows)
        ids = [row[0] for row in conn.execute(stmt)]
        tx.rollback()
    return ids


@pytest.mark.parametrize("op_type", _ALL_OPS)
def test_each_random_condition_selects_what_the_reference_selects(
    prop_engine: sa.Engine, op_type: str
) -> None:
    @settings(relaxed, max_examples=30)
    @given(rows=_rows, op=_conditions([op_type]))
    def check(rows: list[dict[str, Any]], op: PredicateOp) -> None:
        got = _run(prop_engine, rows, build_select(t, compile_predicates([op], t), ["id"]))
        assert sorted(got) == [row["id"] for row in rows if _eval_op(op, row) is True]

    check()


@settings(relaxed, max_examples=200)
@given(rows=_rows, tree=_trees, data=st.data())
def test_random_predicates_select_what_three_valued_logic_selects(
    prop_engine: sa.Engine, rows: list[dict[str, Any]], tree: Any, data: st.DataObject
) -> None:
    ops = _flatten(tree, "top", data.draw)
    if data.draw(st.booleans()):  # clause ops anywhere in the list leave the WHERE alone
        ops.insert(
            data.draw(st.integers(0, len(ops))), OP("ORDER_BY_DESC", data.draw(st.sampled_from("irs")))
        )
    compiled = compile_predicates(ops, t)
    got = _run(prop_engine, rows, build_select(t, compiled, ["id"]))
    expected = [row["id"] for row in rows if _eval(tree, row) is True]
    assert sorted(got) == expected


@relaxed
@given(
    rows=_rows,
    keys=st.lists(st.tuples(st.sampled_from("irs"), st.booleans()), max_size=2),
    total=st.integers(-1, 5),
    offset=st.integers(-1, 5),
)
def test_random_order_and_paging_match_python(
    prop_engine: sa.Engine, rows: list[dict[str, Any]], keys: list[tuple[str, bool]], total: int, offset: int
) -> None:
    ops = [OP("ORDER_BY_DESC" if desc else "ORDER_BY_ASC", col) for col, desc in keys]
    ops += [OP("ORDER_BY_ASC", "id"), OP("LIMIT", values=(total, offset))]
    got = _run(prop_engine, rows, build_select(t, compile_predicates(ops, t), ["id"]))
    expected = sorted(rows, key=lambda r: r["id"])
    for col, desc in reversed(keys):  # stable sorts, last key first; NULL is the smallest value

        def key(r: dict[str, Any], c: str = col) -> tuple[bool, Any]:
            return (r[c] is not None, r[c] if r[c] is not None else 0)

        expected.sort(key=key, reverse=desc)
    expected = expected[max(offset, 0) :]
    if total > 0:
        expected = expected[:total]
    assert got == [r["id"] for r in expected]

"""KV query budgets (issue 10, point 2): pattern limits refuse costly patterns before any work, a long
match checks the budget between bounded steps, a query checks it every few entries and streams its
entries, and the budget stops it with DEADLINE_EXCEEDED naming kv.max_query_ms (or the deadline, or a
cancel). Also: the compiled matcher agrees with a regex reference, in small windows too."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamgr.budget import Watchdog
from datamgr.errors import Cancelled, DeadlineExceeded, InvalidArgument
from datamgr.hlc import HLC
from datamgr.kv import _like
from datamgr.kv._like import Like
from datamgr.kv._run import QueryBudget, select
from datamgr.kv.query import MAX_PATTERN_CHARS, MAX_PATTERN_WILDCARDS, PatternLimits, Query, compile_query
from datamgr.kv.storage import KvStorage, StoreKind, Value
from datamgr.storage import create_engine

STORE = "com.evil.kv/blobs"


class Stop(Exception):
    """What the test's check raises to end a query."""


def checks_until(n: int) -> tuple[list[int], object]:
    """A check that counts its calls and raises Stop at the n-th."""
    calls = [0]

    def check() -> None:
        calls[0] += 1
        if calls[0] >= n:
            raise Stop

    return calls, check


# ---- pattern limits ----


def test_patterns_over_the_limits_are_refused_naming_the_setting() -> None:
    longest = "%" * MAX_PATTERN_WILDCARDS + "x" * (MAX_PATTERN_CHARS - MAX_PATTERN_WILDCARDS)
    compile_query(Query().like("s", longest).unlike("s", longest).ops)
    with pytest.raises(
        InvalidArgument, match=r"ops\[0\] like: pattern longer than 128 .*kv.max_pattern_chars"
    ):
        compile_query(Query().like("s", "x" * (MAX_PATTERN_CHARS + 1)).ops)
    with pytest.raises(InvalidArgument, match=r"ops\[1\] unlike: pattern with 17 wildcards.*wildcards\)"):
        compile_query(Query().equal_to("n", 1).unlike("s", "_%" * 8 + "_").ops)
    limits = PatternLimits(chars=2000, wildcards=1)  # the daemon's settings reach the compiler
    compile_query(Query().like("s", "%" + "x" * 1500).ops, limits)
    with pytest.raises(InvalidArgument, match="2 wildcards, more than 1"):
        compile_query(Query().like("s", "%x%").ops, limits)


# ---- the matcher ----

# Kelvin sign, long s and dotted I fold to ASCII letters in Unicode, not in LIKE
ALPHABET = "abAB%_\n\u212a\u017f\u0130éÉ\ud800"


def _reference(text: str, pattern: str) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    lower = str.maketrans("AB", "ab")
    return re.fullmatch(regex.translate(lower), text.translate(lower), re.DOTALL) is not None


@given(st.text(alphabet=ALPHABET, max_size=40), st.text(alphabet=ALPHABET, max_size=8))
def test_the_matcher_agrees_with_the_reference_in_tiny_windows(text: str, pattern: str) -> None:
    saved = (_like._STEP, _like._MIN_WINDOW)
    _like._STEP, _like._MIN_WINDOW = 1, 1  # every search runs window by window
    try:
        _, check = checks_until(10**9)
        assert Like(pattern).match(text, check) == _reference(text, pattern)  # type: ignore[arg-type]
    finally:
        _like._STEP, _like._MIN_WINDOW = saved


def test_a_long_match_checks_the_budget_between_steps() -> None:
    text = "a" * 4_000_000
    pattern = Like("%" + "a_" * 8 + "a" * 109 + "b%")  # never matches; ~0.7 s of C without a stop
    calls, check = checks_until(3)
    with pytest.raises(Stop):
        pattern.match(text, check)  # type: ignore[arg-type]
    assert calls[0] == 3
    calls, check = checks_until(10**9)
    assert not Like("%" + "a" * 100 + "b%").match(text, check)  # type: ignore[arg-type]
    assert calls[0] > 10  # literal segments are searched in windows too
    assert Like("%A_B").match("x" * 100_000 + "aXb")  # a short text or no budget: no check needed


# ---- the query ----


def test_a_query_checks_every_few_entries_and_streams_them() -> None:
    endless = ((f"k{i:09}", json.dumps({"n": i})) for i in itertools.count())
    calls, check = checks_until(100)
    with pytest.raises(Stop):  # an endless stream, stopped by its budget
        compile_query(Query().equal_to("n", -1).ops).select(endless, check)  # type: ignore[arg-type]
    ordered = compile_query(Query().order_by_desc("n").ops)
    calls, check = checks_until(10**9)
    rows = [(f"k{i}", json.dumps({"n": i % 7})) for i in range(200)]
    assert [json.loads(v)["n"] for _, v in ordered.select(rows, check)][:8] == [6] * 8  # type: ignore[arg-type]
    assert calls[0] >= 2 * 200 // 32  # filtering and ordering both check, every 32 entries


def test_in_lists_compare_within_their_kind() -> None:
    rows = [("a", json.dumps({"n": 1})), ("b", json.dumps({"n": True})), ("c", json.dumps({"n": "1"}))]
    rows.append(("d", json.dumps({"n": [1]})))
    assert [k for k, _ in compile_query(Query().in_number("n", [1.0, 5]).ops).select(rows)] == ["a"]
    assert [k for k, _ in compile_query(Query().not_in_string("n", ["1"]).ops).select(rows)] == [
        "a",
        "b",
        "d",
    ]


def test_budget_errors_name_the_setting_the_deadline_or_the_cancel() -> None:
    budget = QueryBudget(10, "kv.max_query_ms")
    budget._start()
    time.sleep(0.05)
    with pytest.raises(DeadlineExceeded, match=r"longer than kv.max_query_ms \(10 ms\)"):
        budget.check()
    late = QueryBudget(3_600_000, "kv.max_query_ms", timeout_s=0.01)
    late._start()
    time.sleep(0.05)
    with pytest.raises(DeadlineExceeded, match="deadline passed"):
        late.check()
    watchdog = Watchdog()
    try:
        gone = QueryBudget(3_600_000, "kv.max_query_ms")
        gone._start()
        watchdog.cancel(gone)
        with pytest.raises(Cancelled):
            gone.check()
    finally:
        watchdog.close()


# ---- against the storage ----


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[KvStorage]:
    engine = create_engine(f"sqlite:///{tmp_path / 'kv.db'}")
    storage = KvStorage(engine, "devA", HLC())
    storage.create_store("com.evil.kv", "blobs", StoreKind.SINGLE_VERSION, 1)
    yield storage
    engine.dispose()


def _run(kv: KvStorage, query: Query, ms: int = 60_000, pending: object = None) -> list[tuple[str, object]]:
    watchdog = Watchdog()
    try:
        budget = QueryBudget(ms, "kv.max_query_ms")
        return select(kv, watchdog, budget, STORE, compile_query(query.ops), None, pending)  # type: ignore[arg-type]
    finally:
        watchdog.close()


def test_select_streams_the_store_with_the_transactions_writes_over_it(kv: KvStorage) -> None:
    kv.write(STORE, [(k.encode(), Value.of(json.dumps({"n": i}))) for i, k in enumerate("abcde")], [])
    pending = {b"b": (None, 1), b"a": (Value.of(json.dumps({"n": 9})), 9), b"f": (Value.of("{}"), 2)}
    assert [k for k, _ in _run(kv, Query(), pending=pending)] == ["a", "c", "d", "e", "f"]
    assert _run(kv, Query().greater_than("n", 2).order_by_desc("n"), pending=pending) == [
        ("a", '{"n": 9}'),
        ("e", '{"n": 4}'),
        ("d", '{"n": 3}'),
    ]
    assert [k for k, _ in _run(kv, Query().prefix_key("c"))] == ["c"]


def test_a_pathological_query_over_large_values_is_stopped_by_its_budget(kv: KvStorage) -> None:
    big = json.dumps({"s": "a" * 4_000_000})
    for key in (b"v1", b"v2", b"v3"):
        kv.write(STORE, [(key, Value.of(big))], [])
    query = Query()
    for i in range(20):  # about 40 s of matching without a budget
        query = query.or_() if i else query
        query.like("s", "%" + "a_" * 8 + "a" * 108 + "b" * (1 + i % 2) + "%")
    with pytest.raises(DeadlineExceeded, match=r"the query ran longer than kv.max_query_ms \(200 ms\)"):
        _run(kv, query, ms=200)
    assert (
        kv.get(STORE, b"v1") is not None and len(_run(kv, Query().prefix_key("v"))) == 3
    )  # the connection is fine


def test_the_watchdog_interrupts_a_long_scan_statement(kv: KvStorage) -> None:
    """The SQL part of a query is guarded too: a cancel while rows are fetched stops the statement."""
    kv.write(STORE, [(f"k{i:04}".encode(), Value.of(i)) for i in range(100)], [])
    kv.write(STORE, [(f"m{i:04}".encode(), Value.of(i)) for i in range(100, 200)], [])
    kv.write(STORE, [(f"n{i:04}".encode(), Value.of(i)) for i in range(200, 300)], [])
    watchdog = Watchdog()
    fetched = 0
    try:
        budget = QueryBudget(3_600_000, "kv.max_query_ms")
        with kv.engine.connect() as conn, pytest.raises(Cancelled), watchdog.guard(conn, budget):
            for fetched, _ in enumerate(kv.stream(conn, STORE), 1):
                if fetched == 1:
                    watchdog.cancel(budget)  # SQLite fails the statement's next step
    finally:
        watchdog.close()
    assert 1 <= fetched < 300
    assert len(_run(kv, Query())) == 300

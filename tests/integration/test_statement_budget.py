"""One call must not hold the writer (issue 10, point 2), against the real daemon.

The attack: an app registers its own table, stores rows of 800 KB of text and deletes with two long
`%aaa…b` patterns. Every pattern is within the daemon's pattern limits, yet matching both against
every row takes tens of seconds, all on the one writer thread that every app's writes wait for. The
daemon stops it when datashare.max_statement_ms passes, when the call's deadline passes, or when the
caller cancels; the transaction rolls back, and another app's insert waiting behind it goes through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from harness import Daemon

from datamgr.client import DataSharePredicates
from datamgr.client.datashare import insert_request
from datamgr.errors import InvalidArgument, ResourceExhausted
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc

EVIL = "com.evil.tables"
EVIL_URI = f"datashare:///{EVIL}/main/blobs"
NOTES = "com.example.notes"
NOTES_URI = f"datashare:///{NOTES}/main/notes"
ROWS = 48
BODY = "a" * 800_000
# 128 characters, one wildcard: within the limits. Each never matches "aaaa…", at ~0.25 s a row and
# pattern here, so the delete (`unlike`: every row) would take ~25 s and then delete every row.
PATTERNS = ["%" + "a" * 126 + "b", "%" + "a" * 125 + "bb"]
GENEROUS_S = 15.0  # a bound for another app's insert: a few times the 2 s budget, under the ~25 s attack


def manifest(bundle: str, table: str) -> dict[str, object]:
    columns = [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}]
    tables = [{"name": table, "primary_key": "id", "columns": columns}]
    return {"bundle": bundle, "stores": [{"name": "main", "tables": tables}]}


@dataclass
class Env:
    daemon: Daemon
    stub: pb_grpc.DataShareServiceStub
    evil_token: str
    notes_token: str

    @property
    def evil(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.evil_token}"),)

    @property
    def notes(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.notes_token}"),)


def _env(tmp: Path, env: dict[str, str]) -> Iterator[Env]:
    daemon = Daemon(tmp / "data", env={"DATAMGR_AI__ENABLED": "false", **env}).start()
    try:
        evil, notes = daemon.add_app(EVIL), daemon.add_app(NOTES)
        with daemon.helper(evil) as h:
            h.register_provider(manifest(EVIL, "blobs"))
            for _ in range(ROWS):
                h.insert(EVIL_URI, {"body": BODY})
        with daemon.helper(notes) as h:
            h.register_provider(manifest(NOTES, "notes"))
        with grpc.insecure_channel(daemon.address) as channel:
            yield Env(daemon, pb_grpc.DataShareServiceStub(channel), evil, notes)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A daemon with the default budget (datashare.max_statement_ms 2000)."""
    yield from _env(tmp_path_factory.mktemp("budget"), {})


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A daemon whose budget never ends a statement first: only the caller can stop it."""
    yield from _env(tmp_path_factory.mktemp("patient"), {"DATAMGR_DATASHARE__MAX_STATEMENT_MS": "3600000"})


def attack() -> pb.DeleteRequest:
    p = DataSharePredicates()
    for pattern in PATTERNS:
        p.unlike("body", pattern)
    return pb.DeleteRequest(uri=EVIL_URI, predicates=p.to_proto())


def other_insert(env: Env) -> grpc.Future:
    """Another app's insert into its own table, queued behind whatever holds the writer."""
    request = insert_request(NOTES_URI, {"body": "buy milk"})
    return env.stub.Insert.future(request, metadata=env.notes, timeout=GENEROUS_S)


def evil_rows(env: Env) -> int:
    with env.daemon.helper(env.evil_token) as h, h.query(EVIL_URI, columns=["id"]) as rs:
        return rs.row_count


def test_the_budget_stops_the_attack_and_frees_the_writer(env: Env) -> None:
    call = env.stub.Delete.future(attack(), metadata=env.evil, timeout=300)
    time.sleep(1.0)  # let it take the writer
    waiting = other_insert(env)
    assert waiting.result().row_id > 0  # within GENEROUS_S, while the attack alone would run ~25 s
    with pytest.raises(grpc.RpcError) as info:
        call.result()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "datashare.max_statement_ms (2000 ms)" in info.value.details()
    assert evil_rows(env) == ROWS  # rolled back: nothing deleted


def test_a_long_query_is_stopped_too(env: Env) -> None:
    """A query holds a reader thread and a snapshot: the same budget bounds each page."""
    p = DataSharePredicates()
    for pattern in PATTERNS:
        p.like("body", pattern)
    with pytest.raises(grpc.RpcError) as info:
        list(env.stub.Query(pb.QueryRequest(uri=EVIL_URI, predicates=p.to_proto()), metadata=env.evil))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "datashare.max_statement_ms" in info.value.details()


def test_cancelling_the_call_frees_the_writer(patient: Env) -> None:
    call = patient.stub.Delete.future(attack(), metadata=patient.evil, timeout=300)
    time.sleep(1.0)  # let it take the writer
    waiting = other_insert(patient)
    call.cancel()
    assert waiting.result().row_id > 0  # the budget here is an hour: only the cancel freed the writer
    assert evil_rows(patient) == ROWS


def test_the_calls_deadline_stops_it(patient: Env) -> None:
    call = patient.stub.Delete.future(attack(), metadata=patient.evil, timeout=1.5)
    with pytest.raises(grpc.RpcError) as info:
        call.result()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert other_insert(patient).result().row_id > 0
    assert evil_rows(patient) == ROWS


@pytest.mark.parametrize(
    ("pattern", "limit"),
    [("%" + "a" * 128, "datashare.max_pattern_chars"), ("%a" * 17, "datashare.max_pattern_wildcards")],
)
def test_patterns_beyond_the_limits_are_refused(env: Env, pattern: str, limit: str) -> None:
    with env.daemon.helper(env.evil_token) as h, pytest.raises(InvalidArgument, match=limit) as info:
        h.delete(EVIL_URI, DataSharePredicates().like("body", pattern))
    assert info.value.code == "INVALID_ARGUMENT"
    assert evil_rows(env) == ROWS


def test_text_longer_than_the_limit_is_refused_in_a_batch(env: Env) -> None:
    rows = [{"body": "x"}, {"body": "a" * (1024 * 1024 + 1)}]
    limit = r"row 1: .* datashare.max_text_chars \(1048576\)"
    with env.daemon.helper(env.evil_token) as h, pytest.raises(ResourceExhausted, match=limit):
        h.batch_insert(EVIL_URI, rows)
    assert evil_rows(env) == ROWS

"""One KV query must not hold a reader thread (issue 10, point 2, for KV stores), against the real daemon.

The attack: hostile apps store two 4 MB JSON values each in their own KV store and ask GetEntries for
entries whose text matches any of 20 `like` patterns, each within the pattern limits (128 characters,
10 wildcards) but never matching "aaaa…": tens of seconds of matching per query (minutes before the
matcher worked in bounded steps of C). Three apps' queries take every reader thread (each app may hold
half of them), so another app's Get waits. The daemon stops each query when kv.max_query_ms passes,
when the call's deadline passes, or when the caller cancels, and refuses longer patterns.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from harness import Daemon

from datamgr.client import KvStoreClient, KvStoreType, Query, SecurityLevel
from datamgr.connection import metadata
from datamgr.kv._wire import query_to_proto
from datamgr.v1 import kv_pb2 as pb
from datamgr.v1 import kv_pb2_grpc as pb_grpc
from datamgr.v1 import types_pb2

pytestmark = pytest.mark.integration

EVIL = ("com.evil.kv", "com.evil.kv2", "com.evil.kv3")
NOTES = "com.example.notes"
BODY = json.dumps({"s": "a" * 4_000_000})  # just under the 4 MB value limit
VALUES = 2
ATTACKS = 2  # per hostile app: 6 in all, more than the daemon's 4 reader threads
GENEROUS_S = 30.0  # a bound for another app's Get: many times the 2 s budget, far under the attack


def attack_query() -> Query:
    """20 OR'd patterns of 128 characters and 10 wildcards: ~0.7 s each per value, all evaluated."""
    q = Query()
    for i in range(20):
        if i:
            q.or_()
        q.like("$.s", "%" + "a_" * 8 + "a" * 108 + "b" * (1 + i % 2) + "%")
    return q


@dataclass
class Env:
    daemon: Daemon
    stub: pb_grpc.KvStoreServiceStub
    evil: list[tuple[tuple[str, str], ...]]
    notes: tuple[tuple[str, str], ...]

    def notes_put_and_get(self) -> None:
        """Another app's Put (the writer thread) and Get (a reader thread), each within GENEROUS_S."""
        value = types_pb2.Value(string_value="buy")
        put = pb.PutRequest(store="notes", key="bread", value=value)
        self.stub.Put(put, metadata=self.notes, timeout=GENEROUS_S)
        got = self.stub.Get(pb.GetRequest(store="notes", key="milk"), metadata=self.notes, timeout=GENEROUS_S)
        assert got.value.string_value == "buy"

    def entries(self, query: Query, timeout: float | None = 120.0, app: int = 0) -> _Drained:
        """A hostile app's GetEntries of its store, read to the end on a thread of its own."""
        request = pb.GetEntriesRequest(store="blobs", query=query_to_proto(query))
        return _Drained(self.stub.GetEntries(request, metadata=self.evil[app], timeout=timeout))

    def attacks(self, timeout: float | None = 120.0) -> list[_Drained]:
        """Every hostile app's attack queries, all at once."""
        return [
            self.entries(attack_query(), timeout, app) for app in range(len(EVIL)) for _ in range(ATTACKS)
        ]


class _Drained:
    """A streaming call read to its end on a thread of its own."""

    def __init__(self, call: grpc.Call) -> None:
        self.call = call
        pool = concurrent.futures.ThreadPoolExecutor(1)
        self._future = pool.submit(lambda: list(call))  # type: ignore[arg-type]
        pool.shutdown(wait=False)

    def code_and_details(self) -> tuple[grpc.StatusCode, str]:
        try:
            self._future.result()
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    def cancel(self) -> None:
        self.call.cancel()  # type: ignore[attr-defined]


def _env(tmp: Path, env: dict[str, str]) -> Iterator[Env]:
    daemon = Daemon(tmp / "data", env={"DATAMGR_AI__ENABLED": "false", **env}).start()
    try:
        evil, notes = [daemon.add_app(bundle) for bundle in EVIL], daemon.add_app(NOTES)
        single, s1 = KvStoreType.SINGLE_VERSION, SecurityLevel.S1
        for token in evil:
            with KvStoreClient.connect(daemon.address, token) as client:
                blobs = client.get_kv_store("blobs", kind=single, security_level=s1)
                for i in range(VALUES):
                    blobs.put(f"v{i}", BODY)
        with (
            KvStoreClient.connect(daemon.address, notes) as client,
            grpc.insecure_channel(daemon.address) as channel,
        ):
            store = client.get_kv_store("notes", kind=single, security_level=s1)
            store.put("milk", "buy")
            stub = pb_grpc.KvStoreServiceStub(channel)
            yield Env(daemon, stub, [metadata(token) for token in evil], metadata(notes))
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A daemon with the default budget (kv.max_query_ms 2000)."""
    yield from _env(tmp_path_factory.mktemp("kvbudget"), {})


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A daemon whose budget never ends a query first: only the caller can stop it."""
    yield from _env(tmp_path_factory.mktemp("kvpatient"), {"DATAMGR_KV__MAX_QUERY_MS": "3600000"})


def test_a_pattern_over_the_limits_is_refused(env: Env) -> None:
    long = env.entries(Query().like("$.s", "%" + "a" * 1022 + "b"), timeout=GENEROUS_S)
    code, details = long.code_and_details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "kv.max_pattern_chars" in details
    wild = env.entries(Query().like("$.s", "%a" * 17), timeout=GENEROUS_S)
    code, details = wild.code_and_details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "kv.max_pattern_wildcards" in details


def test_the_budget_stops_the_attack_and_other_apps_go_on(env: Env) -> None:
    attacks = env.attacks()
    time.sleep(1.0)  # let them take the reader threads
    env.notes_put_and_get()  # within GENEROUS_S: the budget freed a reader thread
    for attack in attacks:
        code, details = attack.code_and_details()
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "kv.max_query_ms (2000 ms)" in details
    size = pb.GetResultSizeRequest(store="blobs", query=query_to_proto(attack_query()))
    with pytest.raises(grpc.RpcError) as info:
        env.stub.GetResultSize(size, metadata=env.evil[0], timeout=120)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "kv.max_query_ms" in (info.value.details() or "")


def test_cancelling_stops_the_query(patient: Env) -> None:
    attacks = patient.attacks(timeout=None)
    time.sleep(1.0)  # let them take the reader threads
    for attack in attacks:
        attack.cancel()
    for attack in attacks:
        assert attack.code_and_details()[0] == grpc.StatusCode.CANCELLED
    patient.notes_put_and_get()  # the cancelled queries stopped: their threads are free


def test_the_calls_deadline_stops_the_query(patient: Env) -> None:
    attacks = patient.attacks(timeout=3.0)
    for attack in attacks:
        assert attack.code_and_details()[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    patient.notes_put_and_get()  # the daemon stopped them at their deadline: their threads are free

"""KV stores through a real daemon: every RPC, both store kinds, transactions, subscriptions, limits,
isolation between apps and durability (AI disabled)."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from harness import Daemon

from datamgr.cli import main
from datamgr.client import (
    AsyncKvStoreClient,
    ChangeNotification,
    KvEntry,
    KvStoreClient,
    KvStoreInfo,
    KvStoreType,
    Query,
    SecurityLevel,
    SingleKVStore,
    SubscribeType,
    Subscription,
)
from datamgr.connection import metadata
from datamgr.device.identity import load_identity
from datamgr.errors import DatamgrError, InvalidArgument, NotFound, ResourceExhausted
from datamgr.v1 import kv_pb2 as pb
from datamgr.v1 import kv_pb2_grpc as pb_grpc
from datamgr.v1 import types_pb2

pytestmark = pytest.mark.integration

NO_AI = {"DATAMGR_AI__ENABLED": "false"}
APP, OTHER = "com.example.notes", "com.example.game"
DEVICE, SINGLE = KvStoreType.DEVICE_COLLABORATION, KvStoreType.SINGLE_VERSION
KINDS = pytest.mark.parametrize("kind", [DEVICE, SINGLE], ids=["device", "single"])


@dataclass
class Env:
    daemon: Daemon
    token: str
    other_token: str
    client: KvStoreClient
    other: KvStoreClient
    stub: pb_grpc.KvStoreServiceStub
    md: Any


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    daemon = Daemon(tmp_path_factory.mktemp("kv") / "data", env=NO_AI).start()
    try:
        token, other_token = daemon.add_app(APP), daemon.add_app(OTHER)
        with (
            KvStoreClient.connect(daemon.address, token) as client,
            KvStoreClient.connect(daemon.address, other_token) as other,
            grpc.insecure_channel(daemon.address) as channel,
        ):
            yield Env(
                daemon,
                token,
                other_token,
                client,
                other,
                pb_grpc.KvStoreServiceStub(channel),
                metadata(token),
            )
    finally:
        daemon.stop()
    assert "bug in" not in daemon.log()  # no call ended as INTERNAL


_names = iter(range(1_000_000))


def fresh(env: Env, kind: KvStoreType = SINGLE, level: SecurityLevel = SecurityLevel.S2) -> SingleKVStore:
    """A new store of its own for each test."""
    return env.client.get_kv_store(f"s{next(_names)}", kind=kind, security_level=level)


def rpc_error(fn: Callable[..., Any], request: Any, md: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = fn(request, metadata=md)
        if hasattr(result, "__iter__") and not hasattr(result, "ByteSize"):
            list(result)  # a stream fails when read
    return info.value


def everything(store: SingleKVStore) -> list[KvEntry]:
    return store.get_entries()


# ---- stores ----


def test_stores_are_created_opened_listed_and_deleted(env: Env) -> None:
    client = env.client
    notes = client.get_kv_store("notes", kind=SINGLE, security_level=SecurityLevel.S3)
    assert notes.info == KvStoreInfo("notes", SINGLE, SecurityLevel.S3)
    assert notes.local_device_id == load_identity(env.daemon.data_dir).device_id  # the device's own id
    again = client.get_kv_store("notes", kind=SINGLE, security_level=SecurityLevel.S3)  # same options
    assert again.info == notes.info
    opened = client.get_kv_store("notes", kind=None, create_if_missing=False)  # any kind, any level
    assert opened.info == notes.info
    with pytest.raises(InvalidArgument, match="exists as SINGLE_VERSION S3; its options cannot change"):
        client.get_kv_store("notes", kind=DEVICE, security_level=SecurityLevel.S3)
    with pytest.raises(InvalidArgument, match="options cannot change"):
        client.get_kv_store("notes", kind=SINGLE, security_level=SecurityLevel.S1)
    with pytest.raises(NotFound, match="create_if_missing is off"):
        client.get_kv_store("nothing_here", create_if_missing=False)
    with pytest.raises(InvalidArgument, match=r"security level .* is required"):
        client.get_kv_store("no_level")
    with pytest.raises(InvalidArgument, match="invalid store name"):
        client.get_kv_store("bad-name", security_level=SecurityLevel.S1)
    device = client.get_kv_store(
        "devices", security_level=SecurityLevel.S1
    )  # DEVICE_COLLABORATION by default
    assert device.info.kind is DEVICE
    assert {"notes", "devices"} <= set(client.get_all_kv_store_id())
    assert KvStoreInfo("devices", DEVICE, SecurityLevel.S1) in client.list_kv_stores()

    notes.put("k", "v")
    client.delete_kv_store("notes")
    assert "notes" not in client.get_all_kv_store_id()
    with pytest.raises(NotFound, match="has no KV store notes"):
        notes.get("k")
    with pytest.raises(NotFound):
        client.delete_kv_store("notes")
    recreated = client.get_kv_store("notes", kind=DEVICE, security_level=SecurityLevel.S1)
    assert recreated.get_entries() == []  # nothing of the old store survives


def test_another_app_cannot_reach_the_store(env: Env) -> None:
    mine = env.client.get_kv_store("private", kind=SINGLE, security_level=SecurityLevel.S4)
    mine.put("secret", "42")
    with pytest.raises(NotFound):
        env.other.get_kv_store("private", kind=None, create_if_missing=False)
    for request, fn in [
        (pb.GetRequest(store="private", key="secret"), env.stub.Get),
        (pb.PutRequest(store="private", key="k", value=types_pb2.Value(string_value="x")), env.stub.Put),
        (pb.KvStoreServiceDeleteRequest(store="private", key="secret"), env.stub.Delete),
        (pb.StartTransactionRequest(store="private"), env.stub.StartTransaction),
        (pb.DeleteKvStoreRequest(store="private"), env.stub.DeleteKvStore),
        (pb.GetEntriesRequest(store="private"), env.stub.GetEntries),
        (pb.KvStoreServiceSubscribeRequest(store="private"), env.stub.Subscribe),
    ]:
        assert rpc_error(fn, request, metadata(env.other_token)).code() == grpc.StatusCode.NOT_FOUND
    theirs = env.other.get_kv_store("private", kind=SINGLE, security_level=SecurityLevel.S1)
    assert theirs.get_entries() == []  # the same name is the other app's own store
    tx_id = env.stub.StartTransaction(
        pb.StartTransactionRequest(store="private"), metadata=env.md
    ).transaction_id
    stolen = pb.CommitRequest(store="private", transaction_id=tx_id)
    assert rpc_error(env.stub.Commit, stolen, metadata(env.other_token)).code() == grpc.StatusCode.NOT_FOUND
    env.stub.Rollback(pb.RollbackRequest(store="private", transaction_id=tx_id), metadata=env.md)
    assert mine.get("secret") == "42"
    with pytest.raises(grpc.RpcError) as info:
        env.stub.ListKvStores(pb.ListKvStoresRequest())  # no token at all
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ---- data ----


@KINDS
def test_put_get_delete_every_value_type(env: Env, kind: KvStoreType) -> None:
    store = fresh(env, kind)
    values: dict[str, Any] = {
        "str": "héllo",
        "bytes": b"\x00\xff",
        "int": -(2**63),
        "float": 2.5,
        "bool": False,
    }
    for key, value in values.items():
        store.put(key, value)
    for key, value in values.items():
        got = store.get(key)
        assert got == value and type(got) is type(value)
    store.put("int", 7)  # overwrite, another type is fine too
    store.put("str", True)
    assert store.get("int") == 7 and store.get("str") is True
    store.delete("int")
    with pytest.raises(NotFound, match="no value for key 'int'"):
        store.get("int")
    store.delete("int")  # deleting a missing key succeeds
    assert [e.key for e in everything(store)] == ["bool", "bytes", "float", "str"]


@KINDS
def test_batches_entries_prefixes_and_result_sizes(env: Env, kind: KvStoreType) -> None:
    store = fresh(env, kind)
    store.put_batch({f"k/{i:03}": i for i in range(128)})
    store.put_batch([("other", "x"), KvEntry("k/000", "replaced")])
    assert store.get_result_size() == 129
    assert store.get_result_size("k/") == 128
    entries = store.get_entries("k/00")
    assert entries == [KvEntry("k/000", "replaced"), *(KvEntry(f"k/00{i}", i) for i in range(1, 10))]
    store.delete_batch([f"k/{i:03}" for i in range(100)] + ["missing"])
    assert store.get_result_size("k/") == 28
    assert store.get_entries("nope") == []


def test_entries_come_in_pages_when_large(env: Env) -> None:
    store = fresh(env)
    big = "x" * 3_000_000  # two of these do not fit one 4 MB page
    store.put_batch({"a": big, "b": big, "c": "small"})
    assert [(e.key, len(e.value)) for e in store.get_entries()] == [
        ("a", 3_000_000),
        ("b", 3_000_000),
        ("c", 5),
    ]
    pages = list(env.stub.GetEntries(pb.GetEntriesRequest(store=store.name), metadata=env.md))
    assert [len(p.entries) for p in pages] == [1, 2]


def test_queries_over_json_values(env: Env) -> None:
    store = fresh(env)
    todos = {
        "todo/1": {"title": "milk", "done": False, "prio": 2},
        "todo/2": {"title": "Bread", "done": True, "prio": 1},
        "todo/3": {"title": "eggs", "done": False, "prio": 3, "tags": {"shop": "market"}},
        "todo/4": {"title": "call mum", "done": False},
        "note/1": {"title": "milk is off", "done": False, "prio": 9},
    }
    store.put_batch({k: json.dumps(v) for k, v in todos.items()})
    store.put("todo/5", "not json")

    def found(q: Query) -> list[str]:
        return [e.key for e in store.get_entries(q)]

    assert found(Query().prefix_key("todo/").equal_to("$.done", False)) == ["todo/1", "todo/3", "todo/4"]
    assert found(Query().equal_to("done", False).and_().greater_than("prio", 1).order_by_desc("prio")) == [
        *["note/1", "todo/3", "todo/1"]
    ]
    assert found(Query().like("$.title", "%MILK%").or_().equal_to("$.tags.shop", "market")) == [
        *["note/1", "todo/1", "todo/3"]
    ]
    assert found(Query().prefix_key("todo/").is_null("prio")) == ["todo/4"]
    assert found(Query().in_string("title", ["eggs", "Bread"]).order_by_asc("title")) == ["todo/2", "todo/3"]
    assert found(Query().prefix_key("todo/").order_by_asc("prio")) == [
        *["todo/4", "todo/5", "todo/2", "todo/1", "todo/3"]  # null (and no JSON at all) first
    ]
    assert found(Query().is_not_null("prio").order_by_asc("prio").limit(2, 1)) == ["todo/1", "todo/3"]
    grouped = (
        Query()
        .begin_group()
        .equal_to("prio", 1)
        .or_()
        .equal_to("prio", 3)
        .end_group()
        .equal_to("done", False)
    )
    assert found(grouped) == ["todo/3"]
    assert store.get_result_size(Query().prefix_key("todo/").is_not_null("title")) == 4
    assert store.get_result_size(Query()) == 6

    bad = [
        pb.KvQueryOp(type=pb.KV_QUERY_OP_TYPE_AND),
        pb.KvQueryOp(
            type=pb.KV_QUERY_OP_TYPE_EQUAL_TO, field="done", values=[types_pb2.Value(bool_value=False)]
        ),
    ]
    for ops, message in [
        (bad, r"ops\[0\] and: nothing before it to join"),
        ([pb.KvQueryOp(type=99, field="x")], "unknown query op"),
        (
            [pb.KvQueryOp(type=pb.KV_QUERY_OP_TYPE_EQUAL_TO, field="x", values=[types_pb2.Value()])],
            "string, number",
        ),
        ([pb.KvQueryOp(type=pb.KV_QUERY_OP_TYPE_BEGIN_GROUP)], "open group"),
    ]:
        request = pb.GetEntriesRequest(store=store.name, query=pb.KvQuery(ops=ops))
        error = rpc_error(env.stub.GetEntries, request, env.md)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert re.search(message, error.details() or ""), error.details()
    huge = pb.KvQuery(ops=[pb.KvQueryOp(type=pb.KV_QUERY_OP_TYPE_LIKE, field="f" * 1000) for _ in range(600)])
    error = rpc_error(env.stub.GetResultSize, pb.GetResultSizeRequest(store=store.name, query=huge), env.md)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "512000" in (error.details() or "")


def test_device_collaboration_keeps_one_key_space_per_device(env: Env) -> None:
    store = fresh(env, DEVICE)
    me = store.local_device_id
    store.put("k", "mine")
    assert store.get("k", device_id=me) == "mine"
    assert store.get_entries(device_id=me) == [KvEntry("k", "mine")]
    assert store.get_entries(Query().device_id(me)) == [KvEntry("k", "mine")]
    with pytest.raises(NotFound):
        store.get("k", device_id="peer-device")  # a peer's key space holds nothing yet
    assert store.get_entries(device_id="peer-device") == []
    assert store.get_result_size("", device_id="peer-device") == 0
    with pytest.raises(InvalidArgument, match="the query reads device other, the request"):
        store.get_entries(Query().device_id("other"), device_id=me)
    for request, fn in [
        (
            pb.PutRequest(store=store.name, key="k", value=types_pb2.Value(int_value=1), device_id="peer"),
            env.stub.Put,
        ),
        (iter([pb.PutBatchRequest(store=store.name, device_id="peer")]), env.stub.PutBatch),
        (pb.KvStoreServiceDeleteRequest(store=store.name, key="k", device_id="peer"), env.stub.Delete),
        (pb.DeleteBatchRequest(store=store.name, keys=["k"], device_id="peer"), env.stub.DeleteBatch),
    ]:
        error = rpc_error(fn, request, env.md)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "read-only" in (error.details() or "")
    own = pb.PutRequest(store=store.name, key="k2", value=types_pb2.Value(int_value=2), device_id=me)
    env.stub.Put(own, metadata=env.md)  # naming this device is fine
    assert store.get_entries() == [KvEntry("k", "mine"), KvEntry("k2", 2)]

    single = fresh(env, SINGLE)
    single.put("k", 1)
    assert single.get("k", device_id=single.local_device_id) == 1
    with pytest.raises(InvalidArgument, match="SINGLE_VERSION"):
        single.get("k", device_id="peer")
    with pytest.raises(InvalidArgument, match="SINGLE_VERSION"):
        single.get_entries(device_id="peer")


# ---- limits and bad input ----


def _int(n: int = 1) -> types_pb2.Value:
    return types_pb2.Value(int_value=n)


def _entry(key: str) -> pb.KvEntry:
    return pb.KvEntry(key=key, value=_int())


# name: (rpc, request for store s, status, part of the message)
BAD: dict[str, tuple[str, Callable[[str], Any], str, str]] = {
    "empty key": ("Put", lambda s: pb.PutRequest(store=s, key="", value=_int()), "INVALID_ARGUMENT", "empty"),
    "long key": (
        "Put",
        lambda s: pb.PutRequest(store=s, key="k" * 1025, value=_int()),
        "INVALID_ARGUMENT",
        "1025 bytes, over the limit of 1024",
    ),
    "no type": ("Put", lambda s: pb.PutRequest(store=s, key="k"), "INVALID_ARGUMENT", "no type"),
    "big value": (
        "Put",
        lambda s: pb.PutRequest(store=s, key="k", value=types_pb2.Value(bytes_value=b"x" * 4_194_304)),
        "RESOURCE_EXHAUSTED",
        "over the limit of 4194303 bytes",
    ),
    "unknown store": (
        "Put",
        lambda s: pb.PutRequest(store="no_such", key="k", value=_int()),
        "NOT_FOUND",
        "no KV store no_such",
    ),
    "bad store name": (
        "Get",
        lambda s: pb.GetRequest(store="../x", key="k"),
        "INVALID_ARGUMENT",
        "store name",
    ),
    "batch of 129": (
        "PutBatch",
        lambda s: iter([pb.PutBatchRequest(store=s, entries=[_entry(f"b{i}") for i in range(129)])]),
        "RESOURCE_EXHAUSTED",
        "at most 128",
    ),
    "one bad entry": (
        "PutBatch",
        lambda s: iter([pb.PutBatchRequest(store=s, entries=[_entry("fine"), _entry("")])]),
        "INVALID_ARGUMENT",
        "empty",
    ),
    "delete batch of 129": (
        "DeleteBatch",
        lambda s: pb.DeleteBatchRequest(store=s, keys=[f"k{i}" for i in range(129)]),
        "RESOURCE_EXHAUSTED",
        "at most 128",
    ),
    "empty delete key": (
        "DeleteBatch",
        lambda s: pb.DeleteBatchRequest(store=s, keys=["keep", ""]),
        "INVALID_ARGUMENT",
        "empty",
    ),
    "unknown transaction": (
        "Put",
        lambda s: pb.PutRequest(store=s, key="k", value=_int(), transaction_id="nope"),
        "NOT_FOUND",
        "no open transaction",
    ),
    "unknown subscribe type": (
        "Subscribe",
        lambda s: pb.KvStoreServiceSubscribeRequest(store=s, type=7),  # type: ignore[arg-type]
        "INVALID_ARGUMENT",
        "subscribe type",
    ),
    "unknown kind": (
        "GetKvStore",
        lambda s: pb.GetKvStoreRequest(store=s, kind=9),  # type: ignore[arg-type]
        "INVALID_ARGUMENT",
        "kind",
    ),
    "unknown level": (
        "GetKvStore",
        lambda s: pb.GetKvStoreRequest(store=s, security_level=5),  # type: ignore[arg-type]
        "INVALID_ARGUMENT",
        "security level",
    ),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_gets_a_clear_status_and_changes_nothing(env: Env, name: str) -> None:
    rpc, build, code, message = BAD[name]
    store = fresh(env)
    store.put_batch({"keep": "me", "k": 0})
    before = everything(store)
    error = rpc_error(getattr(env.stub, rpc), build(store.name), env.md)
    assert error.code().name == code, error.details()
    assert message in (error.details() or "")
    assert everything(store) == before


def test_device_store_keys_are_at_most_896_bytes(env: Env) -> None:
    store = fresh(env, DEVICE)
    store.put("k" * 896, 1)
    with pytest.raises(InvalidArgument, match="over the limit of 896 bytes in a DEVICE_COLLABORATION store"):
        store.put("k" * 897, 1)
    assert store.get_result_size() == 1


# ---- transactions ----


def test_a_transaction_applies_all_at_commit_and_nothing_at_rollback(env: Env) -> None:
    store = fresh(env)
    store.put_batch({"a": 1, "b": 2})
    store.start_transaction()
    store.put("a", 10)
    store.put_batch({"c": 3, "d": 4})
    store.delete("b")
    store.delete_batch(["d"])
    # the transaction's own reads see its writes; other reads do not
    assert store.get("a") == 10 and store.get("c") == 3
    with pytest.raises(NotFound):
        store.get("b")
    assert store.get_entries() == [KvEntry("a", 10), KvEntry("c", 3)]
    assert store.get_result_size() == 2
    outside = env.client.get_kv_store(store.name, kind=None, create_if_missing=False)
    assert outside.get_entries() == [KvEntry("a", 1), KvEntry("b", 2)]
    with pytest.raises(InvalidArgument, match="in a transaction already"):
        store.start_transaction()
    assert store.commit() == 4  # a, c, b, d
    assert outside.get_entries() == [KvEntry("a", 10), KvEntry("c", 3)]

    store.start_transaction()
    store.put("a", 99)
    store.delete("c")
    store.rollback()
    assert outside.get_entries() == [KvEntry("a", 10), KvEntry("c", 3)]
    with pytest.raises(InvalidArgument, match="no transaction"):
        store.commit()

    with pytest.raises(RuntimeError), store.transaction():
        store.put("x", 1)
        raise RuntimeError("the block failed")
    assert not store.in_transaction and outside.get_result_size() == 2
    with store.transaction():
        store.put("x", 1)
    assert outside.get("x") == 1


def test_a_transaction_holds_at_most_128_keys(env: Env) -> None:
    store = fresh(env)
    with store.transaction():
        store.put_batch({f"k{i}": i for i in range(100)})
        store.put_batch({f"k{i}": -i for i in range(50)})  # rewriting keys does not count twice
        store.put_batch({f"n{i}": i for i in range(28)})
        with pytest.raises(ResourceExhausted, match="at most 128 keys, this one 129"):
            store.put("one_more", 1)
        assert store.get_result_size() == 128
    assert store.get_result_size() == 128 and store.get("k1") == -1


def test_deleting_a_store_ends_its_transactions(env: Env) -> None:
    store = fresh(env)
    store.put("a", 1)
    store.start_transaction()
    store.put("a", 2)
    store.put("b", 2)
    env.client.delete_kv_store(store.name)  # rolls the transaction back
    with pytest.raises(NotFound):
        store.commit()


def test_an_idle_transaction_is_rolled_back(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", env={**NO_AI, "DATAMGR_KV__TRANSACTION_IDLE_S": "1"}).start()
    try:
        with KvStoreClient.connect(daemon.address, daemon.add_app(APP)) as client:
            store = client.get_kv_store("s", kind=SINGLE, security_level=SecurityLevel.S1)
            store.start_transaction()
            store.put("k", "v")
            time.sleep(1.5)
            with pytest.raises(NotFound, match="rolled back: it was idle for more than 1 s"):
                store.commit()
            assert store.get_entries() == []
    finally:
        assert daemon.stop() == 0


# ---- subscriptions ----


class Collector:
    """Iterates a subscription on a thread, so that tests can wait for notifications with a timeout."""

    def __init__(self, sub: Subscription[ChangeNotification]) -> None:
        self.sub = sub
        self.notes: queue.Queue[ChangeNotification] = queue.Queue()
        self.error: DatamgrError | None = None
        self.ended = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for note in self.sub:
                self.notes.put(note)
        except DatamgrError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def take(self, timeout: float = 10.0) -> ChangeNotification:
        return self.notes.get(timeout=timeout)

    def close(self) -> None:
        self.sub.close()
        self.ended.wait(10)


@KINDS
def test_local_changes_reach_local_and_all_subscribers(env: Env, kind: KvStoreType) -> None:
    store = fresh(env, kind)
    store.put("old", "v0")
    me = store.local_device_id
    local = Collector(store.on_data_change(SubscribeType.LOCAL))
    every = Collector(store.on_data_change(SubscribeType.ALL))
    remote = Collector(store.on_data_change(SubscribeType.REMOTE))
    try:
        store.put("new", "v1")
        store.put("old", "v2")
        store.delete("old")
        store.delete("never_there")  # changes nothing: no notification
        store.put_batch({"new": 1, "b1": b"\x01", "b2": 2.5})
        with store.transaction():
            store.delete("b1")
            store.put("t", True)
        want = [
            ChangeNotification([KvEntry("new", "v1")], [], [], me),
            ChangeNotification([], [KvEntry("old", "v2")], [], me),
            ChangeNotification([], [], [KvEntry("old", "v2")], me),  # deletes carry the old value
            ChangeNotification([KvEntry("b1", b"\x01"), KvEntry("b2", 2.5)], [KvEntry("new", 1)], [], me),
            ChangeNotification([KvEntry("t", True)], [], [KvEntry("b1", b"\x01")], me),
        ]
        assert [local.take() for _ in want] == want
        assert [every.take() for _ in want] == want
        time.sleep(0.3)
        assert local.notes.empty() and remote.notes.empty()  # REMOTE: only what sync applies
    finally:
        for c in (local, every, remote):
            c.close()


def test_at_most_8_subscriptions_per_store_and_close_ends_them(env: Env) -> None:
    store = fresh(env)
    subs = [Collector(store.on_data_change()) for _ in range(8)]
    with pytest.raises(ResourceExhausted, match="8 subscriptions of store"):
        store.on_data_change()
    other_store = fresh(env)
    other_store.on_data_change().close()  # the limit is per store
    env.other.get_kv_store(store.name, kind=SINGLE, security_level=SecurityLevel.S1).on_data_change().close()
    subs.pop().close()
    deadline = time.monotonic() + 10
    while True:  # until the daemon has noticed the cancelled stream
        try:
            subs.append(Collector(store.on_data_change()))
            break
        except ResourceExhausted:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    store.close()  # CloseKvStore: this app's subscriptions on the store end
    for c in subs:
        assert c.ended.wait(10) and c.error is None
    fresh_sub = Collector(store.on_data_change())
    store.put("k", 1)
    assert fresh_sub.take().insert_entries == [KvEntry("k", 1)]
    env.client.delete_kv_store(store.name)  # deleting the store ends them too
    assert fresh_sub.ended.wait(10)


# ---- durability ----


def test_an_acknowledged_put_survives_kill_9(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", env=NO_AI).start()
    token = daemon.add_app(APP)
    with KvStoreClient.connect(daemon.address, token) as client:
        store = client.get_kv_store("durable", kind=DEVICE, security_level=SecurityLevel.S2)
        device = store.local_device_id
        store.put("k", "acknowledged")
        store.put_batch({f"b{i}": i for i in range(10)})
    daemon.kill9()
    daemon.start()
    try:
        with KvStoreClient.connect(daemon.address, token) as client:
            store = client.get_kv_store("durable", kind=DEVICE, security_level=SecurityLevel.S2)
            assert store.local_device_id == device  # the device id is stable across restarts
            assert store.get("k") == "acknowledged"
            assert store.get_result_size("b") == 10
    finally:
        assert daemon.stop() == 0


def test_removing_an_app_deletes_its_stores(env: Env) -> None:
    bundle = "com.example.leaving"
    token = env.daemon.add_app(bundle)
    with KvStoreClient.connect(env.daemon.address, token) as client:
        client.get_kv_store("data", kind=SINGLE, security_level=SecurityLevel.S1).put("k", 1)
    with env.daemon.admin() as admin:
        admin.remove_app(bundle)
    with KvStoreClient.connect(env.daemon.address, env.daemon.add_app(bundle)) as client:
        assert client.list_kv_stores() == []


# ---- the asyncio client ----


def test_the_async_client(env: Env) -> None:
    async def scenario() -> None:
        async with AsyncKvStoreClient.connect(env.daemon.address, env.token) as client:
            store = await client.get_kv_store("async_store", kind=SINGLE, security_level=SecurityLevel.S1)
            sub = await store.on_data_change(SubscribeType.LOCAL)
            await store.put("a", "1")
            await store.put_batch({"b": 2, "c": 3.0})
            assert await store.get("a") == "1"
            async with store.transaction():
                await store.delete("a")
                await store.delete_batch(["b"])
                assert await store.get_entries() == [KvEntry("c", 3.0)]
            assert await store.get_result_size() == 1
            assert await store.get_entries(Query().prefix_key("c")) == [KvEntry("c", 3.0)]
            with pytest.raises(NotFound):
                await store.get("a")
            notes = [await sub.next() for _ in range(3)]
            assert notes[0].insert_entries == [KvEntry("a", "1")]
            assert notes[2].delete_entries == [KvEntry("a", "1"), KvEntry("b", 2)]
            sub.close()
            await store.start_transaction()
            await store.put("x", 1)
            await store.rollback()
            assert "async_store" in await client.get_all_kv_store_id()
            assert KvStoreInfo("async_store", SINGLE, SecurityLevel.S1) in await client.list_kv_stores()
            await store.close()
            await client.close_kv_store("async_store")
            await client.delete_kv_store("async_store")
            assert "async_store" not in await client.get_all_kv_store_id()

    asyncio.run(scenario())


# ---- the CLI ----


def test_the_cli(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATAMGR_CONFIG", "DATAMGR_ADDRESS", "DATAMGR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    cli = CliRunner(env={"DATAMGR_ADDRESS": env.daemon.address, "DATAMGR_TOKEN": env.token})

    def run(*args: str, code: int = 0) -> str:
        result = cli.invoke(main, ["kv", *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    assert "cli_store: SINGLE_VERSION S2" in run("create", "cli_store", "--kind", "single", "--level", "S2")
    run("put", "cli_store", "todo/1", '{"title": "milk", "prio": 2}')
    run("put", "cli_store", "todo/2", '{"title": "eggs", "prio": 5}')
    run("put", "cli_store", "count", "41", "--type", "int")
    run("put", "cli_store", "blob", "AAE=", "--type", "bytes")
    assert run("get", "cli_store", "count") == "41\n"
    assert json.loads(run("get", "cli_store", "blob", "--json")) == {
        "key": "blob",
        "type": "bytes",
        "value": "AAE=",
    }
    assert "NOT_FOUND" in run("get", "cli_store", "nope", code=1)
    assert "INVALID_ARGUMENT" in run("put", "cli_store", "n", "x", "--type", "int", code=1)
    listed = json.loads(
        run(
            "entries",
            "cli_store",
            "--prefix",
            "todo/",
            "--where",
            '[["greater_than", "$.prio", 3]]',
            "--json",
        )
    )
    assert [e["key"] for e in listed] == ["todo/2"]
    assert "4 entries" in run("entries", "cli_store")
    assert "INVALID_ARGUMENT" in run("entries", "cli_store", "--where", '[["and"]]', code=1)
    assert "cli_store" in run("stores")
    assert {"name": "cli_store", "kind": "SINGLE_VERSION", "security_level": "S2"} in json.loads(
        run("stores", "--json")
    )

    got: queue.Queue[str] = queue.Queue()
    watcher = threading.Thread(
        target=lambda: got.put(run("watch", "cli_store", "--type", "local", "--count", "1"))
    )
    watcher.start()
    with KvStoreClient.connect(env.daemon.address, env.token) as client:
        store = client.get_kv_store("cli_store", kind=None, create_if_missing=False)
        deadline = time.monotonic() + 10
        while watcher.is_alive() and time.monotonic() < deadline:  # until the watch is live
            store.put("watched", "v")
            time.sleep(0.2)
    watcher.join(10)
    line = json.loads(got.get(timeout=5).splitlines()[-1])
    assert line["insert"] + line["update"] == [{"key": "watched", "type": "string", "value": "v"}]
    run("delete", "cli_store", "count", "blob")
    assert "3 entries" in run("entries", "cli_store")  # todo/1, todo/2, watched
    run("drop", "cli_store")
    assert "cli_store" not in run("stores")

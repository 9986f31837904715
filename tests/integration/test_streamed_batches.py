"""Batches larger than one message stream (issue 10, point 5): the app-facing server takes one message of
at most max_message_bytes (5 MiB), so DataShare BatchInsert and KV PutBatch are client streams. The SDKs
split a large batch into messages; the daemon assembles them under the batch limits and applies them
as one, atomically."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from harness import CONTACTS, PEOPLE_URI, Daemon, contacts_manifest

from datamgr.client import DataShareHelper, KvStoreClient, SecurityLevel
from datamgr.connection import metadata
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.errors import DatamgrError, InvalidArgument
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc
from datamgr.v1 import kv_pb2, kv_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MAX_BATCH = 24 * MiB  # datashare.max_batch_bytes here (128 MiB by default)
MAX_CALL = 12 * MiB  # datashare.max_call_bytes here, the bound of a batch update (900 KB by default)
VALUE = 4194303  # the largest KV value


@dataclass
class Env:
    daemon: Daemon
    token: str
    helper: DataShareHelper
    channel: grpc.Channel


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    daemon = Daemon(
        tmp_path_factory.mktemp("batches") / "data",
        env={
            "DATAMGR_AI__ENABLED": "false",
            "DATAMGR_DISCOVERY__ENABLED": "false",
            "DATAMGR_DATASHARE__MAX_BATCH_BYTES": str(MAX_BATCH),
            "DATAMGR_DATASHARE__MAX_CALL_BYTES": str(MAX_CALL),
        },
    ).start()
    try:
        token = daemon.add_app(CONTACTS)
        options = [("grpc.max_send_message_length", -1)]
        with daemon.helper(token) as helper, grpc.insecure_channel(daemon.address, options=options) as ch:
            helper.register_provider(contacts_manifest())
            yield Env(daemon, token, helper, ch)
    finally:
        daemon.stop()
    assert "bug in" not in daemon.log()  # no call ended as INTERNAL


def people(env: Env) -> int:
    return len(list(env.helper.query(PEOPLE_URI, None, ["id"]).rows()))


def photos(env: Env) -> dict[int, int]:
    return {r["id"]: len(r["photo"]) for r in env.helper.query(PEOPLE_URI, None, ["id", "photo"]).rows()}


def clear(env: Env) -> None:
    env.helper.delete(PEOPLE_URI, DataSharePredicates())


def rows(n: int, first_id: int, photo: int) -> list[dict[str, Any]]:
    return [{"id": first_id + i, "name": f"p{i}", "photo": bytes([i % 256]) * photo} for i in range(n)]


def insert_message(n: int, first_id: int, photo: int, uri: str = PEOPLE_URI) -> pb.BatchInsertRequest:
    req = pb.BatchInsertRequest(uri=uri, columns=["id", "name", "photo"])
    req.rows.row_count = n
    ids, names, photos = req.rows.columns.add(), req.rows.columns.add(), req.rows.columns.add()
    ids.type, names.type, photos.type = (
        types_pb2.DATA_TYPE_LONG,
        types_pb2.DATA_TYPE_STRING,
        types_pb2.DATA_TYPE_BLOB,
    )
    ids.ints.extend(range(first_id, first_id + n))
    names.strings.extend(f"p{i}" for i in range(n))
    photos.blobs.extend(b"x" * photo for _ in range(n))
    return req


def test_a_20mb_batch_insert_streams_and_applies_as_one(env: Env) -> None:
    clear(env)
    batch = rows(200, 1, 100 * 1024)  # 20 MiB: five messages or so
    assert env.helper.batch_insert(PEOPLE_URI, batch) == 200
    assert people(env) == 200
    clear(env)


def test_a_failing_row_in_the_last_message_leaves_nothing_inserted(env: Env) -> None:
    clear(env)
    batch = rows(200, 1, 100 * 1024)
    batch[-1]["id"] = 1  # the first row's key again: the insert fails in the database, at the end
    with pytest.raises(DatamgrError):
        env.helper.batch_insert(PEOPLE_URI, batch)
    assert people(env) == 0
    batch = rows(200, 1, 100 * 1024)
    batch[-1]["name"] = None  # not nullable: refused by the checks of the last message
    with pytest.raises(InvalidArgument, match="may not be null"):
        env.helper.batch_insert(PEOPLE_URI, batch)
    assert people(env) == 0


def test_a_batch_update_past_one_message_streams_atomically(env: Env) -> None:
    clear(env)
    env.helper.batch_insert(PEOPLE_URI, rows(3, 1, 10))
    photo = b"p" * (3 * MiB)
    ops = [({"photo": photo}, DataSharePredicates().equal_to("id", i)) for i in (1, 2)]
    bad = [*ops, ({"name": None}, DataSharePredicates().equal_to("id", 3))]  # not nullable
    with pytest.raises(InvalidArgument, match="null"):
        env.helper.batch_update({PEOPLE_URI: bad})
    assert photos(env) == {1: 10, 2: 10, 3: 10}
    assert env.helper.batch_update({PEOPLE_URI: ops}) == {PEOPLE_URI: [1, 1]}
    assert photos(env) == {1: 3 * MiB, 2: 3 * MiB, 3: 10}
    clear(env)


def test_a_batch_update_stream_past_max_call_bytes_is_refused_naming_it(env: Env) -> None:
    clear(env)
    env.helper.batch_insert(PEOPLE_URI, rows(1, 1, 10))
    op = pb.UpdateOperation()
    op.values["photo"].bytes_value = b"p" * (4 * MiB)
    message = pb.BatchUpdateRequest(operations=[pb.UriUpdateOperations(uri=PEOPLE_URI, operations=[op])])
    stub = pb_grpc.DataShareServiceStub(env.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.BatchUpdate(iter([message] * 4), metadata=metadata(env.token), timeout=60)  # 16 MiB
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert "datashare.max_call_bytes" in (info.value.details() or "")
    assert photos(env) == {1: 10}


def test_a_kv_put_batch_of_six_4mb_values_streams_atomically(env: Env) -> None:
    with KvStoreClient.connect(env.daemon.address, env.token) as kv:
        store = kv.get_kv_store("big", security_level=SecurityLevel.S2)
        store.put_batch({f"k{i}": bytes([i]) * VALUE for i in range(6)})
        assert sorted(e.key for e in store.get_entries("k")) == [f"k{i}" for i in range(6)]
        assert store.get("k5") == bytes([5]) * VALUE
        with pytest.raises(InvalidArgument, match="empty"):
            store.put_batch([*((f"n{i}", bytes([i]) * VALUE) for i in range(5)), ("", b"last")])
        assert store.get_entries("n") == []


def test_one_message_over_max_message_bytes_is_refused(env: Env) -> None:
    clear(env)
    stub = pb_grpc.DataShareServiceStub(env.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.BatchInsert(iter([insert_message(6, 1, MiB)]), metadata=metadata(env.token), timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert people(env) == 0


def test_a_stream_past_max_batch_bytes_is_refused_naming_it(env: Env) -> None:
    clear(env)
    sent = 0

    def messages() -> Iterator[pb.BatchInsertRequest]:
        nonlocal sent
        for i in range(40):  # 160 MiB, if all were read
            sent += 1
            yield insert_message(4, 1 + 4 * i, MiB)

    stub = pb_grpc.DataShareServiceStub(env.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.BatchInsert(messages(), metadata=metadata(env.token), timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert "datashare.max_batch_bytes" in (info.value.details() or "")
    assert sent < 40  # the daemon stopped reading
    assert people(env) == 0


def test_a_later_message_naming_another_target_is_refused(env: Env) -> None:
    clear(env)
    stub = pb_grpc.DataShareServiceStub(env.channel)
    other = insert_message(1, 2, 10, uri=PEOPLE_URI.replace("people", "others"))
    with pytest.raises(grpc.RpcError) as info:
        stub.BatchInsert(iter([insert_message(1, 1, 10), other]), metadata=metadata(env.token), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "uri" in (info.value.details() or "")
    assert people(env) == 0
    with KvStoreClient.connect(env.daemon.address, env.token) as kv:
        kv.get_kv_store("mine", security_level=SecurityLevel.S2)
    kv_stub = kv_pb2_grpc.KvStoreServiceStub(env.channel)
    entry = kv_pb2.KvEntry(key="k", value=types_pb2.Value(int_value=1))
    messages = [kv_pb2.PutBatchRequest(store="mine", entries=[entry]), kv_pb2.PutBatchRequest(store="yours")]
    with pytest.raises(grpc.RpcError) as info:
        kv_stub.PutBatch(iter(messages), metadata=metadata(env.token), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "store" in (info.value.details() or "")

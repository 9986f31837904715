"""Pieces of the KV servicer that need no daemon: change classification, input checks, the device id."""

from __future__ import annotations

import asyncio

import pytest

from datamgr.errors import InvalidArgument, ResourceExhausted, TooLarge
from datamgr.kv._checks import (
    check_batch,
    check_key,
    check_writable,
    entry_pages,
    notifications,
    read_device,
    store_name,
    to_proto,
    to_storage,
)
from datamgr.kv.notify import KvChange, KvNotifier, classify
from datamgr.kv.storage import Change, StoreInfo, StoreKind, Value, VType
from datamgr.v1 import types_pb2

DEVICE = StoreInfo("com.a/d", "com.a", "d", StoreKind.DEVICE_COLLABORATION, 2, "e", 0.0)
SINGLE = StoreInfo("com.a/s", "com.a", "s", StoreKind.SINGLE_VERSION, 2, "e", 0.0)


def change(key: bytes, value: Value | None) -> Change:
    return Change("com.a/s", "", key, value, 1, "me", 1)


V1, V2 = Value(VType.STRING, "one"), Value(VType.INT, 2)


def test_classify_tells_inserts_updates_and_deletes_apart() -> None:
    changes = [change(b"new", V1), change(b"old", V2), change(b"gone", None)]
    got = classify("com.a/s", "me", False, changes, {b"new": None, b"old": V1, b"gone": V2})
    assert got == KvChange(
        "com.a/s", "me", False, inserted=((b"new", V1),), updated=((b"old", V2),), deleted=((b"gone", V2),)
    )
    assert classify("com.a/s", "me", False, [], {}) is None


def test_classify_without_the_previous_state_reports_puts_as_updates() -> None:
    got = classify("com.a/s", "peer", True, [change(b"k", V1), change(b"x", None)], None)
    assert got == KvChange("com.a/s", "peer", True, updated=((b"k", V1),), deleted=((b"x", None),))


def test_subscriptions_per_store_and_app_are_limited_and_end_with_the_store() -> None:
    asyncio.run(_subscriptions())


async def _subscriptions() -> None:
    notifier = KvNotifier(asyncio.get_running_loop(), max_per_store=2, queue_size=16)
    subs = [notifier.subscribe("com.a", "com.a/s") for _ in range(2)]
    other = notifier.subscribe("com.a", "com.a/t")
    with pytest.raises(ResourceExhausted, match="2 subscriptions of store s"):
        notifier.subscribe("com.a", "com.a/s")
    notifier.unsubscribe(subs[0])
    subs[0] = notifier.subscribe("com.a", "com.a/s")
    assert notifier.watched("com.a/s")
    notifier.publish(KvChange("com.a/s", "me", False, inserted=((b"k", V1),)))
    await asyncio.sleep(0)
    for sub in subs:
        assert (await sub.next()) == KvChange("com.a/s", "me", False, inserted=((b"k", V1),))
    assert notifier.end("com.a/s") == 2
    assert (await subs[0].next()) is None and not subs[0].overflowed
    assert not notifier.watched("com.a/s") and notifier.watched("com.a/t")
    notifier.close()
    assert (await other.next()) is None


def test_store_names_follow_openharmony() -> None:
    assert store_name("notes_2") == "notes_2"
    assert store_name("x" * 128)
    for bad in ("", "x" * 129, "a-b", "a/b", "a.b", "ü"):
        with pytest.raises(InvalidArgument, match="invalid store name"):
            store_name(bad)


def test_keys_are_1_to_1024_bytes_896_in_device_stores() -> None:
    assert check_key(SINGLE, "é" * 512) == ("é" * 512).encode()
    with pytest.raises(InvalidArgument, match=r"1025 bytes, over the limit of 1024 bytes$"):
        check_key(SINGLE, "x" * 1025)
    assert check_key(DEVICE, "x" * 896)
    with pytest.raises(InvalidArgument, match="897 bytes, over the limit of 896 bytes in a DEVICE_COLL"):
        check_key(DEVICE, "x" * 897)
    with pytest.raises(InvalidArgument, match="may not be empty"):
        check_key(SINGLE, "")


def test_values_convert_both_ways_and_are_limited() -> None:
    for kind, data in [("bytes_value", b"\x00"), ("string_value", "s"), ("int_value", -(2**63))]:
        msg = types_pb2.Value(**{kind: data})
        value = to_storage(msg)
        assert value.data == data
        back = types_pb2.Value()
        to_proto(value, back)
        assert back == msg
    assert to_storage(types_pb2.Value(double_value=1.5)) == Value(VType.DOUBLE, 1.5)
    assert to_storage(types_pb2.Value(bool_value=False)) == Value(VType.BOOL, False)
    with pytest.raises(InvalidArgument, match="no type"):
        to_storage(types_pb2.Value())
    assert to_storage(types_pb2.Value(string_value="é" * 2_097_151))  # 4194302 bytes
    with pytest.raises(TooLarge, match="4194304 bytes, over the limit of 4194303"):
        to_storage(types_pb2.Value(bytes_value=b"x" * 4_194_304))
    unknown = types_pb2.Value()
    to_proto(None, unknown)
    assert unknown.WhichOneof("kind") is None


def test_batches_hold_at_most_128() -> None:
    check_batch(128)
    with pytest.raises(TooLarge, match="at most 128 entries, not 129"):
        check_batch(129)


def test_peer_key_spaces_are_read_only_and_single_version_stores_have_one() -> None:
    check_writable("me", "")
    check_writable("me", "me")
    with pytest.raises(InvalidArgument, match="data of peers is read-only"):
        check_writable("me", "peer")
    assert read_device(DEVICE, "me", "") == "me"
    assert read_device(DEVICE, "me", "peer") == "peer"
    assert read_device(SINGLE, "me", "") is None
    assert read_device(SINGLE, "me", "me") is None
    with pytest.raises(InvalidArgument, match="SINGLE_VERSION"):
        read_device(SINGLE, "me", "peer")
    with pytest.raises(InvalidArgument, match="at most 128"):
        read_device(DEVICE, "me", "p" * 129)


def test_large_results_and_changes_are_split_by_size() -> None:
    rows = [("a", "x" * 60), ("b", "y" * 60), ("c", 1)]
    assert [[e.key for e in p.entries] for p in entry_pages(rows, 100)] == [["a"], ["b", "c"]]
    assert [len(p.entries) for p in entry_pages([], 100)] == [0]  # always one page
    big = Value(VType.STRING, "z" * 60)
    change = KvChange(
        "com.a/s", "me", False, inserted=((b"i", big),), updated=((b"u", big),), deleted=((b"d", None),)
    )
    notes = notifications(change, 100)
    assert [(len(n.insert_entries), len(n.update_entries), len(n.delete_entries)) for n in notes] == [
        (1, 0, 0),
        (0, 1, 1),
    ]
    assert {n.device_id for n in notes} == {"me"}
    assert not notes[1].delete_entries[0].HasField("value")  # the old value is not known

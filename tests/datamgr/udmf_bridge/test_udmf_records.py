"""UDMF descriptors: what a CROSS_DEVICE UnifiedData looks like in the system KV store, which data rides
inline, the KV value limit, and every way a descriptor from a peer can be unusable."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from datamgr.errors import InvalidArgument
from datamgr.kv.storage import MAX_VALUE_LENGTH
from datamgr.sync.v1 import udmf_peer_pb2 as pb
from datamgr.udmf_bridge.records import carries_data, decode, encode
from udmf.access import ShareOptions, Visibility
from udmf.errors import ResourceExhausted
from udmf.keys import Intention, new_key
from udmf.store import DataRow, EntryRow
from udmf.v1 import udmf_pb2

WRITER = "com.example.source"
ORIGIN = "a" * 32


def _row(intention: Intention = Intention.DATA_HUB, **kw: Any) -> DataRow:
    fields: dict[str, Any] = {
        "key": str(new_key(intention, WRITER)),
        "intention": intention,
        "writer": WRITER,
        "record_count": 2,
        "summary": {"general.plain-text": 7, "general.octet-stream": 1004},
        "total_size": 1011,
        "visibility": Visibility.OWN_PROCESS,
        "share_options": ShareOptions.CROSS_DEVICE,
        "tag": "note",
        "extras": {"color": {"stringValue": "red"}},
        "timestamp_ms": 1_800_000_000_123,
        "created_at": 1_800_000_000.123,
        "expires_at": 1_800_003_600.123,
        **kw,
    }
    return DataRow(**fields)


ENTRIES = [
    EntryRow(0, "general.plain-text", udmf_pb2.Value(string_value="hello").SerializeToString()),
    EntryRow(1, "general.octet-stream", udmf_pb2.Value().SerializeToString(), 1000, "", False, b"x" * 1000),
]


def test_a_descriptor_round_trips_with_its_data() -> None:
    row = _row()
    got, entries = decode(row.key.encode(), encode(row, ORIGIN, ENTRIES), ORIGIN)
    assert got == dataclasses.replace(row, origin=ORIGIN, copied=True)
    assert entries == ENTRIES


def test_a_drag_descriptor_is_the_summary_only() -> None:
    row = _row(Intention.DRAG, visibility=Visibility.ALL)
    assert not carries_data(row, 1 << 30)
    got, entries = decode(row.key.encode(), encode(row, ORIGIN, None), ORIGIN)
    assert entries is None and got == dataclasses.replace(row, origin=ORIGIN, copied=False)


def test_which_data_rides_inline() -> None:
    small = _row(total_size=100)
    assert carries_data(small, 100) and not carries_data(small, 99)
    assert not carries_data(dataclasses.replace(small, pending=True), 100)
    for intention in (Intention.DRAG, Intention.SYSTEM_SHARE, Intention.PICKER, Intention.MENU):
        assert not carries_data(_row(intention, total_size=1), 100)  # their reads consume: only the origin


def test_a_descriptor_over_the_kv_limit_drops_its_data_and_one_still_over_is_refused() -> None:
    huge = [EntryRow(0, "general.octet-stream", b"", MAX_VALUE_LENGTH, "", False, b"y" * MAX_VALUE_LENGTH)]
    row = _row(record_count=1, total_size=MAX_VALUE_LENGTH)
    raw = encode(row, ORIGIN, huge)
    assert len(raw) < 2000 and decode(row.key.encode(), raw, ORIGIN)[1] is None
    fat = _row(extras={"big": {"stringValue": "z" * MAX_VALUE_LENGTH}})
    with pytest.raises(ResourceExhausted, match="descriptor must fit"):
        encode(fat, ORIGIN, None)


def _msg(row: DataRow, **changes: Any) -> bytes:
    msg = pb.UdmfDescriptor.FromString(encode(row, ORIGIN, ENTRIES if carries_data(row, 1 << 20) else None))
    for name, value in changes.items():
        if name == "entry_blob":
            msg.entries[1].blob = value
        elif name == "entry_type":
            msg.entries[0].type = value
        else:
            setattr(msg, name, value)
    return msg.SerializeToString()


HUB, DRAG = _row(), _row(Intention.DRAG)
UNUSABLE = {
    "garbage bytes": (HUB.key, b"\xff\xff\xff not a message"),
    "a malformed key": ("udmf://DataHub/" + WRITER, _msg(HUB)),
    "a key that is not UTF-8": (b"\xff\xfe", _msg(HUB)),
    "another origin": (HUB.key, _msg(HUB, origin="b" * 32)),
    "a writer the key does not name": (HUB.key, _msg(HUB, writer="com.example.other")),
    "a channel the key does not name": (HUB.key, _msg(HUB, intention="drag")),
    "an unknown channel": (HUB.key, _msg(HUB, intention="Clipboard")),
    "an unknown visibility": (HUB.key, _msg(HUB, visibility="everyone")),
    "CROSS_APP data": (HUB.key, _msg(HUB, share_options="cross_app")),
    "IN_APP data": (HUB.key, _msg(HUB, share_options="in_app")),
    "version 0": (HUB.key, _msg(HUB, version=0)),
    "extras that are no JSON": (HUB.key, _msg(HUB, extras_json="{nope")),
    "extras that are no object": (HUB.key, _msg(HUB, extras_json="[1, 2]")),
    "a time that is not finite": (HUB.key, _msg(HUB, expires_at=float("nan"))),
    "a record count over 32 bits": (HUB.key, _msg(HUB, record_count=1 << 31)),
    "a total size over 63 bits": (HUB.key, _msg(HUB, total_size=1 << 63)),
    "a blob shorter than its size": (HUB.key, _msg(HUB, entry_blob=b"short")),
    "a type id too long to store": (HUB.key, _msg(HUB, entry_type="t" * 161)),
    "drag data carried inline": (DRAG.key, _msg(DRAG, carries_data=True)),
}


@pytest.mark.parametrize("case", list(UNUSABLE), ids=list(UNUSABLE))
def test_an_unusable_descriptor_is_an_invalid_argument(case: str) -> None:
    key, raw = UNUSABLE[case]
    with pytest.raises(InvalidArgument):
        decode(key if isinstance(key, bytes) else key.encode(), raw, ORIGIN)

"""The storage's fast paths for sync batches agree exactly with the checks they stand in for:
`Value.decode` with the validating constructor, `check_changes` with `check_change` per change, and
the padded IN lists of the version look-up with a plain query, across chunk sizes and key spaces."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from datamgr.errors import DatamgrError, InvalidArgument
from datamgr.hlc import HLC, MAX_HLC
from datamgr.kv import _storage_sql as sql
from datamgr.kv._storage_types import check_change, check_changes
from datamgr.kv.storage import MAX_VALUE_LENGTH, Change, KvStorage, StoreKind, Value, VType
from datamgr.storage import create_engine

DC, SV = StoreKind.DEVICE_COLLABORATION, StoreKind.SINGLE_VERSION


def reference_decode(vtype: int, raw: bytes) -> Value:
    """Value.decode as it was: every value built through the validating constructor."""
    try:
        kind = VType(vtype)
        data: object = {
            VType.BYTES: lambda: raw,
            VType.STRING: raw.decode,
            VType.INT: lambda: struct.unpack(">q", raw)[0],
            VType.DOUBLE: lambda: struct.unpack(">d", raw)[0],
            VType.BOOL: lambda: {b"\x00": False, b"\x01": True}[raw],
        }[kind]()
    except (ValueError, KeyError, struct.error):
        raise InvalidArgument("malformed") from None
    return Value(kind, data)  # type: ignore[arg-type]


raws = st.binary(max_size=10) | st.sampled_from([b"\x00", b"\x01", b"\x02", b"\xff\xfe", "é".encode()])


@given(vtype=st.integers(-1, 6), raw=raws)
def test_decode_accepts_and_refuses_what_the_validating_constructor_does(vtype: int, raw: bytes) -> None:
    try:
        want = reference_decode(vtype, raw)
    except InvalidArgument:
        with pytest.raises(InvalidArgument, match="malformed value"):
            Value.decode(vtype, raw)
        return
    for got in (Value.decode(vtype, raw), Value.decode(vtype, memoryview(raw))):  # psycopg2: memoryview
        assert (got.vtype, type(got.data), repr(got.data)) == (want.vtype, type(want.data), repr(want.data))
        assert got.vtype is want.vtype and got.encode() == raw  # repr: a NaN is not equal to itself


class Key(bytes):
    """A bytes subclass: `check_change` takes it, the fast loop sends it to `check_change`."""


STORE = "com.a/s"
fields = {
    "store_id": st.sampled_from([STORE, "com.a/other"]),
    "device": st.sampled_from(["", "devB", "devA", "x" * 129]),
    "key": st.sampled_from([b"k", b"", b"k" * 897, b"k" * 1025, Key(b"k"), "k"]),
    "value": st.sampled_from([None, Value.of(1), Value.of(b"x" * 8), "not a value"]),
    "hlc": st.sampled_from([0, 5, MAX_HLC, MAX_HLC + 1, -1, True, 1.0]),
    "origin": st.sampled_from(["devB", "devA", "", "x" * 128, "x" * 129, None]),
    "seq": st.sampled_from([1, 7, 0, -1, True, 2.0]),
}


def _outcome(check: object) -> tuple[type[BaseException], str] | None:
    try:
        check()  # type: ignore[operator]
    except DatamgrError as exc:
        return type(exc), exc.message
    return None


@given(kind=st.sampled_from([SV, DC]), writer=st.sampled_from(["devB", "devA"]), data=st.data())
def test_check_changes_refuses_exactly_what_check_change_refuses(
    kind: StoreKind, writer: str, data: st.DataObject
) -> None:
    ok = {"store_id": STORE, "device": "" if kind is SV else writer, "key": b"ok", "value": Value.of(1)}
    ok |= {"hlc": 5, "origin": writer, "seq": 1}  # devA: the receiver, whose own key space it is
    changed = data.draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=2, unique=True))
    c = Change(**(ok | {name: data.draw(fields[name]) for name in changed}))  # type: ignore[arg-type]
    want = _outcome(lambda: check_change(c, STORE, kind, "devA"))
    assert _outcome(lambda: check_changes([c], STORE, kind, "devA")) == want
    fine = Change(STORE, "" if kind is SV else "devB", b"ok", None, 5, "devB", 1)
    assert _outcome(lambda: check_changes([fine, c, fine], STORE, kind, "devA")) == want


def test_check_changes_refuses_a_value_over_the_limit_and_what_is_not_a_change() -> None:
    big = Change(STORE, "", b"k", Value.of(b"x" * (MAX_VALUE_LENGTH + 1)), 1, "devB", 1)
    with pytest.raises(DatamgrError, match="at most"):
        check_changes([big], STORE, SV, "devA")
    with pytest.raises(InvalidArgument, match="a change is a Change"):
        check_changes([("k", 1)], STORE, SV, "devA")


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[KvStorage]:
    engine = create_engine(f"sqlite:///{tmp_path / 'kv.db'}")
    storage = KvStorage(engine, "devA", HLC())
    storage.create_store("com.a", "s", DC, 1)
    yield storage
    engine.dispose()


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 65, 400, 401, 1000])
def test_the_version_look_up_finds_every_stored_slot_whatever_the_batch_size(kv: KvStorage, n: int) -> None:
    stored = [(f"dev{d}", f"key{i:04d}".encode()) for d in "BC" for i in range(0, 1200, 3)]
    rows: list[sql.Row] = [
        (device, key, Value.of(i), 1000 + i, device) for i, (device, key) in enumerate(stored)
    ]
    with kv.engine.begin() as conn:
        _, last = sql.lock_store(conn, STORE)
        sql.put_rows(conn, STORE, last, rows, 0)
    asked = [(d, f"key{i:04d}".encode()) for i in range(n) for d in ("devB", "devC", "devD")]
    with kv.engine.connect() as conn:
        got = sql.versions(conn, STORE, asked)
        e = sql.E
        want = {
            (r.device, r.key): (r.hlc, r.origin)
            for r in conn.execute(sa.select(e.device, e.key, e.hlc, e.origin).where(e.store_id == STORE))
            if (r.device, r.key) in set(asked)
        }
    assert got == want and len(want) == 2 * len(range(0, n, 3))

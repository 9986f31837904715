"""KvStorage, the replicated storage under the KV API and the sync engine: every method and limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from datamgr.errors import (
    ClockSkew,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TooLarge,
)
from datamgr.hlc import HLC, pack, unpack
from datamgr.kv.storage import (
    MAX_BATCH_SIZE,
    MAX_KEY_LENGTH,
    MAX_KEY_LENGTH_DEVICE,
    MAX_VALUE_LENGTH,
    Change,
    KvStorage,
    StoreKind,
    Value,
    VType,
    metadata,
)
from datamgr.storage import create_engine

T0 = 1_800_000_000_000
DC, SV = StoreKind.DEVICE_COLLABORATION, StoreKind.SINGLE_VERSION
SVS, DCS = "com.example.notes/shared", "com.example.notes/mine"


class Wall:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'kv.db'}")
    yield eng
    eng.dispose()


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def kv(engine: sa.Engine, wall: Wall) -> KvStorage:
    storage = KvStorage(engine, "devA", HLC(wall))
    storage.create_store("com.example.notes", "shared", SV, 2)
    storage.create_store("com.example.notes", "mine", DC, 2)
    return storage


def v(x: bytes | str | int | float | bool) -> Value:
    return Value.of(x)


def rows(kv: KvStorage, store_id: str) -> dict[tuple[str, bytes], tuple[bytes | None, int, str, int]]:
    """Everything stored, tombstones included: (device, key) → (value bytes, hlc, origin, seq)."""
    return {
        (c.device, c.key): (None if c.value is None else c.value.encode(), c.hlc, c.origin, c.seq)
        for c in kv.changes_since(store_id, 0, 10_000)
    }


def remote(key: bytes, value: Value | None, ms: int, origin: str, seq: int, store: str = SVS) -> Change:
    device = "" if store == SVS else origin
    return Change(store, device, key, value, pack(ms, 0), origin, seq)


# ---- values ----


@given(st.one_of(st.binary(), st.text(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans()))
def test_values_round_trip_through_their_bytes(data: bytes | str | int | float | bool) -> None:
    value = Value.of(data)
    back = Value.decode(value.vtype, value.encode())
    assert back.vtype == value.vtype and back.encode() == value.encode()
    assert type(back.data) is type(data)


def test_value_types_are_inferred_and_checked() -> None:
    assert Value.of(True).vtype is VType.BOOL and Value.of(1).vtype is VType.INT
    assert Value.of(1.0).vtype is VType.DOUBLE and Value.of("s").vtype is VType.STRING
    assert Value(0, b"x").vtype is VType.BYTES  # type: ignore[arg-type]
    for bad in [lambda: Value(VType.INT, True), lambda: Value(VType.INT, 2**63), lambda: Value(9, 1)]:
        with pytest.raises(InvalidArgument):
            bad()  # type: ignore[no-untyped-call]
    with pytest.raises(InvalidArgument):
        Value.of([1])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="malformed"):
        Value.decode(VType.INT, b"\x00")
    with pytest.raises(InvalidArgument, match="malformed"):
        Value.decode(VType.STRING, b"\xff")


# ---- stores ----


def test_create_store_is_idempotent_and_refuses_changed_options(kv: KvStorage) -> None:
    first = kv.get_store(SVS)
    assert first is not None and first.kind is SV and first.security_level == 2
    assert kv.create_store("com.example.notes", "shared", "SINGLE_VERSION", 2) == first
    with pytest.raises(InvalidArgument, match="options changed"):
        kv.create_store("com.example.notes", "shared", DC, 2)
    with pytest.raises(InvalidArgument, match="options changed"):
        kv.create_store("com.example.notes", "shared", SV, 3)
    assert kv.get_store(SVS) == first


@pytest.mark.parametrize(
    ("bundle", "name", "kind", "level"),
    [
        ("not a bundle", "s", SV, 1),
        ("com.a", "bad-name", SV, 1),
        ("com.a", "x" * 129, SV, 1),
        ("com.a", "abc\n", SV, 1),
        ("com.a", "s", "MULTI_VERSION", 1),
        ("com.a", "s", SV, 0),
        ("com.a", "s", SV, 5),
    ],
)
def test_create_store_checks_its_arguments(
    kv: KvStorage, bundle: str, name: str, kind: str, level: int
) -> None:
    with pytest.raises(InvalidArgument):
        kv.create_store(bundle, name, kind, level)
    assert kv.list_stores(bundle) == []


def test_list_get_and_delete_stores(kv: KvStorage) -> None:
    kv.create_store("com.other", "x", SV, 1)
    assert [s.store_id for s in kv.list_stores("com.example.notes")] == [DCS, SVS]
    assert kv.get_store("com.example.notes/nope") is None
    epoch = kv.get_store(SVS).epoch  # type: ignore[union-attr]
    kv.write(SVS, [(b"k", v(1))])
    kv.set_acked(SVS, "devB", 1)
    kv.delete_store(SVS)
    assert kv.get_store(SVS) is None
    with pytest.raises(NotFound):
        kv.delete_store(SVS)
    with pytest.raises(NotFound):
        kv.get(SVS, b"k")
    again = kv.create_store("com.example.notes", "shared", SV, 2)
    assert again.epoch != epoch  # a rebuilt store is a new epoch: peers notice
    assert kv.scan(SVS) == [] and kv.peer_state(SVS, "devB") is None
    assert kv.write(SVS, [(b"k", v(2))])[0].seq == 1


# ---- local writes ----


def test_write_stamps_each_change_and_returns_them(kv: KvStorage) -> None:
    changes = kv.write(SVS, [(b"a", v("x")), (b"b", v(2))], [])
    assert [(c.key, c.seq, c.origin, c.device) for c in changes] == [
        (b"a", 1, "devA", ""),
        (b"b", 2, "devA", ""),
    ]
    assert changes[0].hlc < changes[1].hlc
    deleted = kv.write(SVS, [], [b"a", b"missing"])  # deleting a missing key is a no-op
    assert [(c.key, c.value, c.seq) for c in deleted] == [(b"a", None, 3)]
    assert kv.write(SVS, [], [b"a"]) == []  # already deleted: nothing, no seq used
    assert kv.write(SVS, [(b"c", v(True))])[0].seq == 4
    assert kv.get(SVS, b"a") is None and kv.get(SVS, b"b") == v(2)


def test_dc_writes_go_to_this_devices_key_space(kv: KvStorage) -> None:
    (c,) = kv.write(DCS, [(b"k", v(1))])
    assert c.device == "devA" == c.origin
    assert kv.get(DCS, b"k") == v(1) == kv.get(DCS, b"k", device="devA")
    assert kv.get(DCS, b"k", device="devB") is None
    assert kv.scan(DCS) == [(b"k", v(1), "devA")]
    with pytest.raises(InvalidArgument, match="one key space"):
        kv.get(SVS, b"k", device="devA")


@pytest.mark.parametrize(
    ("puts", "deletes", "error", "match"),
    [
        ([(b"", v(1))], [], InvalidArgument, "1-1024"),
        ([(b"k" * (MAX_KEY_LENGTH + 1), v(1))], [], InvalidArgument, "1-1024"),
        ([("text", v(1))], [], InvalidArgument, "bytes"),
        ([(b"ok", 1)], [], InvalidArgument, "a Value"),
        ([(b"ok", v(b"x" * (MAX_VALUE_LENGTH + 1)))], [], TooLarge, "4194303"),
        ([(b"k", v(1)) for _ in range(1)], [b"k"], InvalidArgument, "twice"),
        ([(b"%d" % i, v(i)) for i in range(MAX_BATCH_SIZE)], [b"x"], TooLarge, "at most 128"),
    ],
)
def test_over_a_limit_nothing_is_written(
    kv: KvStorage, puts: list[tuple[bytes, Value]], deletes: list[bytes], error: type[Exception], match: str
) -> None:
    kv.write(SVS, [(b"k", v(0))])
    before = rows(kv, SVS)
    with pytest.raises(error, match=match):
        kv.write(SVS, [(b"first", v(1)), *puts], deletes)
    assert rows(kv, SVS) == before
    assert kv.write(SVS, [(b"z", v(1))])[0].seq == 2  # no seq was used up


def test_limits_at_the_edge(kv: KvStorage) -> None:
    assert TooLarge("x").code == "RESOURCE_EXHAUSTED" and issubclass(TooLarge, InvalidArgument)
    kv.write(SVS, [(b"k" * MAX_KEY_LENGTH, v(b"x" * MAX_VALUE_LENGTH))])
    kv.write(SVS, [(b"%d" % i, v(i)) for i in range(MAX_BATCH_SIZE)])
    kv.write(DCS, [(b"k" * MAX_KEY_LENGTH_DEVICE, v(1))])
    with pytest.raises(InvalidArgument, match="1-896"):
        kv.write(DCS, [(b"k" * (MAX_KEY_LENGTH_DEVICE + 1), v(1))])
    with pytest.raises(NotFound):
        kv.write("com.example.notes/nope", [(b"k", v(1))])


def test_scan_prefix_order_limit_and_tombstones(kv: KvStorage) -> None:
    keys = [b"a", b"ab", b"ab\xff", b"ab\xff\x00", b"ac", b"b", b"\xff", b"\xff\xff"]
    kv.write(SVS, [(k, v(i)) for i, k in enumerate(reversed(keys))])
    kv.write(SVS, [], [b"ac"])
    assert [k for k, _, _ in kv.scan(SVS)] == [k for k in keys if k != b"ac"]
    assert [k for k, _, _ in kv.scan(SVS, b"ab")] == [b"ab", b"ab\xff", b"ab\xff\x00"]
    assert [k for k, _, _ in kv.scan(SVS, b"ab\xff")] == [b"ab\xff", b"ab\xff\x00"]
    assert [k for k, _, _ in kv.scan(SVS, b"\xff")] == [b"\xff", b"\xff\xff"]
    assert [k for k, _, _ in kv.scan(SVS, limit=2)] == [b"a", b"ab"]
    assert kv.scan(SVS, b"zz") == []


def test_changes_since_is_in_seq_order_with_tombstones_and_one_row_per_key(kv: KvStorage) -> None:
    kv.write(SVS, [(b"a", v(1)), (b"b", v(2))])
    kv.write(SVS, [(b"a", v(3))], [b"b"])
    got = kv.changes_since(SVS, 0, 100)
    assert [(c.key, c.value, c.seq) for c in got] == [(b"a", v(3), 3), (b"b", None, 4)]
    assert [c.seq for c in kv.changes_since(SVS, 3, 100)] == [4]
    assert [c.seq for c in kv.changes_since(SVS, 0, 1)] == [3]
    with pytest.raises(NotFound):
        kv.changes_since("com.example.notes/nope", 0, 10)


# ---- remote changes ----


def test_single_version_merge_is_last_writer_wins_by_hlc_then_origin(kv: KvStorage, wall: Wall) -> None:
    (mine,) = kv.write(SVS, [(b"k", v("local"))])
    ms = unpack(mine.hlc)[0]
    older = remote(b"k", v("old"), ms - 1, "devB", 1)
    assert kv.apply_remote(SVS, "devB", "eB", [older], 1) == []  # loses: nothing, no seq
    newer = remote(b"k", v("new"), ms + 5, "devB", 2)
    (took,) = kv.apply_remote(SVS, "devB", "eB", [newer], 2)
    assert (took.seq, took.origin, took.hlc) == (2, "devB", newer.hlc) and kv.get(SVS, b"k") == v("new")
    tie_low = remote(b"k", v("tie-low"), ms + 5, "devA0", 3)  # same hlc: the higher origin wins
    tie_high = remote(b"k", v("tie-high"), ms + 5, "devC", 1)
    assert kv.apply_remote(SVS, "devB", "eB", [tie_low], 3) == []
    assert [c.value for c in kv.apply_remote(SVS, "devC", "eC", [tie_high], 1)] == [v("tie-high")]
    same = remote(b"k", v("tie-high"), ms + 5, "devC", 4)  # the same write relayed again
    assert kv.apply_remote(SVS, "devB", "eB", [same], 4) == []
    tomb = remote(b"k", None, ms + 9, "devB", 5)
    assert [c.value for c in kv.apply_remote(SVS, "devB", "eB", [tomb], 5)] == [None]
    assert kv.get(SVS, b"k") is None
    assert kv.peer_state(SVS, "devB").received_seq == 5  # type: ignore[union-attr]


def test_remote_clock_moves_the_local_clock(kv: KvStorage, wall: Wall) -> None:
    ahead = remote(b"k", v(1), T0 + 30_000, "devB", 1)
    kv.apply_remote(SVS, "devB", "eB", [ahead], 1)
    (mine,) = kv.write(SVS, [(b"k", v(2))])
    assert mine.hlc > ahead.hlc and kv.get(SVS, b"k") == v(2)  # causality: a reply beats what it saw


def test_apply_is_idempotent_and_contiguous(kv: KvStorage) -> None:
    batch = [remote(b"a", v(1), T0, "devB", 1), remote(b"b", v(2), T0, "devB", 3)]
    assert len(kv.apply_remote(SVS, "devB", "eB", batch, 4, since_seq=0)) == 2
    before = rows(kv, SVS)
    assert kv.apply_remote(SVS, "devB", "eB", batch, 4, since_seq=0) == []  # replay
    assert kv.apply_remote(SVS, "devB", "eB", batch[:1], 1) == []  # an older batch
    assert rows(kv, SVS) == before
    with pytest.raises(FailedPrecondition, match="resend from there"):
        kv.apply_remote(SVS, "devB", "eB", [remote(b"c", v(3), T0, "devB", 9)], 9, since_seq=6)
    overlap = [*batch, remote(b"c", v(3), T0, "devB", 5)]  # resent from an older ack: only seq 5 is new
    assert [c.key for c in kv.apply_remote(SVS, "devB", "eB", overlap, 5, since_seq=0)] == [b"c"]
    assert kv.apply_remote(SVS, "devB", "eB", [], 8, since_seq=5) == []  # an empty range moves the mark
    assert kv.peer_state(SVS, "devB").received_seq == 8  # type: ignore[union-attr]


def test_a_batch_from_another_epoch_of_the_peer_is_refused(kv: KvStorage) -> None:
    kv.apply_remote(SVS, "devB", "eB", [remote(b"a", v(1), T0, "devB", 1)], 1)
    before = rows(kv, SVS)
    with pytest.raises(FailedPrecondition, match="handshake again"):
        kv.apply_remote(SVS, "devB", "eB2", [remote(b"b", v(1), T0, "devB", 2)], 2)
    assert rows(kv, SVS) == before


@pytest.mark.parametrize(
    ("store", "changes", "last", "error"),
    [
        (SVS, [remote(b"a", v(1), T0, "devB", 2), remote(b"b", v(1), T0, "devB", 2)], 2, InvalidArgument),
        (SVS, [remote(b"a", v(1), T0, "devB", 3), remote(b"b", v(1), T0, "devB", 2)], 3, InvalidArgument),
        (SVS, [remote(b"a", v(1), T0, "devB", 5)], 4, InvalidArgument),
        (SVS, [remote(b"a", v(1), T0, "devB", 1)], -1, InvalidArgument),
        (SVS, [Change(SVS, "devB", b"a", v(1), pack(T0, 0), "devB", 1)], 1, InvalidArgument),
        (SVS, [Change(DCS, "", b"a", v(1), pack(T0, 0), "devB", 1)], 1, InvalidArgument),
        (SVS, [Change(SVS, "", b"", v(1), pack(T0, 0), "devB", 1)], 1, InvalidArgument),
        (SVS, [Change(SVS, "", b"a", v(1), -5, "devB", 1)], 1, InvalidArgument),
        (SVS, [Change(SVS, "", b"a", v(1), pack(T0, 0), "", 1)], 1, InvalidArgument),
        (DCS, [Change(DCS, "devC", b"a", v(1), pack(T0, 0), "devB", 1)], 1, InvalidArgument),
        (DCS, [Change(DCS, "", b"a", v(1), pack(T0, 0), "devB", 1)], 1, InvalidArgument),
        (
            DCS,
            [remote(b"ok", v(1), T0, "devB", 1, DCS), remote(b"a", v(1), T0, "devA", 2, DCS)],
            2,
            PermissionDenied,
        ),
    ],
)
def test_malformed_batches_change_nothing(
    kv: KvStorage, store: str, changes: list[Change], last: int, error: type[Exception]
) -> None:
    kv.write(DCS, [(b"a", v("mine"))])
    before = rows(kv, store)
    with pytest.raises(error):
        kv.apply_remote(store, "devB", "eB", changes, last)
    assert rows(kv, store) == before and kv.peer_state(store, "devB") is None
    with pytest.raises(NotFound):
        kv.apply_remote("com.example.notes/nope", "devB", "eB", [], 1)
    with pytest.raises(InvalidArgument, match="itself"):
        kv.apply_remote(store, "devA", "eA", [], 1)


def test_dc_remote_changes_go_to_their_origins_key_space(kv: KvStorage) -> None:
    kv.write(DCS, [(b"k", v("mine"))])
    (took,) = kv.apply_remote(DCS, "devB", "eB", [remote(b"k", v("theirs"), T0, "devB", 1, DCS)], 1)
    assert took.device == "devB"
    relayed = remote(b"k", v("C's"), T0, "devC", 7, DCS)  # devB relays devC's data
    assert kv.apply_remote(DCS, "devB", "eB", [relayed], 7)[0].device == "devC"
    assert kv.get(DCS, b"k") == v("mine")
    assert kv.get(DCS, b"k", device="devB") == v("theirs") and kv.get(DCS, b"k", device="devC") == v("C's")
    assert kv.scan(DCS, device="devB") == [(b"k", v("theirs"), "devB")]


def test_a_far_future_batch_is_refused_whole_and_changes_nothing(kv: KvStorage, wall: Wall) -> None:
    kv.write(SVS, [(b"k", v(0))])
    before, last = rows(kv, SVS), kv.clock.last
    batch = [remote(b"a", v(1), T0, "devB", 1), remote(b"b", v(2), T0 + 60_001, "devB", 2)]
    with pytest.raises(ClockSkew, match="60000 ms"):
        kv.apply_remote(SVS, "devB", "eB", batch, 2)
    assert rows(kv, SVS) == before and kv.clock.last == last and kv.peer_state(SVS, "devB") is None
    wall.ms += 10  # time caught up: the same batch is fine now
    assert len(kv.apply_remote(SVS, "devB", "eB", batch, 2)) == 2


# ---- peers and tombstones ----


def test_peer_watermarks(kv: KvStorage) -> None:
    kv.write(SVS, [(b"a", v(1)), (b"b", v(2)), (b"c", v(3))])
    assert kv.peer_state(SVS, "devB") is None
    kv.set_acked(SVS, "devB", 2)
    kv.set_acked(SVS, "devB", 1)  # a late ack never moves the watermark back
    assert kv.peer_state(SVS, "devB").acked_seq == 2  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match="last seq is 3"):
        kv.set_acked(SVS, "devB", 4)
    state, rebuilt = kv.note_peer_epoch(SVS, "devB", "e1")  # epoch learnt: nothing reset
    assert (state.peer_epoch, state.acked_seq, rebuilt) == ("e1", 2, False)
    kv.apply_remote(SVS, "devB", "e1", [remote(b"x", v(1), T0, "devB", 1)], 1)
    state, rebuilt = kv.note_peer_epoch(SVS, "devB", "e2")  # its store was rebuilt
    assert (state.peer_epoch, state.received_seq, state.acked_seq, rebuilt) == ("e2", 0, 0, True)
    kv.set_acked(SVS, "devB", 3)


def test_tombstones_are_collected_once_every_listed_peer_acked_them(kv: KvStorage) -> None:
    kv.write(SVS, [(b"a", v(1)), (b"b", v(2)), (b"c", v(3))])
    kv.write(SVS, [], [b"a"])  # seq 4
    kv.write(SVS, [], [b"b"])  # seq 5
    assert kv.collect_tombstones(SVS, ["devB", "devC"]) == 0
    kv.set_acked(SVS, "devB", 5)
    kv.set_acked(SVS, "devC", 4)
    assert kv.collect_tombstones(SVS, ["devB", "devC"]) == 1  # a: both have it; b: devC has not
    assert set(rows(kv, SVS)) == {("", b"b"), ("", b"c")}
    assert kv.collect_tombstones(SVS, ["devB", "devC", "devD"]) == 0  # devD never acked anything
    assert kv.collect_tombstones(SVS, []) == 1  # no peers: nobody needs them
    assert set(rows(kv, SVS)) == {("", b"c")}
    assert kv.write(SVS, [(b"d", v(4))])[0].seq == 6  # the collected seqs are never reused


def test_restart_never_issues_a_stamp_below_stored_data(engine: sa.Engine, wall: Wall) -> None:
    kv = KvStorage(engine, "devA", HLC(wall))
    kv.create_store("com.a", "s", SV, 1)
    kv.write("com.a/s", [(b"k", v(1))])
    (tomb,) = kv.write("com.a/s", [], [b"k"])
    assert kv.collect_tombstones("com.a/s", []) == 1  # even the newest stamp's row is gone now
    rolled_back = Wall(T0 - 3_600_000)  # restarted with the wall clock an hour behind
    again = KvStorage(engine, "devA", HLC(rolled_back))
    (c,) = again.write("com.a/s", [(b"k", v(2))])
    assert c.hlc > tomb.hlc and c.seq == 3


@pytest.mark.postgres
def test_the_same_contract_on_postgresql(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        kv = KvStorage(engine, "devA", HLC(Wall()))
        kv.create_store("com.example.notes", "shared", SV, 2)
        assert kv.create_store("com.example.notes", "shared", SV, 2) == kv.get_store(SVS)
        kv.write(SVS, [(b"ab", v("x")), (b"ab\xff", v(1)), (b"ac", v(2.5)), (b"\xff", v(True))])
        kv.write(SVS, [], [b"ac"])
        assert [k for k, _, _ in kv.scan(SVS, b"ab")] == [b"ab", b"ab\xff"]
        assert kv.get(SVS, b"ab\xff") == v(1) and kv.get(SVS, b"ac") is None
        newer = remote(b"ab", v("theirs"), T0 + 10, "devB", 1)
        assert len(kv.apply_remote(SVS, "devB", "eB", [newer], 1, since_seq=0)) == 1
        assert kv.apply_remote(SVS, "devB", "eB", [newer], 1, since_seq=0) == []
        assert [c.seq for c in kv.changes_since(SVS, 0, 100)] == [2, 4, 5, 6]
        kv.set_acked(SVS, "devB", 6)
        assert kv.note_peer_epoch(SVS, "devB", "eB") == (kv.peer_state(SVS, "devB"), False)
        assert kv.collect_tombstones(SVS, ["devB"]) == 1
        again = KvStorage(engine, "devA", HLC(Wall(T0 - 60_000)))
        assert again.write(SVS, [(b"z", v(0))])[0].hlc > newer.hlc
    finally:
        metadata.drop_all(engine)
        engine.dispose()

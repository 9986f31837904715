"""Batches at the responder: replays are no-ops, malformed or misaddressed batches change nothing,
and a misbehaving responder cannot push oversize or mismatched batches onto the initiator."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from simnet import Replica, SimNet
from sync_helpers import BOTH, DC, PULL, PUSH, S, epoch, live, put, run, sync, with_store

from datamgr.errors import (
    DatamgrError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from datamgr.hlc import pack
from datamgr.kv.storage import Change, StoreKind, Value
from datamgr.kv.sync_api import SyncCode
from datamgr.sync.engine import SyncOptions
from datamgr.sync.messages import PullReply, PushAck, PushBatch, Reply, Request


def snapshot(r: Replica) -> tuple[object, ...]:
    rows = [(c.device, c.key, c.value, c.hlc, c.origin, c.seq) for c in r.storage.changes_since(S, 0, 10_000)]
    return tuple(rows), r.storage.peer_state(S, "A"), len(r.remote)


def captured(net: SimNet) -> list[PushBatch]:
    seen: list[PushBatch] = []

    def keep(src: str, dst: str, msg: Request) -> Request:
        if isinstance(msg, PushBatch):
            seen.append(msg)
        return msg

    net.before = keep
    return seen


def test_a_replayed_batch_is_a_no_op(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")
    batches = captured(net)
    put(a, x=1, y=2)
    sync(a, "B", PUSH)
    before = snapshot(b)
    for batch in batches * 2:
        ack = run(net.deliver("A", "B", batch))
        assert ack == PushAck(S, 2, 0)
    assert snapshot(b) == before


def test_an_old_batch_arriving_late_does_not_undo_newer_data(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")
    batches = captured(net)
    put(a, k="old")
    sync(a, "B", PUSH)
    net.time.advance(1)
    put(a, k="new")
    sync(a, "B", PUSH)
    assert len(batches) == 2
    assert run(net.deliver("A", "B", batches[0])).applied == 0
    assert live(b) == {b"k": "new"}


def _session(net: SimNet, kind: StoreKind = StoreKind.SINGLE_VERSION, **kw: Any) -> tuple[Replica, Replica]:
    a, b = with_store(net, "A", kind=kind)[0], with_store(net, "B", kind=kind, **kw)[0]
    put(a, first=1)
    assert sync(a, "B", PUSH).code is SyncCode.OK  # a handshake, and B holds A's seq 1
    return a, b


def change(
    net: SimNet, key: bytes, seq: int, *, device: str = "", size: int = 1, ahead_ms: int = 0
) -> Change:
    return Change(S, device, key, Value.of(b"x" * size), pack(net.time.ms + ahead_ms, 0), "A", seq)


def batch(a: Replica, b: Replica, since: int, last: int, *changes: Change, **kw: Any) -> PushBatch:
    return dataclasses.replace(PushBatch(S, epoch(a), epoch(b), since, last, changes), **kw)


def _x(n: SimNet, seq: int, **kw: Any) -> Change:
    return change(n, b"x%d" % seq, seq, **kw)


# What crosses the wire is the code, so ClockSkew arrives as FailedPrecondition, TooLarge as
# ResourceExhausted. B holds A's changes up to seq 1 and accepts 4 changes or 1000 bytes a batch.
Exhausted, Precondition = ResourceExhausted, FailedPrecondition
MALFORMED: dict[str, tuple[Any, type[DatamgrError], str]] = {
    "seqs go down": (lambda n, a, b: batch(a, b, 1, 3, _x(n, 3), _x(n, 2)), InvalidArgument, "increase"),
    "seq past the end": (lambda n, a, b: batch(a, b, 1, 3, _x(n, 5)), InvalidArgument, r"\(1, 3\]"),
    "end before start": (lambda n, a, b: batch(a, b, 1, 0), InvalidArgument, "malformed"),
    "a gap": (lambda n, a, b: batch(a, b, 4, 6, _x(n, 5)), FailedPrecondition, "resend from there"),
    "far future": (lambda n, a, b: batch(a, b, 1, 2, _x(n, 2, ahead_ms=61_000)), FailedPrecondition, "ahead"),
    "too many": (lambda n, a, b: batch(a, b, 1, 6, *(_x(n, i) for i in range(2, 7))), Exhausted, "5 changes"),
    "too big": (lambda n, a, b: batch(a, b, 1, 3, _x(n, 2, size=600), _x(n, 3, size=600)), Exhausted, "byte"),
    "no store": (lambda n, a, b: batch(a, b, 1, 2, _x(n, 2), store_id=S + "x"), NotFound, "no KV store"),
    "old receiver": (lambda n, a, b: batch(a, b, 1, 2, _x(n, 2), peer_epoch="old"), Precondition, "again"),
    "other sender": (lambda n, a, b: batch(a, b, 1, 2, _x(n, 2), epoch="other"), Precondition, "first"),
}  # fmt: skip


@pytest.mark.parametrize(("make", "error", "match"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_batches_are_refused_and_change_nothing(
    net: SimNet, make: Any, error: type[DatamgrError], match: str
) -> None:
    a, b = _session(net, options=SyncOptions(batch_size=4, batch_bytes=1000))
    before = snapshot(b)
    with pytest.raises(error, match=match):
        run(net.deliver("A", "B", make(net, a, b)))
    assert snapshot(b) == before


def test_one_change_larger_than_batch_bytes_still_goes_alone(net: SimNet) -> None:
    a, b = _session(net, options=SyncOptions(batch_bytes=1000))
    assert run(net.deliver("A", "B", batch(a, b, 1, 2, change(net, b"big", 2, size=5000)))).applied == 1


def test_a_push_into_the_receivers_own_key_space_is_refused(net: SimNet) -> None:
    a, b = _session(net, kind=DC)
    put(b, mine=1)
    before = snapshot(b)
    own = Change(S, "B", b"mine", Value.of(2), pack(net.time.ms + 5, 0), "B", 2)
    with pytest.raises(PermissionDenied, match="own key space"):
        run(net.deliver("A", "B", batch(a, b, 1, 2, change(net, b"ok", 2, device="A"), own)))
    assert snapshot(b) == before and live(b) == {b"mine": 1}


def test_a_push_without_a_handshake_is_refused(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")
    with pytest.raises(FailedPrecondition, match="handshake first"):
        run(net.deliver("A", "B", batch(a, b, 0, 1, change(net, b"x", 1))))
    assert b.storage.peer_state(S, "A") is None


def _misbehave(net: SimNet, fn: Any) -> None:
    net.after = lambda src, dst, msg, reply: fn(reply) if isinstance(reply, PullReply) else reply


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda r: dataclasses.replace(r, changes=r.changes * 3), "RESOURCE_EXHAUSTED"),
        (lambda r: dataclasses.replace(r, since_seq=r.since_seq + 1), "another batch"),
        (lambda r: dataclasses.replace(r, epoch="forged"), "another batch"),
        (lambda r: dataclasses.replace(r, changes=r.changes[::-1]), "increase"),
    ],
)
def test_a_misbehaving_responder_cannot_push_bad_batches_onto_a_puller(
    net: SimNet, tamper: Any, match: str
) -> None:
    a = with_store(net, "A", options=SyncOptions(batch_size=4))[0]
    b = with_store(net, "B")[0]
    put(b, **{f"k{i}": i for i in range(4)})
    _misbehave(net, tamper)
    status = sync(a, "B", PULL)
    assert status.code is SyncCode.ERROR and match in status.message, status
    assert live(a) == {} and a.storage.peer_state(S, "B").received_seq == 0  # type: ignore[union-attr]


def test_an_ack_below_the_batch_end_ends_the_session(net: SimNet) -> None:
    a, _ = with_store(net, "A", "B")
    put(a, x=1, y=2)

    def short(src: str, dst: str, msg: Request, reply: Reply) -> Reply:
        return dataclasses.replace(reply, received_seq=1) if isinstance(reply, PushAck) else reply

    net.after = short
    status = sync(a, "B", BOTH)
    assert status.code is SyncCode.ERROR and "acked seq 1 for a batch up to 2" in status.message
    assert a.storage.peer_state(S, "B").acked_seq == 0  # type: ignore[union-attr]

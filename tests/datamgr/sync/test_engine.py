"""Sync sessions over the simulated network: modes, key spaces, handshake, rebuilt peers, security
levels, clock skew, resuming an interrupted sync."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from simnet import SimNet
from sync_helpers import BOTH, DC, PULL, PUSH, SV, S, epoch, live, put, run, sync, with_store

from datamgr import security_levels as security
from datamgr.errors import DeadlineExceeded, FailedPrecondition, NotFound, PermissionDenied, Unavailable
from datamgr.kv.sync_api import SyncCode, SyncMode, SyncStatus
from datamgr.sync.engine import SyncOptions
from datamgr.sync.messages import (
    PROTOCOL_VERSION,
    Handshake,
    HandshakeReply,
    PullRequest,
    PushBatch,
    Reply,
    Request,
    change_size,
)


def test_push_pull_exchanges_both_ways_and_then_has_nothing_to_do(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")
    put(a, x=1, y=2)
    put(b, z=3)
    assert sync(a, "B") == SyncStatus(SyncCode.OK, "", pushed=2, pulled=1)
    assert live(a) == live(b) == {b"x": 1, b"y": 2, b"z": 3}
    assert sorted(c.key for _, _, c in b.remote) == [b"x", b"y"]
    assert sync(a, "B") == SyncStatus(SyncCode.OK, "", 0, 0)  # relayed copies come back as no-ops
    assert sync(b, "A") == SyncStatus(SyncCode.OK, "", 0, 0)


def test_push_only_and_pull_only_move_one_direction(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")
    put(a, x=1)
    put(b, y=2)
    assert sync(a, "B", PUSH).pushed == 1 and live(a) == {b"x": 1}
    assert sync(a, "B", PULL).pulled == 1 and live(a) == {b"x": 1, b"y": 2}


def test_last_writer_wins_on_both_sides(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")
    put(a, k="from A")
    net.time.advance(5)
    put(b, k="from B, later")
    sync(a, "B")
    assert live(a) == live(b) == {b"k": "from B, later"}


def test_device_collaboration_keeps_a_key_space_per_device_and_relays(net: SimNet) -> None:
    a, b, c = with_store(net, "A", "B", "C", kind=DC)
    put(a, k="A's")
    put(b, k="B's")
    net.partition(["A", "B"], ["B", "C"])  # A and C never meet
    assert sync(a, "B").code is SyncCode.OK
    assert sync(b, "C").code is SyncCode.OK  # B forwards A's space, never C's own
    assert sync(c, "A").code is SyncCode.ERROR
    for r in (a, b, c):
        assert live(r, "A") == {b"k": "A's"} and live(r, "B") == {b"k": "B's"}
    assert live(b) == {b"k": "B's"} and live(c) == {}
    put(c, k="C's")
    assert sync(c, "B").code is SyncCode.OK and sync(a, "B").code is SyncCode.OK
    assert live(a, "C") == {b"k": "C's"}


def test_tombstones_replicate_and_are_collected_once_everyone_acked(net: SimNet) -> None:
    a, b, c = with_store(net, "A", "B", "C")
    put(a, k=1, keep=2)
    a.storage.write(S, [], [b"k"])
    for x, y in [("A", "B"), ("A", "C"), ("B", "C")]:
        assert sync(net[x], y).code is SyncCode.OK
    assert live(a) == live(b) == live(c) == {b"keep": 2}
    for r in (a, b, c):
        others = [n for n in "ABC" if n != r.name]
        assert r.storage.collect_tombstones(S, others) == 1
        assert [x.key for x in r.storage.changes_since(S, 0, 100)] == [b"keep"]
    assert sync(a, "B") == SyncStatus(SyncCode.OK, "", 0, 0)


def test_unreachable_untrusted_and_self_are_errors_for_that_peer_only(net: SimNet) -> None:
    a, _, _ = with_store(net, "A", "B", "C")
    net.partition(["A", "C"], ["B"])
    got = run(a.engine.sync(S, ["B", "C", "A", "stranger"], BOTH))
    assert got["C"].code is SyncCode.OK
    assert got["B"].code is SyncCode.ERROR and got["B"].message.startswith("UNAVAILABLE")
    assert got["A"].code is SyncCode.ERROR and "itself" in got["A"].message
    assert got["stranger"].code is SyncCode.ERROR and "not a trusted peer" in got["stranger"].message
    with pytest.raises(PermissionDenied, match="not a trusted peer"):
        run(net["B"].engine.handle("stranger", _handshake(net, "stranger", "B")))


def test_concurrent_sessions_in_all_directions_converge(net: SimNet) -> None:
    a, b, c = with_store(net, "A", "B", "C")
    for i, r in enumerate((a, b, c)):
        put(r, shared=i, **{f"own{i}": i})
        net.time.advance(1)

    async def everyone() -> list[dict[str, SyncStatus]]:
        jobs = [r.engine.sync(S, [p for p in "ABC" if p != r.name]) for r in (a, b, c)]
        return await asyncio.gather(*jobs)

    for statuses in run(everyone()) + run(everyone()):
        assert all(s.code is SyncCode.OK for s in statuses.values()), statuses
    assert live(a) == live(b) == live(c) == {b"shared": 2, b"own0": 0, b"own1": 1, b"own2": 2}


# ---- handshake ----


def _handshake(net: SimNet, src: str, dst: str, **changes: Any) -> Handshake:
    info = net[dst].storage.get_store(S)
    assert info is not None
    hs = Handshake(
        PROTOCOL_VERSION, S, src, dst, "e-" + src, info.kind, info.security_level, None, 0, 10, 10_000
    )
    return dataclasses.replace(hs, **changes)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"version": PROTOCOL_VERSION + 1}, FailedPrecondition, "version 2 is not supported"),
        ({"device": "C"}, PermissionDenied, "claiming to be from C came from A"),
        ({"peer": "C"}, FailedPrecondition, "meant for C reached B"),
        ({"kind": DC}, FailedPrecondition, "different options"),
        ({"security_level": 3}, FailedPrecondition, "different options"),
        ({"store_id": "com.example.notes/other"}, NotFound, "no KV store"),
    ],
)
def test_handshakes_that_are_refused(
    net: SimNet, changes: dict[str, Any], error: type[Exception], match: str
) -> None:
    with_store(net, "A", "B")
    with pytest.raises(error, match=match):
        run(net["B"].engine.handle("A", _handshake(net, "A", "B", **changes)))
    assert net["B"].storage.peer_state(S, "A") is None  # a refused handshake leaves no trace


def test_a_reply_in_another_protocol_version_or_options_ends_the_session(net: SimNet) -> None:
    a, _ = with_store(net, "A", "B")
    for change, match in [({"version": 9}, "protocol 9"), ({"security_level": 4}, "different options")]:

        def tamper(src: str, dst: str, msg: Request, reply: Reply, change: dict[str, Any] = change) -> Reply:
            return dataclasses.replace(reply, **change) if isinstance(reply, HandshakeReply) else reply

        net.after = tamper
        status = sync(a, "B")
        assert status.code is SyncCode.ERROR and match in status.message, status


def test_a_store_missing_on_the_peer_is_an_error(net: SimNet) -> None:
    a, _ = with_store(net, "A")[0], net.add("B")
    assert sync(a, "B").message.startswith("NOT_FOUND: no KV store com.example.notes/notes on device B")


# ---- rebuilt stores ----


@pytest.mark.parametrize("rebuilt", ["A", "B"])
def test_a_rebuilt_store_gets_a_full_resync(net: SimNet, rebuilt: str) -> None:
    a, b = with_store(net, "A", "B")
    put(a, x=1)
    put(b, y=2)
    sync(a, "B")
    r = net[rebuilt]
    r.storage.delete_store(S)
    r.storage.create_store("com.example.notes", "notes", SV, 2)
    put(r, after=3)
    status = sync(a, "B")
    assert status.code is SyncCode.OK
    if rebuilt == "B":
        assert "B's store was rebuilt" in status.message
    assert live(a) == live(b) == {b"x": 1, b"y": 2, b"after": 3}
    assert sync(b, "A") == SyncStatus(SyncCode.OK, "", 0, 0)


def test_a_stale_session_after_the_peer_was_rebuilt_is_refused(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")
    put(a, x=1)
    sync(a, "B")
    old_epoch = epoch(b)
    b.storage.delete_store(S)
    b.storage.create_store("com.example.notes", "notes", SV, 2)
    with pytest.raises(FailedPrecondition, match="handshake again"):
        run(b.engine.handle("A", PullRequest(S, epoch(a), old_epoch, 0, 10, 1000)))


# ---- security levels ----


@pytest.mark.parametrize(
    ("level", "labels"), [(1, {1}), (2, {1, 2}), (3, {1, 2, 3}), (4, {1, 2, 3, 4}), (5, {1, 2, 3, 4})]
)
def test_the_device_level_rule(level: int, labels: set[int]) -> None:
    assert {label for label in range(1, 5) if security.may_hold(level, label)} == labels


def test_data_goes_only_to_devices_that_may_hold_its_label(net: SimNet) -> None:
    a = with_store(net, "A", label=3)[0]
    low = with_store(net, "L", label=3, level=2)[0]  # SL2: up to S2
    put(a, secret=1)
    put(low, note=2)
    skipped = sync(a, "L", PUSH)
    assert skipped.code is SyncCode.SKIPPED and "SL2 and may hold data up to S2" in skipped.message
    assert live(low) == {b"note": 2}
    partial = sync(a, "L", BOTH)  # pulling from L is fine: A may hold S3
    assert partial.code is SyncCode.PARTIAL and partial.pulled == 1 and "push skipped" in partial.message
    assert sync(low, "A", PULL).code is SyncCode.SKIPPED  # A refuses to send S3 data to L
    assert live(low) == {b"note": 2}
    with pytest.raises(PermissionDenied, match="SL2"):
        run(a.engine.handle("L", PullRequest(S, epoch(low), epoch(a), 0, 10, 1000)))
    assert live(low) == {b"note": 2}


# ---- clock skew ----


def test_a_peer_clock_too_far_ahead_is_refused_and_changes_nothing(net: SimNet) -> None:
    a = with_store(net, "A")[0]
    fast = with_store(net, "F", skew_ms=120_000)[0]
    put(fast, k=1)
    before = a.clock.last
    pulled = sync(a, "F", PULL)
    assert pulled.code is SyncCode.ERROR and pulled.message.startswith("FAILED_PRECONDITION: a peer's clock")
    pushed = sync(fast, "A", PUSH)
    assert pushed.code is SyncCode.ERROR and "ahead" in pushed.message
    assert live(a) == {} and a.clock.last == before
    assert fast.storage.peer_state(S, "A").acked_seq == 0  # type: ignore[union-attr]


# ---- interrupted syncs ----


def _fail_on(net: SimNet, kind: type, nth: int, exc: Exception, after: bool = False) -> None:
    seen = [0]

    def count(msg: Request) -> None:
        if isinstance(msg, kind):
            seen[0] += 1
            if seen[0] == nth:
                raise exc

    if after:
        net.after = lambda src, dst, msg, reply: (count(msg), reply)[1]
    else:
        net.before = lambda src, dst, msg: (count(msg), msg)[1]


@pytest.mark.parametrize(
    ("kind", "mode", "after"),
    [
        (PushBatch, PUSH, False),
        (PushBatch, PUSH, True),
        (PullRequest, PULL, False),
        (PullRequest, PULL, True),
    ],
)
def test_an_interrupted_sync_resumes_without_losing_or_repeating_a_change(
    net: SimNet, kind: type, mode: SyncMode, after: bool
) -> None:
    small = SyncOptions(batch_size=10)
    src, dst = with_store(net, "A", "B", options=small)
    put(src, **{f"k{i:02}": i for i in range(50)})
    initiator, peer = (src, "B") if mode is PUSH else (dst, "A")
    lost = DeadlineExceeded("reply lost") if after else Unavailable("link died")
    _fail_on(net, kind, 4, lost, after)  # the 4th batch: applied (reply lost) or never sent
    first = sync(initiator, peer, mode)
    assert first.code is SyncCode.PARTIAL and first.message.startswith(lost.code), first
    landed = 40 if after and kind is PushBatch else 30  # a lost ack: the batch is applied all the same
    assert len(live(dst)) == landed == len(dst.remote)
    net.before = net.after = None
    second = sync(initiator, peer, mode)
    assert second.code is SyncCode.OK
    assert live(dst) == live(src)
    keys = [c.key for _, _, c in dst.remote]
    assert len(keys) == len(set(keys)) == 50  # every change took effect exactly once
    assert dst.storage.changes_since(S, 0, 100)[-1].seq == 50  # no seq spent on a repeat


def test_batches_keep_to_the_smaller_side_of_both_limits(net: SimNet) -> None:
    a = with_store(net, "A", options=SyncOptions(batch_size=1000, batch_bytes=1000))[0]
    b = with_store(net, "B", options=SyncOptions(batch_size=3))[0]
    sizes: list[tuple[int, int]] = []

    def measure(src: str, dst: str, msg: Request) -> Request:
        if isinstance(msg, PushBatch) and msg.changes:
            sizes.append((len(msg.changes), sum(change_size(c) for c in msg.changes)))
        return msg

    net.before = measure
    put(a, **{f"k{i}": "v" * 300 for i in range(10)})
    assert sync(a, "B", PUSH) == SyncStatus(SyncCode.OK, "", pushed=10)
    assert all(n <= 3 and size <= 1000 for n, size in sizes) and sum(n for n, _ in sizes) == 10
    assert live(b) == live(a)

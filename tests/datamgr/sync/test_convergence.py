"""Convergence: random writes on three replicas, synced over a lossy, duplicating, reordering network
with partitions; after healing and syncing until quiet every replica holds the same rows, and each
row is the write the merge rule says must win. Then every tombstone is collectable and collecting
them changes nothing. (cr-sqlite's test_sync_prop.py and Yjs's random tests, over our simnet.)"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from simnet import Faults, Replica, SimNet
from sync_helpers import BOTH, DC, PULL, PUSH, SV, S

from datamgr.kv.storage import Change, StoreKind, Value
from datamgr.kv.sync_api import SyncCode

NAMES = ("A", "B", "C")
KEYS = (b"a", b"b", b"c", b"d")
Row = tuple[bytes | None, int, int, str]  # value bytes (None: tombstone), vtype, hlc, origin

replica = st.integers(0, 2)
op = st.one_of(
    st.tuples(st.just("put"), replica, st.sampled_from(KEYS), st.integers(0, 9)),
    st.tuples(st.just("delete"), replica, st.sampled_from(KEYS)),
    st.tuples(st.just("sync"), replica, st.integers(1, 2), st.sampled_from([PUSH, PULL, BOTH])),
    st.tuples(st.just("cut"), st.sampled_from([(("A",), ("B", "C")), (("A", "B"), ("C",)), ((), ())])),
    st.tuples(st.just("heal")),
    st.tuples(st.just("tick"), st.integers(0, 3)),
    st.tuples(st.just("late")),
)
faults = st.builds(
    Faults,
    drop=st.sampled_from([0.0, 0.1, 0.3]),
    drop_reply=st.sampled_from([0.0, 0.1, 0.3]),
    duplicate=st.sampled_from([0.0, 0.2]),
    hold=st.sampled_from([0.0, 0.1, 0.2]),
    late=st.sampled_from([0.0, 0.3]),
)


def row(c: Change) -> Row:
    if c.value is None:
        return None, 0, c.hlc, c.origin
    return c.value.encode(), int(c.value.vtype), c.hlc, c.origin


def rows(r: Replica) -> dict[tuple[str, bytes], Row]:
    return {(c.device, c.key): row(c) for c in r.storage.changes_since(S, 0, 10_000)}


def expected(kind: StoreKind, writes: list[Change]) -> dict[tuple[str, bytes], Row]:
    """The winner of every key: the highest (hlc, origin) of all writes ever made to it."""
    best: dict[tuple[str, bytes], Change] = {}
    for c in writes:
        slot = (c.device, c.key)
        if slot not in best or (c.hlc, c.origin) > (best[slot].hlc, best[slot].origin):
            best[slot] = c
    return {slot: row(c) for slot, c in best.items()}


async def full_round(reps: list[Replica]) -> bool:
    """Every ordered pair syncs, push and pull; True if all succeeded and nothing took effect."""
    heard = sum(len(r.remote) for r in reps)
    ok = True
    for a, b in itertools.permutations(reps, 2):
        status = (await a.engine.sync(S, [b.name], BOTH))[b.name]
        ok = ok and status.code is SyncCode.OK
    return ok and sum(len(r.remote) for r in reps) == heard


async def sync_until_quiet(net: SimNet, reps: list[Replica]) -> None:
    for _ in range(12):
        if await full_round(reps) and not net.held:
            return
    raise AssertionError(f"no quiet round after 12; held messages left: {len(net.held)}")


async def scenario(
    root: Path, kind: StoreKind, ops: list[tuple[object, ...]], f: Faults, seed: int, skews: tuple[int, ...]
) -> None:
    net = SimNet(root, seed, f)
    try:
        reps = [net.add(name, skew_ms=skew) for name, skew in zip(NAMES, skews, strict=True)]
        for r in reps:
            r.storage.create_store("com.example.notes", "notes", kind, 2)
        writes: list[Change] = []
        for o in ops:
            match o:
                case ("put", int(i), bytes(key), int(value)):
                    writes += reps[i].storage.write(S, [(key, Value.of(value))])
                case ("delete", int(i), bytes(key)):
                    writes += reps[i].storage.write(S, [], [key])
                case ("sync", int(i), int(step), mode):
                    await reps[i].engine.sync(S, [NAMES[(i + step) % 3]], mode)  # type: ignore[arg-type]
                case ("cut", groups):
                    net.partition(*groups)  # type: ignore[misc]
                case ("heal",):
                    net.heal()
                case ("tick", int(ms)):
                    net.time.advance(ms)
                case ("late",):
                    await net.deliver_held(1)
        net.heal()
        net.faults = Faults(late=0.5)  # no more losses; stale held-back messages keep arriving
        await sync_until_quiet(net, reps)

        want = expected(kind, writes)
        for r in reps:
            assert rows(r) == want, f"{r.name} differs from the merge rule's winners"

        for r in reps:  # every peer acked everything in the quiet round: all tombstones go
            r.storage.collect_tombstones(S, [n for n in NAMES if n != r.name])
        live = {slot: row for slot, row in want.items() if row[0] is not None}
        for r in reps:
            assert rows(r) == live
        assert await full_round(reps)  # nothing comes back from the dead
        for r in reps:
            assert rows(r) == live
    finally:
        net.close()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from([SV, DC]),
    ops=st.lists(op, min_size=1, max_size=30),
    f=faults,
    seed=st.integers(0, 2**32 - 1),
    skews=st.sampled_from([(0, 0, 0), (0, 700, -1500)]),  # equal clocks: equal stamps, origin decides
)
@example(  # the same stamp on two devices: only the origin orders them
    kind=SV, ops=[("put", 0, b"a", 1), ("put", 1, b"a", 2), ("sync", 0, 1, BOTH)], f=Faults(), seed=0,
    skews=(0, 0, 0),
)  # fmt: skip
@example(  # a delete and a put of one key on both sides of a partition, relayed through B
    kind=SV,
    ops=[("cut", (("A", "B"), ("B", "C"))), ("put", 0, b"a", 1), ("sync", 0, 1, BOTH), ("delete", 2, b"a"),
         ("put", 1, b"a", 3), ("sync", 1, 1, BOTH), ("tick", 2), ("delete", 0, b"a")],
    f=Faults(drop_reply=0.3, duplicate=0.2, hold=0.2, late=0.3), seed=3, skews=(0, 700, -1500),
)  # fmt: skip
def test_replicas_converge_to_the_merge_rules_winners(
    kind: StoreKind, ops: list[tuple[object, ...]], f: Faults, seed: int, skews: tuple[int, ...]
) -> None:
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(scenario(Path(root), kind, ops, f, seed, skews))

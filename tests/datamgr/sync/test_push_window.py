"""Push with more than one batch in flight (`SyncOptions.push_window`; the daemon sends 2): a batch
that overtakes the one before it is refused with a gap and goes again, and a lossy, reordering or
interrupted pipelined push still lands every change exactly once."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simnet import Faults, SimLink, SimNet
from sync_helpers import PUSH, S, live, put, run, sync, with_store
from test_convergence import expected, rows, sync_until_quiet

from datamgr.errors import DatamgrError, DeadlineExceeded, InvalidArgument
from datamgr.kv.storage import Change, Value
from datamgr.kv.sync_api import SyncCode, SyncStatus
from datamgr.sync.engine import SyncEngine, SyncOptions
from datamgr.sync.messages import PushBatch, Reply, Request

PIPELINED = SyncOptions(batch_size=5, push_window=2)


class FirstBatchLate:
    """A link that delivers the first PushBatch only once the next one has been answered."""

    def __init__(self, link: SimLink) -> None:
        self.link = link
        self.holding = False
        self.released = asyncio.Event()
        self.pushes: list[tuple[int, str]] = []  # (since_seq, "OK" or the error code), as answered

    async def request(self, msg: Request) -> Reply:
        if not isinstance(msg, PushBatch):
            return await self.link.request(msg)
        hold, self.holding = not self.holding, True
        if hold:
            await self.released.wait()
        try:
            reply = await self.link.request(msg)
        except DatamgrError as exc:
            self.pushes.append((msg.since_seq, exc.code))
            raise
        finally:
            if not hold:
                self.released.set()
        self.pushes.append((msg.since_seq, "OK"))
        return reply


def test_a_batch_that_overtakes_the_one_before_it_is_refused_and_sent_again(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")
    put(a, **{f"k{i:02}": i for i in range(23)})
    link = FirstBatchLate(SimLink(net, "A", "B"))
    engine = SyncEngine(a.storage, a.db, lambda peer: link, net.levels.get, PIPELINED)

    status = run(engine.sync(S, ["B"], PUSH))["B"]

    assert status.code is SyncCode.OK and status.pushed == 23, status
    assert link.pushes[:2] == [(5, "FAILED_PRECONDITION"), (0, "OK")]  # the second came first: a gap
    assert (5, "OK") in link.pushes
    assert live(b) == live(a)
    keys = [c.key for _, _, c in b.remote]
    assert len(keys) == len(set(keys)) == 23  # every change took effect exactly once
    assert b.storage.changes_since(S, 0, 100)[-1].seq == 23  # no seq spent on a refused batch


def test_an_interrupted_pipelined_push_resumes_without_losing_or_repeating_a_change(net: SimNet) -> None:
    a, b = with_store(net, "A", "B", options=SyncOptions(batch_size=10, push_window=2))
    put(a, **{f"k{i:02}": i for i in range(50)})
    pushes = [0]

    def lose_fourth_reply(src: str, dst: str, msg: Request, reply: Reply) -> Reply:
        if isinstance(msg, PushBatch):
            pushes[0] += 1
            if pushes[0] == 4:
                raise DeadlineExceeded("reply lost")
        return reply

    async def push_then_settle() -> SyncStatus:
        status = (await a.engine.sync(S, ["B"], PUSH))["B"]
        await asyncio.sleep(0)
        await b.db.write(lambda: None)  # what reached B's writer has committed, and B heard it
        return status

    net.after = lose_fourth_reply
    first = run(push_then_settle())
    assert first.code is SyncCode.PARTIAL and first.message.startswith("DEADLINE_EXCEEDED"), first
    landed = len(live(b))
    assert landed in (40, 50)  # the batch in flight behind the lost reply may land too...
    assert len(b.remote) == landed  # ...and then B's subscribers hear of it, though A gave up on it
    net.after = None
    second = sync(a, "B", PUSH)
    assert (first.pushed, second.code, second.pushed) == (30, SyncCode.OK, 50 - landed), second
    assert live(b) == live(a)
    keys = [c.key for _, _, c in b.remote]
    assert len(keys) == len(set(keys)) == 50
    assert b.storage.changes_since(S, 0, 100)[-1].seq == 50


def test_a_refusal_that_is_not_a_gap_ends_the_push(net: SimNet) -> None:
    a, b = with_store(net, "A", "B", options=PIPELINED)
    put(a, **{f"k{i:02}": i for i in range(20)})

    def refuse_the_second(src: str, dst: str, msg: Request) -> Request:
        if isinstance(msg, PushBatch) and msg.since_seq == 5:
            raise InvalidArgument("malformed on purpose")
        return msg

    net.before = refuse_the_second
    status = sync(a, "B", PUSH)
    assert status.code is SyncCode.PARTIAL and "malformed on purpose" in status.message, status
    assert len(live(b)) == 5 and a.storage.peer_state(S, "B").acked_seq == 5  # type: ignore[union-attr]


side_key_value = st.tuples(st.integers(0, 1), st.integers(0, 11), st.integers(0, 9) | st.none())
writes = st.lists(side_key_value, max_size=40)  # value None: a delete
faults = st.builds(
    Faults,
    drop=st.sampled_from([0.0, 0.2]),
    drop_reply=st.sampled_from([0.0, 0.2]),
    duplicate=st.sampled_from([0.0, 0.2]),
    hold=st.sampled_from([0.0, 0.2]),
    late=st.sampled_from([0.0, 0.3]),
)


async def _pipelined(root: Path, ops: list[tuple[int, int, int | None]], f: Faults, seed: int) -> None:
    net = SimNet(root, seed, f)
    try:
        reps = with_store(net, "A", "B", options=SyncOptions(batch_size=2, push_window=3))
        made: list[Change] = []
        for i, (side, key, value) in enumerate(ops):
            r, k = reps[side], f"k{key}".encode()
            puts, deletes = ([], [k]) if value is None else ([(k, Value.of(value))], [])
            made += r.storage.write(S, puts, deletes)
            if i % 7 == 6:
                await r.engine.sync(S, ["B" if side == 0 else "A"], PUSH)
        net.faults = Faults(late=0.5)
        await sync_until_quiet(net, reps)
        for r in reps:
            assert rows(r) == expected(reps[0].storage.get_store(S).kind, made)  # type: ignore[union-attr]
    finally:
        net.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=writes, f=faults, seed=st.integers(0, 2**32 - 1))
def test_pipelined_pushes_over_a_lossy_reordering_network_converge(
    ops: list[tuple[int, int, int | None]], f: Faults, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(_pipelined(Path(root), ops, f, seed))

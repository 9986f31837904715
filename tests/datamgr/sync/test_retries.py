"""Retries of automatic syncs that failed on the network: the pure bookkeeping (delays, modes, giving
up) and the scheduler over the simulated network, where a push that failed during a partition goes
through after the heal with no further write, and a peer that went offline is not retried."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from simnet import SimNet
from sync_helpers import S, live, put, with_store

from datamgr.kv.sync_api import SyncCode, SyncMode, SyncStatus
from datamgr.sync.retries import Retries, RetryPolicy, transient
from datamgr.sync.scheduler import AutoSync, SyncScheduler

PUSH, PULL, BOTH = SyncMode.PUSH_ONLY, SyncMode.PULL_ONLY, SyncMode.PUSH_PULL


def test_delays_double_up_to_the_cap_then_give_up() -> None:
    r = Retries(RetryPolicy(first_s=0.25, max_s=1.0, give_up_s=10))
    assert [r.failed(S, "B", PUSH, now) for now in (0, 1, 2, 3, 4)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert r.owed(S, "B") is PUSH
    assert r.failed(S, "B", PUSH, 10.0) is None  # failing for give_up_s: nothing owed any more
    assert r.owed(S, "B") is None
    assert r.failed(S, "B", PUSH, 11.0) == 0.25  # a new run starts from the beginning


def test_modes_add_up_and_a_success_settles_its_own_part() -> None:
    r = Retries(RetryPolicy())
    r.failed(S, "B", PUSH, 0)
    r.failed(S, "B", BOTH, 0)
    assert r.owed(S, "B") is BOTH
    r.settled(S, "B", PUSH)  # a later write's push went through: the pull is still owed
    assert r.owed(S, "B") is PULL
    r.settled(S, "B", PULL)
    assert r.owed(S, "B") is None
    r.failed(S, "B", PUSH, 0)
    r.failed(S, "C", PUSH, 0)
    r.settled(S, "B")  # offline: nothing owed to it, whatever the mode
    assert (r.owed(S, "B"), r.owed(S, "C")) == (None, PUSH)


def test_only_network_failures_are_transient() -> None:
    assert transient(SyncStatus(SyncCode.ERROR, "UNAVAILABLE: failed to connect to all addresses"))
    assert transient(SyncStatus(SyncCode.PARTIAL, "DEADLINE_EXCEEDED: Deadline Exceeded", pushed=3))
    assert not transient(SyncStatus(SyncCode.ERROR, "FAILED_PRECONDITION: store options differ"))
    assert not transient(SyncStatus(SyncCode.ERROR, "NOT_FOUND: no KV store x on device B"))
    assert not transient(SyncStatus(SyncCode.PARTIAL, "push skipped: B is SL1"))
    assert not transient(SyncStatus(SyncCode.OK))


@dataclass
class _Links:
    """What the scheduler asks of PeerLinks: the levels of trusted peers and who is reachable."""

    levels: dict[str, int]
    online: set[str]

    def level(self, device_id: str) -> int | None:
        return self.levels.get(device_id)

    def reachable(self) -> list[str]:
        return sorted(self.online)

    async def close(self) -> None:
        pass


FAST = AutoSync(enabled=True, coalesce_s=0.0, retry=RetryPolicy(first_s=0.01, max_s=0.02, give_up_s=5))


async def _until(check: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)


def _scheduler(net: SimNet, links: _Links) -> SyncScheduler:
    a = net["A"]
    loop = asyncio.get_running_loop()
    return SyncScheduler(a.engine, a.storage, a.db, None, links, FAST, loop)  # type: ignore[arg-type]


def test_a_push_that_failed_in_a_partition_goes_through_after_the_heal(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")

    async def main() -> None:
        links = _Links({"B": 4}, {"B"})
        scheduler = _scheduler(net, links)
        try:
            net.partition(["A"], ["B"])
            put(a, k="during")
            scheduler.written(S)
            await _until(lambda: net.stats.refused >= 3)  # the push and two retries, refused
            assert live(b) == {}
            net.heal()  # no write after this: only a retry can deliver it
            await _until(lambda: live(b) == {b"k": "during"})
        finally:
            await scheduler.close()

    asyncio.run(main())


def test_a_peer_that_went_offline_is_not_retried_and_close_cancels_retries(net: SimNet) -> None:
    a, b = with_store(net, "A", "B")

    async def main() -> None:
        links = _Links({"B": 4}, {"B"})
        scheduler = _scheduler(net, links)
        try:
            net.partition(["A"], ["B"])
            put(a, k="during")
            scheduler.written(S)
            await _until(lambda: net.stats.refused >= 1)
            links.online.clear()  # discovery: B is offline
            await asyncio.sleep(0.1)
            refused = net.stats.refused
            await asyncio.sleep(0.1)
            assert net.stats.refused == refused  # no more tries: B's next ONLINE catches up
            links.online.add("B")
            put(a, k="again")
            scheduler.written(S)
            await _until(lambda: net.stats.refused > refused)
        finally:
            await scheduler.close()
        stopped = net.stats.refused
        await asyncio.sleep(0.1)
        assert net.stats.refused == stopped  # the pending retry was cancelled
        assert live(b) == {}

    asyncio.run(main())

"""Per-app admission: concurrency slots, per-app FIFO queues, the global waiting bound, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from aicap.errors import ResourceExhausted
from aicap.limits import AppLimiter, Limits


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_an_app_queues_beyond_its_slots_and_is_refused_beyond_its_queue() -> None:
    async def main() -> None:
        lim = AppLimiter(Limits(max_concurrent=2, max_queued=1, max_waiting=10))
        await lim.acquire("a")
        await lim.acquire("a")
        third = asyncio.ensure_future(lim.acquire("a"))
        await settle()
        assert not third.done() and lim.queued("a") == 1 and lim.waiting == 1
        with pytest.raises(ResourceExhausted, match="max_queued_per_app=1"):
            await lim.acquire("a")
        await lim.acquire("b")  # another app is not held up by a's flood
        lim.release("a")
        await settle()
        assert third.done() and lim.running("a") == 2 and lim.waiting == 0
        assert lim.rejected["max_queued_per_app"] == 1

    asyncio.run(main())


def test_the_global_waiting_bound_refuses_with_its_name() -> None:
    async def main() -> None:
        lim = AppLimiter(Limits(max_concurrent=1, max_queued=5, max_waiting=2))
        for app in "abc":
            await lim.acquire(app)
        waiters = [asyncio.ensure_future(lim.acquire(app)) for app in "ab"]
        await settle()
        with pytest.raises(ResourceExhausted, match="max_waiting=2"):
            await lim.acquire("c")
        for app in "ab":
            lim.release(app)
        await asyncio.gather(*waiters)
        assert lim.waiting == 0

    asyncio.run(main())


def test_waiters_of_an_app_get_slots_in_arrival_order() -> None:
    async def main() -> None:
        lim = AppLimiter(Limits(max_concurrent=1, max_queued=10, max_waiting=10))
        order: list[int] = []

        async def req(i: int) -> None:
            async with lim.slot("a"):
                order.append(i)
                await asyncio.sleep(0)

        await asyncio.gather(*(req(i) for i in range(6)))
        assert order == list(range(6))
        assert lim.running("a") == 0 and lim.waiting == 0

    asyncio.run(main())


def test_a_cancelled_waiter_leaves_the_queue_and_a_granted_one_passes_its_slot_on() -> None:
    async def main() -> None:
        lim = AppLimiter(Limits(max_concurrent=1, max_queued=10, max_waiting=10))
        await lim.acquire("a")
        w1 = asyncio.ensure_future(lim.acquire("a"))
        w2 = asyncio.ensure_future(lim.acquire("a"))
        await settle()
        w1.cancel()
        await settle()
        assert lim.queued("a") == 1 and lim.waiting == 1
        lim.release("a")  # granted to w2 ...
        w2.cancel()  # ... which is cancelled before it runs: the slot is released, not leaked
        await settle()
        assert lim.running("a") == 0 and lim.queued("a") == 0 and lim.waiting == 0
        await lim.acquire("a")
        assert lim.running("a") == 1

    asyncio.run(main())


def test_accounting_returns_to_zero_after_any_mix_of_finish_and_cancel() -> None:
    async def main() -> None:
        lim = AppLimiter(Limits(max_concurrent=2, max_queued=3, max_waiting=4))

        async def req(app: str, hold: float) -> None:
            async with lim.slot(app):
                await asyncio.sleep(hold)

        tasks = [asyncio.ensure_future(req("ab"[i % 2], 0.001 * (i % 3))) for i in range(20)]
        await settle()
        for t in tasks[::3]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert any(isinstance(r, ResourceExhausted) for r in results)
        assert lim.waiting == 0 and lim.running("a") == 0 and lim.running("b") == 0
        assert not lim._queues and not lim._running

    asyncio.run(main())

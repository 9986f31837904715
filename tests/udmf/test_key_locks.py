"""Consuming reads of one key take turns: the next waits for the one before it, other keys do not wait,
and a key's lock is gone once nobody holds or waits for it."""

from __future__ import annotations

import asyncio

from udmf._once import KeyLocks


def test_readers_of_one_key_take_turns_and_others_do_not_wait() -> None:
    async def run() -> list[str]:
        locks, order = KeyLocks(), list[str]()
        first_in = asyncio.Event()

        async def reader(name: str, key: str, hold: float) -> None:
            async with locks.hold(key):
                order.append(f"{name} in")
                first_in.set()
                await asyncio.sleep(hold)
                order.append(f"{name} out")

        first = asyncio.ensure_future(reader("first", "k", 0.05))
        await first_in.wait()
        await asyncio.gather(reader("second", "k", 0), reader("elsewhere", "j", 0), first)
        assert len(locks) == 0
        return order

    order = asyncio.run(run())
    assert order.index("elsewhere out") < order.index("first out")  # another key does not wait
    assert order.index("first out") < order.index("second in")


def test_a_cancelled_reader_lets_the_next_one_in() -> None:
    async def run() -> bool:
        locks = KeyLocks()
        holding = asyncio.Event()

        async def stuck() -> None:
            async with locks.hold("k"):
                holding.set()
                await asyncio.sleep(60)

        task = asyncio.ensure_future(stuck())
        await holding.wait()
        task.cancel()
        async with asyncio.timeout(1), locks.hold("k"):
            pass
        return len(locks) == 0

    assert asyncio.run(run())

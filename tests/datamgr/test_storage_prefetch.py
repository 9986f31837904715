"""`storage.prefetched`: pages fetched on reader threads, and a consumer that leaves mid-fetch."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from datamgr.storage import prefetched


class Cursor:
    """A cursor whose second page takes a while, as a slow statement's does, and that records how it
    was closed: a generator still running on one thread cannot be closed from another."""

    def __init__(self) -> None:
        self.in_second = threading.Event()
        self.stopped = threading.Event()
        self.pages = self._pages()

    def _pages(self) -> Iterator[list[int]]:
        yield [1]
        self.in_second.set()
        self.stopped.wait(2.0)  # an interrupted statement ends soon after stop()
        time.sleep(0.05)  # ... but not at once: its thread still has Python to run
        yield [2]
        yield [3]

    def fetch(self) -> list[int] | None:
        return next(self.pages, None)


def test_every_page_arrives_in_order_then_it_ends() -> None:
    pool = ThreadPoolExecutor(2)
    cursor = Cursor()
    cursor.stopped.set()  # no stop needed: the slow page is only slow

    async def main() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        read = lambda fn: loop.run_in_executor(pool, fn)  # noqa: E731
        async with contextlib.aclosing(prefetched(read, cursor.fetch, lambda: None)) as pages:
            return [p async for p in pages]

    assert asyncio.run(main()) == [[1], [2], [3]]
    pool.shutdown()


def test_a_consumer_cancelled_mid_fetch_waits_for_the_fetch_before_the_cursor_closes() -> None:
    pool = ThreadPoolExecutor(2)
    cursor = Cursor()
    got: list[list[int]] = []

    async def consume(read: object) -> None:
        async with contextlib.aclosing(prefetched(read, cursor.fetch, cursor.stopped.set)) as pages:  # type: ignore[arg-type]
            async for page in pages:
                got.append(page)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        read = lambda fn: loop.run_in_executor(pool, fn)  # noqa: E731
        task = asyncio.ensure_future(consume(read))
        await loop.run_in_executor(None, cursor.in_second.wait, 2.0)
        task.cancel()  # lands while the consumer awaits the second page, fetched on a thread
        await asyncio.gather(task, return_exceptions=True)
        assert cursor.stopped.is_set()  # told to stop the statement
        # the fetch has left its thread: the cursor closes on another (ValueError: generator already
        # executing, when the cancellation cancelled the fetch's future and went on)
        await loop.run_in_executor(pool, cursor.pages.close)

    asyncio.run(main())
    assert got == [[1]]
    pool.shutdown()


def test_a_consumer_that_closes_between_pages_stops_the_fetch_in_flight() -> None:
    pool = ThreadPoolExecutor(2)
    cursor = Cursor()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        read = lambda fn: loop.run_in_executor(pool, fn)  # noqa: E731
        async with contextlib.aclosing(prefetched(read, cursor.fetch, cursor.stopped.set)) as pages:
            assert await anext(pages) == [1]  # the second page is being fetched now
        assert cursor.stopped.is_set()
        await loop.run_in_executor(pool, cursor.pages.close)

    asyncio.run(main())
    pool.shutdown()


def test_a_fetch_that_fails_raises_to_the_consumer() -> None:
    pool = ThreadPoolExecutor(1)

    def fetch() -> list[int] | None:
        raise TimeoutError("the statement's budget ran out")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        read = lambda fn: loop.run_in_executor(pool, fn)  # noqa: E731
        async with contextlib.aclosing(prefetched(read, fetch, lambda: None)) as pages:
            async for _ in pages:
                pass

    with pytest.raises(TimeoutError, match="budget"):
        asyncio.run(main())
    pool.shutdown()

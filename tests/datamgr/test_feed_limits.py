"""The change feed's bounds and checks, without a daemon: byte caps per subscriber and per app (the
overflowing subscriber is closed and its queue freed at once), a caught-up subscriber always takes the
next event, and a subscription's check runs per delivered event and on `recheck`."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest

from datamgr.changefeed import Change, Feed, Subscription
from datamgr.errors import PermissionDenied, ResourceExhausted

URI = "datashare:///com.a/main/t"
OTHER = "datashare:///com.a/main/u"
KIB = 1024


def change(n_bytes: int, uri: str = URI) -> Change:
    return Change("INSERT", uri, ({"blob": b"x" * n_bytes},))


def run(test: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await test(asyncio.get_running_loop())

    asyncio.run(main())


async def dispatched() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_events_are_sized_by_their_values() -> None:
    row = {"a": b"12345", "b": "abc", "c": 7, "d": None}
    assert Change("INSERT", URI, (row, row)).nbytes() == 2 * (64 + 5 + 3 + 8 + 8)


def test_a_subscriber_over_its_byte_cap_is_closed_and_its_queue_freed() -> None:
    async def test(loop: asyncio.AbstractEventLoop) -> None:
        feed: Feed[Change] = Feed(loop, 8, 1000, max_bytes=100 * KIB, section="kv")
        slow, reader = feed.subscribe("com.b", URI), feed.subscribe("com.c", URI)
        for _ in range(3):
            feed.publish(URI, [change(30 * KIB)])
            await dispatched()
            assert (await reader.next()) is not None
        assert slow.queue.qsize() == 3 and slow.nbytes > 90 * KIB
        feed.publish(URI, [change(30 * KIB)])  # the fourth: 120 KiB queued, over 100 KiB
        await dispatched()
        assert slow.ended and slow.queue.qsize() == 1 and slow.nbytes == 0  # just the end marker
        assert dict(feed._app_bytes) == {"com.c": reader.nbytes}
        with pytest.raises(ResourceExhausted, match=r"kv\.subscriber_bytes"):
            await slow.next()
        assert not reader.ended and (await reader.next()) is not None
        assert feed._by_key[URI] == {reader}

    run(test)


def test_the_app_cap_counts_all_of_an_apps_subscriptions_and_reading_frees_it() -> None:
    async def test(loop: asyncio.AbstractEventLoop) -> None:
        feed: Feed[Change] = Feed(loop, 8, 1000, max_bytes=1 << 30, max_app_bytes=200 * KIB)
        a, b = feed.subscribe("com.b", URI), feed.subscribe("com.b", OTHER)
        feed.publish(URI, [change(60 * KIB), change(60 * KIB)])
        feed.publish(OTHER, [change(60 * KIB)])
        await dispatched()
        assert not a.ended and not b.ended
        assert (await a.next()) is not None  # reading gives its bytes back to the app
        feed.publish(OTHER, [change(60 * KIB)])
        await dispatched()
        assert not b.ended
        feed.publish(OTHER, [change(60 * KIB)])  # a: 60, b: 180 KiB
        await dispatched()
        assert b.ended and not a.ended
        with pytest.raises(ResourceExhausted, match=r"datashare\.app_subscriber_bytes"):
            await b.next()
        assert feed._app_bytes["com.b"] == a.nbytes

    run(test)


def test_a_caught_up_subscriber_takes_an_event_larger_than_its_cap() -> None:
    async def test(loop: asyncio.AbstractEventLoop) -> None:
        feed: Feed[Change] = Feed(loop, 8, 1000, max_bytes=64 * KIB, max_app_bytes=64 * KIB)
        sub = feed.subscribe("com.b", URI)
        for _ in range(3):
            feed.publish(URI, [change(500 * KIB)])
            await dispatched()
            got = await sub.next()
            assert got is not None and len(got.rows[0]["blob"]) == 500 * KIB
        feed.publish(URI, [change(500 * KIB), change(1)])  # behind by one large event: closed
        await dispatched()
        assert sub.ended

    run(test)


def test_the_count_cap_still_applies() -> None:
    async def test(loop: asyncio.AbstractEventLoop) -> None:
        feed: Feed[Change] = Feed(loop, 8, 16)
        sub = feed.subscribe("com.b", URI)
        feed.publish(URI, [change(1) for _ in range(17)])
        await dispatched()
        with pytest.raises(ResourceExhausted, match=r"datashare\.subscriber_queue"):
            await sub.next()

    run(test)


def test_the_check_runs_before_each_delivery_and_on_recheck() -> None:
    async def test(loop: asyncio.AbstractEventLoop) -> None:
        allowed = {"com.b": True, "com.c": True}

        def check_of(app: str) -> Callable[[], None]:
            def check() -> None:
                if not allowed[app]:
                    raise PermissionDenied(f"{app} lost READ")

            return check

        ledger: defaultdict[str, int] = defaultdict(int)
        feed: Feed[Change] = Feed(loop, 8, 1000, ledger=ledger)
        b: Subscription[Change] = feed.subscribe("com.b", URI, check_of("com.b"))
        c: Subscription[Change] = feed.subscribe("com.c", URI, check_of("com.c"))
        feed.publish(URI, [change(10)])
        await dispatched()
        allowed["com.b"] = False  # revoked after the commit, before the delivery: not delivered
        with pytest.raises(PermissionDenied):
            await b.next()
        assert (await c.next()) is not None
        allowed["com.c"] = False
        assert feed.recheck("com.b") == 0 and feed.recheck("com.c") == 1  # no event needed
        with pytest.raises(PermissionDenied):
            await c.next()
        assert not feed.has_subscribers(URI) and not ledger

    run(test)

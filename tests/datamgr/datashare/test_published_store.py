"""PublishedStore on a real database, no daemon: the version rule, per-item errors, feed batches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from datamgr.changefeed import Feed
from datamgr.datashare import published as p
from datamgr.datashare.published import OperationResult, PublishedBatch, PublishedItem, PublishedStore
from datamgr.storage import create_engine

WEATHER = "com.example.weather"
TODAY = f"datashareproxy://{WEATHER}/today"
WEEK = f"datashareproxy://{WEATHER}/week"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    else:
        eng = create_engine(request.getfixturevalue("postgres_url"))
    yield eng
    p.metadata.drop_all(eng)  # the PostgreSQL database is shared by the session
    eng.dispose()


@pytest.fixture
def feed() -> Iterator[Feed[PublishedBatch]]:
    """A feed nobody listens to (its loop never runs)."""
    loop = asyncio.new_event_loop()
    yield Feed(loop, max_per_app=8, queue_size=64)
    loop.close()


@pytest.fixture
def store(engine: sa.Engine, feed: Feed[PublishedBatch]) -> PublishedStore:
    return PublishedStore(engine, feed)


def test_text_and_bytes_round_trip_with_their_types(store: PublishedStore) -> None:
    items = [
        PublishedItem(WEEK, b"\x00\xffraw", "7"),
        PublishedItem(TODAY, "sunny", "1"),
        PublishedItem(TODAY, "", "2"),
        PublishedItem(f"datashareproxy://{WEATHER}/empty", b""),
    ]
    assert store.publish(WEATHER, items, 0) == [OperationResult(i.key, p.OK) for i in items]
    got = store.get(WEATHER)
    assert got == sorted(items, key=lambda i: (i.key, i.subscriber_id))
    assert [type(i.data) for i in got] == [bytes, str, str, bytes]
    assert store.get("com.example.other") == []


def test_an_older_version_does_not_overwrite_a_newer_one(store: PublishedStore) -> None:
    assert store.publish(WEATHER, [PublishedItem(TODAY, "v5")], 5)[0].ok
    (older,) = store.publish(WEATHER, [PublishedItem(TODAY, "v3")], 3)
    assert older == OperationResult(TODAY, p.VERSION_NOT_NEWER, "version 3 is older than stored version 5")
    assert store.get(WEATHER) == [PublishedItem(TODAY, "v5")]

    assert store.publish(WEATHER, [PublishedItem(TODAY, "v5 again")], 5)[0].ok  # equal overwrites
    assert store.get(WEATHER) == [PublishedItem(TODAY, "v5 again")]
    assert store.publish(WEATHER, [PublishedItem(TODAY, b"v7")], 7)[0].ok
    (stale,) = store.publish(WEATHER, [PublishedItem(TODAY, "v6")], 6)  # the stored version is now 7
    assert stale.result == p.VERSION_NOT_NEWER
    assert "older than stored version 7" in stale.message
    assert store.get(WEATHER) == [PublishedItem(TODAY, b"v7")]


def test_versions_are_kept_per_key_and_subscriber_id(store: PublishedStore) -> None:
    assert store.publish(WEATHER, [PublishedItem(TODAY, "a", "1")], 9)[0].ok
    results = store.publish(WEATHER, [PublishedItem(TODAY, "b", "2"), PublishedItem(WEEK, "c", "1")], 1)
    assert [r.result for r in results] == [p.OK, p.OK]
    assert store.get(WEATHER) == [
        PublishedItem(TODAY, "a", "1"),
        PublishedItem(TODAY, "b", "2"),
        PublishedItem(WEEK, "c", "1"),
    ]


def test_each_item_fails_on_its_own_and_the_others_apply(store: PublishedStore) -> None:
    items = [
        PublishedItem(TODAY, "ok"),
        PublishedItem("datashare:///com.example.weather/main/t", "wrong scheme"),
        PublishedItem("datashareproxy://com.example.weather/", "no path"),
        PublishedItem("datashareproxy://com.example.news/today", "someone else's"),
        PublishedItem(WEEK, None, "1"),  # type: ignore[arg-type]  # what the servicer passes for no data
        PublishedItem(WEEK, "long id", "x" * (p.MAX_SUBSCRIBER_ID + 1)),
        PublishedItem(WEEK, "ok too", "x" * p.MAX_SUBSCRIBER_ID),
    ]
    results = store.publish(WEATHER, items, 0)
    assert [r.key for r in results] == [i.key for i in items]
    assert [r.result for r in results] == [
        p.OK,
        p.URI_INVALID,
        p.URI_INVALID,
        p.PERMISSION_DENIED,
        p.INVALID_ITEM,
        p.INVALID_ITEM,
        p.OK,
    ]
    assert "datashareproxy://{bundle}/{path}" in results[1].message
    assert results[3].message == (
        "datashareproxy://com.example.news/today names the data of com.example.news; "
        "com.example.weather publishes only its own"
    )
    assert "has no data" in results[4].message
    assert all(r.message == "" for r in results if r.ok)
    longest = "x" * p.MAX_SUBSCRIBER_ID
    assert store.get(WEATHER) == [PublishedItem(TODAY, "ok"), PublishedItem(WEEK, "ok too", longest)]
    assert store.get("com.example.news") == []


def test_feed_gets_one_numbered_batch_of_the_stored_items_per_publish(engine: sa.Engine) -> None:
    async def scenario() -> list[PublishedBatch]:
        feed: Feed[PublishedBatch] = Feed(asyncio.get_running_loop(), max_per_app=8, queue_size=64)
        store = PublishedStore(engine, feed)
        sub = feed.subscribe("com.example.watch", WEATHER)
        store.publish(WEATHER, [PublishedItem(TODAY, "1"), PublishedItem("bad", "x")], 0)
        store.publish(WEATHER, [PublishedItem(TODAY, "old")], -1)  # stores nothing: no batch
        store.publish(WEATHER, [PublishedItem(WEEK, b"2", "s"), PublishedItem(TODAY, "3")], 0)
        got = [await asyncio.wait_for(sub.next(), 5) for _ in range(2)]
        await asyncio.sleep(0)
        assert sub.queue.empty()
        return [b for b in got if b is not None]

    batches = asyncio.run(scenario())
    assert batches == [
        PublishedBatch(1, WEATHER, (PublishedItem(TODAY, "1"),)),
        PublishedBatch(2, WEATHER, (PublishedItem(WEEK, b"2", "s"), PublishedItem(TODAY, "3"))),
    ]


def test_snapshot_holds_the_asked_keys_and_the_last_batch_number(store: PublishedStore) -> None:
    assert store.snapshot({(TODAY, "")}) == (0, [])
    store.publish(WEATHER, [PublishedItem(TODAY, "a"), PublishedItem(TODAY, "b", "2")], 0)
    store.publish(WEATHER, [PublishedItem(WEEK, "c")], 0)
    assert store.snapshot({(TODAY, ""), (WEEK, ""), (TODAY, "9")}) == (
        2,
        [PublishedItem(TODAY, "a"), PublishedItem(WEEK, "c")],
    )
    assert store.snapshot({(TODAY, "2")}) == (2, [PublishedItem(TODAY, "b", "2")])


def test_data_survives_a_new_store_and_remove_deletes_one_bundle(
    engine: sa.Engine, feed: Feed[PublishedBatch]
) -> None:
    news, top = "com.example.news", "datashareproxy://com.example.news/top"
    PublishedStore(engine, feed).publish(WEATHER, [PublishedItem(TODAY, "kept")], 4)
    again = PublishedStore(engine, feed)
    again.publish(news, [PublishedItem(top, "headline")], 0)
    assert again.get(WEATHER) == [PublishedItem(TODAY, "kept")]
    assert again.publish(WEATHER, [PublishedItem(TODAY, "older")], 3)[0].result == p.VERSION_NOT_NEWER
    again.remove(WEATHER)
    assert again.get(WEATHER) == []
    assert again.get(news) == [PublishedItem(top, "headline")]

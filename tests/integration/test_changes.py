"""Change notification through a real daemon: every committed change in commit order, no rolled-back one."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import CONTACTS, PEOPLE_URI, READ, WRITE, Daemon, contacts_manifest

from datamgr.client import ChangeInfo, DataShareHelper, DataSharePredicates, Subscription
from datamgr.errors import DatamgrError

pytestmark = pytest.mark.integration
P = DataSharePredicates
GROUPS_URI = f"datashare:///{CONTACTS}/main/groups"
NOTES_URI = f"datashare:///{CONTACTS}/private/notes"
LIMIT = 2


def manifest() -> dict[str, Any]:
    m = contacts_manifest(read_permission=None, write_permission=None)
    main = m["stores"][0]
    main["read_permission"], main["write_permission"] = READ, WRITE
    main["tables"].append(
        {
            "name": "groups",
            "primary_key": "gid",
            "columns": [{"name": "gid", "type": "integer"}, {"name": "title", "type": "text"}],
        }
    )
    m["stores"].append(
        {
            "name": "private",
            "tables": [
                {"name": "notes", "primary_key": "id", "columns": [{"name": "id", "type": "integer"}]}
            ],
        }
    )
    return m


class Collector:
    """Iterates a subscription on a thread, so that tests can wait for changes with a timeout."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.changes: queue.Queue[ChangeInfo] = queue.Queue()
        self.error: DatamgrError | None = None
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for change in self.sub:
                self.changes.put(change)
        except DatamgrError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def take(self, n: int = 1, timeout: float = 10.0) -> list[ChangeInfo]:
        deadline = time.monotonic() + timeout
        return [self.changes.get(timeout=max(0.0, deadline - time.monotonic())) for _ in range(n)]

    def rows(self, n: int) -> list[dict[str, Any]]:
        """The next changes' rows until `n` rows have arrived (large changes come in chunks)."""
        rows: list[dict[str, Any]] = []
        while len(rows) < n:
            rows.extend(self.take()[0].values)
        return rows

    def close(self) -> None:
        self.sub.close()
        assert self.ended.wait(10), "the subscription did not end after close()"
        assert self.error is None, self.error


@dataclass
class Env:
    daemon: Daemon
    provider: str
    writer: str

    def app(self, bundle: str, *permissions: str) -> DataShareHelper:
        return self.daemon.helper(self.daemon.add_app(bundle, *permissions))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    daemon = Daemon(
        tmp_path_factory.mktemp("changes") / "data",
        env={"DATAMGR_DATASHARE__MAX_SUBSCRIPTIONS_PER_APP": str(LIMIT)},
    ).start()
    try:
        provider = daemon.add_app(CONTACTS)
        writer = daemon.add_app("com.example.writer", READ, WRITE)
        with daemon.helper(provider) as h:
            h.register_provider(manifest())
        yield Env(daemon, provider, writer)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


@pytest.fixture
def writer(env: Env) -> Iterator[DataShareHelper]:
    with env.daemon.helper(env.writer) as h:
        yield h


_count = iter(range(10**6))


@pytest.fixture
def listen(env: Env) -> Iterator[Any]:
    """`listen(uri)` subscribes a fresh app (holding READ) and returns a Collector; all closed afterwards."""
    opened: list[tuple[DataShareHelper, Collector]] = []

    def subscribe(uri: str = PEOPLE_URI) -> Collector:
        h = env.app(f"com.example.listener{next(_count)}", READ)
        collector = Collector(h.subscribe(uri))
        opened.append((h, collector))
        return collector

    yield subscribe
    for h, collector in opened:
        collector.close()
        h.close()


def test_insert_update_delete_arrive_as_change_info(listen: Any, writer: DataShareHelper) -> None:
    sub = listen()
    row = writer.insert(PEOPLE_URI, {"name": "Ada", "age": 36, "photo": b"\x01"})
    assert writer.update(PEOPLE_URI, P().equal_to("id", row), {"age": 37}) == 1
    assert writer.delete(PEOPLE_URI, P().equal_to("id", row)) == 1
    insert, update, delete = sub.take(3)
    assert (insert.type, update.type, delete.type) == ("INSERT", "UPDATE", "DELETE")
    assert {insert.uri, update.uri, delete.uri} == {PEOPLE_URI}
    full = {
        "id": row,
        "name": "Ada",
        "phone": None,
        "age": 36,
        "score": None,
        "starred": False,
        "photo": b"\x01",
    }
    assert insert.values == [full]
    assert update.values == [{**full, "age": 37}]
    assert delete.values == [{**full, "age": 37}]


def test_changes_of_many_rows_arrive_whole(listen: Any, writer: DataShareHelper) -> None:
    sub = listen()
    rows = [{"name": f"bulk {i}", "age": i} for i in range(1200)]
    assert writer.batch_insert(PEOPLE_URI, rows) == 1200
    inserted = sub.rows(1200)
    assert [(r["name"], r["age"]) for r in inserted] == [(r["name"], r["age"]) for r in rows]
    assert writer.update(PEOPLE_URI, P().like("name", "bulk %"), {"phone": "bulk"}) == 1200
    assert {r["phone"] for r in sub.rows(1200)} == {"bulk"}
    assert writer.delete(PEOPLE_URI, P().like("name", "bulk %")) == 1200
    assert len(sub.rows(1200)) == 1200
    assert sub.changes.empty()


def test_a_subscription_sees_only_its_uri(listen: Any, writer: DataShareHelper) -> None:
    people, groups = listen(PEOPLE_URI), listen(GROUPS_URI)
    writer.batch_update(
        {GROUPS_URI: [({"title": "none"}, P().equal_to("gid", -1))]}  # matches nothing: no change
    )
    gid = writer.insert(GROUPS_URI, {"title": "family"})
    person = writer.insert(PEOPLE_URI, {"name": "Grace"})
    result = writer.batch_update(
        {PEOPLE_URI: [({"age": 85}, P().equal_to("id", person))], GROUPS_URI: [({"title": "kin"}, None)]}
    )
    assert result[PEOPLE_URI] == [1]
    assert [(c.type, c.values[0]["gid"]) for c in groups.take(2)] == [("INSERT", gid), ("UPDATE", gid)]
    assert [(c.type, c.values[0]["id"]) for c in people.take(2)] == [("INSERT", person), ("UPDATE", person)]
    assert people.changes.empty()
    assert groups.changes.empty()


def test_concurrent_writers_are_seen_in_commit_order(env: Env, listen: Any) -> None:
    subs = [listen(), listen()]
    writers, per_writer = 6, 30
    committed: list[int] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with env.daemon.helper(env.writer) as h:
                for i in range(per_writer):
                    if i % 10 == 9:  # a batch of three now and then
                        h.batch_insert(PEOPLE_URI, [{"name": f"w{n}-{i}-{k}"} for k in range(3)])
                        continue
                    row = h.insert(PEOPLE_URI, {"name": f"w{n}-{i}"})
                    with lock:
                        committed.append(row)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    total = writers * (per_writer - 3) + writers * 3 * 3
    for sub in subs:
        seen = [r["id"] for r in sub.rows(total)]
        # Autoincrement ids are handed out by the single writer in commit order, so the feed must be sorted.
        assert seen == sorted(seen)
        assert len(set(seen)) == total
        assert set(committed) <= set(seen)


def test_a_change_is_never_announced_before_its_commit(
    env: Env, listen: Any, writer: DataShareHelper
) -> None:
    sub = listen()
    with env.daemon.helper(env.writer) as reader:
        for i in range(20):
            writer.insert(PEOPLE_URI, {"name": f"visible {i}"})
            (change,) = sub.take()
            with reader.query(PEOPLE_URI, P().equal_to("id", change.values[0]["id"]), ["name"]) as rs:
                assert [r["name"] for r in rs.rows()] == [f"visible {i}"]


def test_failed_writes_announce_nothing(listen: Any, writer: DataShareHelper) -> None:
    sub = listen()
    first = writer.insert(PEOPLE_URI, {"name": "first"})
    assert sub.take()[0].values[0]["id"] == first
    failing = [
        lambda: writer.batch_insert(PEOPLE_URI, [{"id": 10**9, "name": "a"}, {"id": 10**9, "name": "b"}]),
        lambda: writer.batch_insert(PEOPLE_URI, [{"name": "a"}, {"id": first, "name": "clash"}]),
        lambda: writer.insert(PEOPLE_URI, {"id": first, "name": "clash"}),
        lambda: writer.batch_update(
            {PEOPLE_URI: [({"phone": "x"}, None), ({"id": first}, P().not_equal_to("id", first))]}
        ),
        lambda: writer.insert(PEOPLE_URI, {"name": None}),
    ]
    for call in failing:
        with pytest.raises(DatamgrError):
            call()
    assert writer.update(PEOPLE_URI, P().equal_to("name", "nobody"), {"phone": "x"}) == 0
    assert writer.delete(PEOPLE_URI, P().equal_to("name", "nobody")) == 0
    marker = writer.insert(PEOPLE_URI, {"name": "marker"})
    (change,) = sub.take()
    assert (change.type, change.values[0]["id"]) == ("INSERT", marker)
    time.sleep(0.2)
    assert sub.changes.empty()


def test_subscribing_needs_read_permission(env: Env) -> None:
    with env.app("com.example.nosy") as h:
        with pytest.raises(DatamgrError) as info:
            h.subscribe(PEOPLE_URI)
        assert info.value.code == "PERMISSION_DENIED"
        assert READ in info.value.message
    with env.app("com.example.writeonly", WRITE) as h, pytest.raises(DatamgrError) as info:
        h.subscribe(PEOPLE_URI)
    assert info.value.code == "PERMISSION_DENIED"
    with env.app("com.example.strong", READ, WRITE) as h:
        with pytest.raises(DatamgrError) as info:
            h.subscribe(NOTES_URI)  # provider-only
        assert info.value.code == "PERMISSION_DENIED"
        with pytest.raises(DatamgrError) as info:
            h.subscribe(f"datashare:///{CONTACTS}/main/nothing")
        assert info.value.code == "NOT_FOUND"
    with env.daemon.helper(env.provider) as h:  # the provider itself may
        h.subscribe(NOTES_URI).close()


def subscribe_eventually(h: DataShareHelper, uri: str, timeout: float = 10.0) -> Subscription:
    """Subscribes, retrying while a just-closed subscription is still being released by the daemon."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return h.subscribe(uri)
        except DatamgrError as exc:
            if exc.code != "RESOURCE_EXHAUSTED" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_per_app_subscription_limit(env: Env, writer: DataShareHelper) -> None:
    with env.app("com.example.greedy", READ) as h:
        first, second = h.subscribe(PEOPLE_URI), h.subscribe(GROUPS_URI)
        with pytest.raises(DatamgrError) as info:
            h.subscribe(PEOPLE_URI)
        assert info.value.code == "RESOURCE_EXHAUSTED"
        assert str(LIMIT) in info.value.message
        with env.app("com.example.modest", READ) as other:  # the limit is per app
            other.subscribe(PEOPLE_URI).close()
        first.close()
        third = Collector(subscribe_eventually(h, PEOPLE_URI))
        second_collector = Collector(second)
        row = writer.insert(PEOPLE_URI, {"name": "after the limit"})
        assert third.take()[0].values[0]["id"] == row
        with pytest.raises(DatamgrError) as info:
            h.subscribe(PEOPLE_URI)
        assert info.value.code == "RESOURCE_EXHAUSTED"
        third.close()
        second_collector.close()

    # An app that goes away (its channel closes) frees its subscriptions.
    token = env.daemon.add_app("com.example.vanishing", READ)
    gone = env.daemon.helper(token)
    gone.subscribe(PEOPLE_URI)
    gone.subscribe(GROUPS_URI)
    gone.close()
    with env.daemon.helper(token) as h:
        subscribe_eventually(h, PEOPLE_URI).close()


def test_async_subscription(env: Env, writer: DataShareHelper) -> None:
    token = env.daemon.add_app("com.example.async.listener", READ, WRITE)

    async def main() -> None:
        async with env.daemon.async_helper(token) as h:
            sub = await h.subscribe(PEOPLE_URI)
            try:
                row = await h.insert(PEOPLE_URI, {"name": "async"})
                change = await asyncio.wait_for(sub.next(), 10)
                assert (change.type, change.uri, change.values[0]["id"]) == ("INSERT", PEOPLE_URI, row)
                await asyncio.to_thread(writer.update, PEOPLE_URI, P().equal_to("id", row), {"age": 1})
                await h.delete(PEOPLE_URI, P().equal_to("id", row))
                seen = []
                async with asyncio.timeout(10):
                    async for change in sub:
                        seen.append((change.type, change.values[0]["id"]))
                        if len(seen) == 2:
                            break
                assert seen == [("UPDATE", row), ("DELETE", row)]
            finally:
                sub.close()
            with pytest.raises(DatamgrError) as info:
                await h.subscribe(NOTES_URI)
            assert info.value.code == "PERMISSION_DENIED"

    asyncio.run(main())


def test_sigterm_ends_subscriptions_cleanly(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", env={"DATAMGR_SHUTDOWN_GRACE_S": "30"}).start()
    try:
        provider = daemon.add_app(CONTACTS)
        with daemon.helper(provider) as h:
            h.register_provider(contacts_manifest())
            subs = [Collector(h.subscribe(PEOPLE_URI)) for _ in range(3)]
            h.insert(PEOPLE_URI, {"name": "before"})
            for sub in subs:
                assert sub.take()[0].type == "INSERT"
            started = time.monotonic()
            assert daemon.stop() == 0
            # The daemon ends each stream itself, so it need not wait out the shutdown grace (30 s here).
            assert time.monotonic() - started < 15
            for sub in subs:
                assert sub.ended.wait(10)
                assert sub.error is None  # the stream ended with OK: iteration simply stops
                assert sub.changes.empty()
    finally:
        daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log
    assert "stopped" in log

"""One app cannot make other apps' calls wait (issue 10, point 2), against the real daemon.

The writer is one thread and the readers a few: an app that loops the costliest Delete the limits
allow, floods 1 MiB writes or keeps every reader busy must not put other apps' calls behind its own.
The daemon finds an Update's or Delete's rows on a reader (the writer then changes them by primary key),
serves the writer's queue fairly between apps, and lets one app hold only half the readers. These
tests count what finished first; they time nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from harness import Daemon

from datamgr.client import DataShareHelper, DataSharePredicates
from datamgr.errors import DatamgrError

EVIL = "com.evil.hog"
EVIL_URI = f"datashare:///{EVIL}/main/blobs"
NOTES = "com.example.notes"
NOTES_URI = f"datashare:///{NOTES}/main/notes"
RACE_URI = f"datashare:///{NOTES}/main/race"
ROWS = 48
BODY = "a" * 800_000
# within the pattern limits, matching nothing: ~0.25 s per row and pattern, far past the budget
PATTERNS = ["%" + "a" * 126 + "b", "%" + "a" * 125 + "bb"]
BUDGET_MS = 10_000  # long, so that each attack call outlasts whatever the other app does meanwhile
PAD = "a" * 1500
SLOW = "%" + "a" * 40 + "b"  # `unlike` it over PAD: true for every row, and it takes a while


def manifest() -> dict[str, object]:
    def table(name: str, *extra: str) -> dict[str, object]:
        columns = [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}]
        columns += [{"name": c, "type": "text", "nullable": True} for c in extra]
        return {"name": name, "primary_key": "id", "columns": columns}

    return {"bundle": NOTES, "stores": [{"name": "main", "tables": [table("notes"), table("race", "mark")]}]}


@dataclass
class Env:
    daemon: Daemon
    evil: str
    notes: str

    def helper(self, token: str) -> DataShareHelper:
        return self.daemon.helper(token)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    daemon = Daemon(
        tmp_path_factory.mktemp("fair") / "data",
        env={"DATAMGR_AI__ENABLED": "false", "DATAMGR_DATASHARE__MAX_STATEMENT_MS": str(BUDGET_MS)},
    ).start()
    try:
        evil, notes = daemon.add_app(EVIL), daemon.add_app(NOTES)
        columns = [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}]
        tables = [{"name": "blobs", "primary_key": "id", "columns": columns}]
        with daemon.helper(evil) as h:
            h.register_provider({"bundle": EVIL, "stores": [{"name": "main", "tables": tables}]})
            for _ in range(ROWS):
                h.insert(EVIL_URI, {"body": BODY})
        with daemon.helper(notes) as h:
            h.register_provider(manifest())
        yield Env(daemon, evil, notes)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


def worst() -> DataSharePredicates:
    p = DataSharePredicates()
    for i, pattern in enumerate(PATTERNS):
        if i:
            p.or_()
        p.like("body", pattern)
    return p


class Hostile:
    """`threads` loops of `call(helper)` by the hostile app; `first` is set once any call returned."""

    def __init__(self, env: Env, call: Any, threads: int = 1) -> None:
        self.first = threading.Event()
        self.stop = threading.Event()
        self.outcomes: list[str] = []
        self._threads = [threading.Thread(target=self._loop, args=(env, call)) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _loop(self, env: Env, call: Any) -> None:
        with env.helper(env.evil) as h:
            while not self.stop.is_set():
                try:
                    call(h)
                    self.outcomes.append("OK")
                except DatamgrError as exc:
                    self.outcomes.append(exc.code)
                self.first.set()

    def end(self) -> list[str]:
        self.stop.set()
        for t in self._threads:
            t.join(120)
        return self.outcomes


def evil_rows(env: Env) -> int:
    with env.helper(env.evil) as h, h.query(EVIL_URI, columns=["id"]) as rs:
        return rs.row_count


def test_inserts_pass_an_app_looping_the_worst_delete(env: Env) -> None:
    """Each attack call runs its predicate on a reader (or till the budget stops it there): the
    writer stays free, so 20 inserts of another app all finish before the first attack call does.
    Before, the predicate held the writer and the first insert waited for the whole attack call."""
    hostile = Hostile(env, lambda h: h.delete(EVIL_URI, worst()))
    try:
        time.sleep(1.0)  # its first call has started
        with env.helper(env.notes) as h:
            for i in range(20):
                assert h.insert(NOTES_URI, {"body": f"note {i}"}) > 0
            assert not hostile.first.is_set(), "the attack's first call returned before the inserts"
    finally:
        outcomes = hostile.end()
    assert outcomes
    assert set(outcomes) <= {"DEADLINE_EXCEEDED", "OK"}
    assert evil_rows(env) == ROWS


def test_another_apps_query_finds_a_reader(env: Env) -> None:
    """Four long queries of one app hold at most half of the four readers; another app's query runs
    beside them. Before, they held all four and the other query waited for one to end."""

    def query(h: DataShareHelper) -> None:
        with h.query(EVIL_URI, worst(), columns=["id"]) as rs:
            rs.row_count  # noqa: B018 - reads the whole result

    hostile = Hostile(env, query, threads=4)
    try:
        time.sleep(1.0)  # the four have started
        with env.helper(env.notes) as h, h.query(NOTES_URI, columns=["id"]) as rs:
            rs.row_count  # noqa: B018
        assert not hostile.first.is_set(), "an attacking query returned before the other app's query"
    finally:
        outcomes = hostile.end()
    assert set(outcomes) <= {"DEADLINE_EXCEEDED", "OK"}


def test_a_single_insert_does_not_wait_for_a_flood(env: Env) -> None:
    """64 concurrent batch inserts of one app (decoded, checked and written on the writer thread) queue
    for the writer; another app's insert, sent once the flood is under way, goes ahead of most of them
    (the writer serves the app that used it least). Before, it waited behind every batch queued before
    it. (A flood of 1 MiB KV puts is bound by the event loop receiving the bytes, not by the writer:
    a read waits as long as a write then.)"""
    rows = [{"body": f"row {i}"} for i in range(2000)]
    done: list[int] = []
    lock = threading.Lock()
    with env.helper(env.evil) as flooder:

        def batch(i: int) -> None:
            flooder.batch_insert(EVIL_URI, rows)
            with lock:
                done.append(i)

        with ThreadPoolExecutor(64) as pool:
            futures = [pool.submit(batch, i) for i in range(64)]
            deadline = time.monotonic() + 60
            while not done and time.monotonic() < deadline:
                time.sleep(0.001)
            assert done, "no batch of the flood finished"
            with env.helper(env.notes) as h:
                assert h.insert(NOTES_URI, {"body": "urgent"}) > 0
            with lock:
                before = len(done)
            for f in futures:
                f.result()
        flooder.delete(EVIL_URI, DataSharePredicates().greater_than("id", ROWS))
    assert before < 32, f"{before} of the 64 batches finished before the other app's single insert"


# ---- exact results while the table changes under a costly Update or Delete ----


class Feed:
    """The changes of one table, collected on a thread."""

    def __init__(self, h: DataShareHelper, uri: str) -> None:
        self.sub = h.subscribe(uri)
        self.changes: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for change in self.sub:
                self.changes.put(change)
        except DatamgrError:
            pass

    def rows(self, kind: str, n: int) -> list[dict[str, Any]]:
        """The next `n` rows of `kind` changes (others, and the racing updates' rows, are skipped)."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            change = self.changes.get(timeout=60)
            if change.type == kind:
                out += [r for r in change.values if kind != "UPDATE" or r["mark"] is not None]
        assert len(out) == n, f"{len(out)} rows in the {kind} changes, the call counted {n}"
        return out


def seq(row: dict[str, Any]) -> int:
    """The order the row was inserted in (ids are not: SQLite may give a deleted top id again)."""
    return int(row["body"].split()[1])


class Race:
    """Rows inserted one by one, matching ("hit") and not ("miss") in turn, and every tenth a change
    of a row that does not match (which makes rows found before it stale)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.hits: list[int] = []  # the matching rows, in commit order
        self.misses: list[int] = []
        self._miss_ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        with env.helper(env.notes) as h:
            for i in range(300):
                self.insert(h, i)

    def insert(self, h: DataShareHelper, i: int) -> None:
        tag = "hit" if i % 2 else "miss"
        row_id = h.insert(RACE_URI, {"body": f"{tag} {i:07d} {PAD}"})
        (self.hits if tag == "hit" else self.misses).append(i)
        if tag == "miss":
            self._miss_ids.append(row_id)

    def _run(self) -> None:
        with self.env.helper(self.env.notes) as h:
            i = 300
            while not self._stop.is_set():
                self.insert(h, i)
                if i % 10 == 0:
                    h.update(
                        RACE_URI, DataSharePredicates().equal_to("id", self._miss_ids[-1]), {"mark": None}
                    )
                i += 1
                time.sleep(0.002 * (i % 7))  # bursts and pauses: some finds race, some do not

    def start(self) -> None:
        self._thread.start()

    def end(self) -> None:
        self._stop.set()
        self._thread.join(60)


def serial(name: str, rounds: list[set[int]], hits: list[int]) -> None:
    """Each round wrote matching rows only, none twice, and none while skipping an older one."""
    done: set[int] = set()
    for written in rounds:
        assert written <= set(hits)
        assert not written & done, f"a {name} wrote a row an earlier one had written"
        cutoff = max(written, default=-1)
        missed = [i for i in hits if i <= cutoff and i not in done and i not in written]
        assert not missed, f"a {name} skipped matching rows {missed[:5]} older than one it wrote"
        done |= written


def test_update_and_delete_racing_inserts_are_exact(env: Env) -> None:
    """While rows go into the table one by one (and other rows change now and then), each Update and
    Delete with a costly predicate writes exactly the matching rows that were there at one moment of
    the call: every earlier matching row and no later one, as their change feed says too; rows that
    do not match are never touched."""
    race = Race(env)
    hits, misses = race.hits, race.misses

    def costly() -> DataSharePredicates:
        return DataSharePredicates().unlike("body", SLOW).like("body", "hit%")

    with env.helper(env.notes) as h:
        feed = Feed(h, RACE_URI)
        race.start()
        updated: list[set[int]] = []
        deleted: list[set[int]] = []
        try:
            for r in range(6):
                count = h.update(RACE_URI, costly().is_null("mark"), {"mark": f"r{r}"})
                rows = feed.rows("UPDATE", count)
                assert {row["mark"] for row in rows} <= {f"r{r}"}
                updated.append({seq(row) for row in rows})
            for _ in range(6):
                count = h.delete(RACE_URI, costly())
                deleted.append({seq(row) for row in feed.rows("DELETE", count)})
        finally:
            race.end()
        with h.query(RACE_URI, columns=["body", "mark"]) as rs:
            left = {seq(row): row["mark"] for row in rs.rows()}
        feed.sub.close()

    assert all(i in left for i in misses), "a row that does not match was deleted"
    assert all(left[i] is None for i in misses), "a row that does not match was updated"
    serial("update", updated, hits)
    serial("delete", deleted, hits)
    gone = set().union(*deleted)
    assert not gone & set(left), "a deleted row is still there"
    assert set(hits) == gone | (set(hits) & set(left)), "a matching row vanished without a DELETE change"
    for r, written in enumerate(updated):
        assert all(left.get(i, f"r{r}") == f"r{r}" for i in written), "an updated row lost its mark"

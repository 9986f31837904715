"""Acknowledged writes survive kill -9 of the daemon, and a batch is all or nothing across a crash.

Writer threads hammer the real daemon with single inserts and batch inserts, each remembering what
was acknowledged (the call returned) and what was merely attempted. The daemon is then killed with
SIGKILL mid-load, restarted on the same data directory, and the table is checked: every acknowledged
row is there exactly once, every batch present is complete, nothing appears that was never sent. Three
kill cycles run on one data directory, which accumulates, killing after different amounts of load.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import Daemon

from datamgr.errors import DatamgrError
from datamgr.values import Cell

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

BUNDLE = "com.example.durable"
URI = f"datashare:///{BUNDLE}/main/log"
READ = "com.example.permission.READ_LOG"
WRITE = "com.example.permission.WRITE_LOG"
MANIFEST = {
    "bundle": BUNDLE,
    "read_permission": READ,
    "write_permission": WRITE,
    "stores": [
        {
            "name": "main",
            "tables": [
                {
                    "name": "log",
                    "primary_key": "id",
                    "columns": [
                        {"name": "id", "type": "integer"},
                        {"name": "writer", "type": "text", "nullable": False},
                        {"name": "seq", "type": "integer", "nullable": False},
                        {"name": "batch", "type": "text"},
                        {"name": "payload", "type": "text"},
                    ],
                }
            ],
        }
    ],
}

SINGLE_WRITERS = 2
BATCH_WRITERS = 2
BATCH_ROWS = 50
# Load before each kill (seconds): different moments in the daemon's life on the same data directory.
LOAD_S = (1.5, 0.5, 1.0)
# Bounds: a thread stops after this many calls even if the kill has not come yet ...
MAX_OPS = 20_000
# ... and the kill waits (up to MAX_LOAD_S) until at least this much was acknowledged, so a slow
# machine still gets a meaningful cycle instead of a flaky one.
MIN_ACKED_SINGLES = 50
MIN_ACKED_BATCHES = 5
MAX_LOAD_S = 15.0
JOIN_TIMEOUT_S = 15.0
PAYLOAD = "x" * 64


@dataclass
class Writer:
    """One writer thread's record: what it sent, what was acknowledged, and how it ended."""

    name: str
    batch: bool
    attempted: list[int] = field(default_factory=list)  # seqs (single) or batch numbers (batch)
    acked: list[int] = field(default_factory=list)
    failure: DatamgrError | None = None
    failed_at: float | None = None
    unexpected: BaseException | None = None

    def batch_id(self, n: int) -> str:
        return f"{self.name}-b{n}"

    def run(self, daemon: Daemon, token: str, stop: threading.Event) -> None:
        try:
            with daemon.helper(token) as h:
                for n in range(MAX_OPS):
                    if stop.is_set():
                        return
                    self.attempted.append(n)
                    try:
                        if self.batch:
                            rows: list[dict[str, Cell]] = [
                                {
                                    "writer": self.name,
                                    "seq": n * BATCH_ROWS + k,
                                    "batch": self.batch_id(n),
                                    "payload": PAYLOAD,
                                }
                                for k in range(BATCH_ROWS)
                            ]
                            assert h.batch_insert(URI, rows) == BATCH_ROWS
                        else:
                            h.insert(URI, {"writer": self.name, "seq": n, "payload": PAYLOAD})
                    except DatamgrError as exc:  # the daemon is gone: this write is unacknowledged
                        self.failure, self.failed_at = exc, time.monotonic()
                        return
                    self.acked.append(n)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.unexpected = exc


def _acked_totals(writers: list[Writer]) -> tuple[int, int]:
    singles = sum(len(w.acked) for w in writers if not w.batch)
    batches = sum(len(w.acked) for w in writers if w.batch)
    return singles, batches


def _load_and_kill(daemon: Daemon, token: str, cycle: int, load_s: float) -> list[Writer]:
    """Runs the writers for about `load_s`, kills the daemon with SIGKILL and joins them."""
    writers = [Writer(f"c{cycle}-single{i}", batch=False) for i in range(SINGLE_WRITERS)]
    writers += [Writer(f"c{cycle}-batch{i}", batch=True) for i in range(BATCH_WRITERS)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=w.run, args=(daemon, token, stop), name=w.name, daemon=True) for w in writers
    ]
    for t in threads:
        t.start()
    try:
        start = time.monotonic()
        while True:
            time.sleep(0.05)
            elapsed = time.monotonic() - start
            singles, batches = _acked_totals(writers)
            enough = singles >= MIN_ACKED_SINGLES and batches >= MIN_ACKED_BATCHES
            if (
                (elapsed >= load_s and enough)
                or elapsed >= MAX_LOAD_S
                or not any(t.is_alive() for t in threads)
            ):
                break
        killed_at = time.monotonic()
        daemon.kill9()
    finally:
        stop.set()  # threads still running (e.g. a kill that failed) end at their next call
        for t in threads:
            t.join(JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a writer thread hung after the kill"
    for w in writers:
        assert w.unexpected is None, f"{w.name} crashed: {w.unexpected!r}"
        if w.failure is not None:
            # No write fails while the daemon is up; after the kill the client sees the daemon gone.
            assert w.failed_at is not None and w.failed_at >= killed_at, (
                f"{w.name} failed early: {w.failure!r}"
            )
            assert w.failure.code in {"UNAVAILABLE", "UNKNOWN", "CANCELLED", "INTERNAL"}, repr(w.failure)
    return writers


def _read_table(daemon: Daemon, token: str) -> list[tuple[str, int, str | None]]:
    with daemon.helper(token) as h, h.query(URI, columns=["writer", "seq", "batch"], page_rows=5000) as rs:
        return [(r["writer"], r["seq"], r["batch"]) for r in rs.rows()]


def _check(rows: list[tuple[str, int, str | None]], history: list[Writer]) -> int:
    """Asserts the table against what the writers sent; returns how many unacknowledged writes committed."""
    counts = Counter((writer, seq) for writer, seq, _ in rows)
    duplicates = [key for key, c in counts.items() if c > 1]
    assert not duplicates, f"duplicate (writer, seq): {duplicates[:10]}"

    singles = {w.name: w for w in history if not w.batch}
    sent_batches = {w.batch_id(n): (w, n) for w in history if w.batch for n in w.attempted}
    present_singles: dict[str, set[int]] = defaultdict(set)
    present_batches: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for writer, seq, batch in rows:
        if batch is None:
            assert writer in singles, f"a single row from an unknown writer: {(writer, seq)}"
            present_singles[writer].add(seq)
        else:
            assert batch in sent_batches, f"a row of batch {batch!r}, which was never sent: {(writer, seq)}"
            present_batches[batch].append((writer, seq))

    # All or nothing: every batch in the table is there whole, acknowledged or not.
    for batch, found in present_batches.items():
        w, n = sent_batches[batch]
        expected = [(w.name, seq) for seq in range(n * BATCH_ROWS, (n + 1) * BATCH_ROWS)]
        assert sorted(found) == expected, f"batch {batch} torn: {len(found)} of {BATCH_ROWS} rows"

    committed_unacked = 0
    for w in history:
        acked = set(w.acked)
        if w.batch:
            lost = [w.batch_id(n) for n in w.acked if w.batch_id(n) not in present_batches]
            assert not lost, f"{len(lost)} acknowledged batches of {w.name} lost, e.g. {lost[:10]}"
            committed_unacked += sum(w.batch_id(n) in present_batches for n in set(w.attempted) - acked)
        else:
            present = present_singles[w.name]
            lost_seqs = sorted(acked - present)
            assert not lost_seqs, (
                f"{len(lost_seqs)} acknowledged inserts of {w.name} lost, e.g. {lost_seqs[:10]}"
            )
            phantom = sorted(present - set(w.attempted))
            assert not phantom, f"rows of {w.name} that were never sent: {phantom[:10]}"
            committed_unacked += len(present - acked)
    return committed_unacked


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_acknowledged_writes_survive_kill9(tmp_path: Path, synchronous: str) -> None:
    daemon = Daemon(tmp_path / "data", env={"DATAMGR_SQLITE_SYNCHRONOUS": synchronous}).start()
    try:
        provider = daemon.add_app(BUNDLE)
        consumer = daemon.add_app("com.example.loader", READ, WRITE)
        with daemon.helper(provider) as h:
            h.register_provider(MANIFEST)

        history: list[Writer] = []
        report = []
        for cycle, load_s in enumerate(LOAD_S):
            writers = _load_and_kill(daemon, consumer, cycle, load_s)
            history += writers
            singles, batches = _acked_totals(writers)
            unacked = sum(len(w.attempted) - len(w.acked) for w in writers)
            report.append(
                f"cycle {cycle}: {singles} single + {batches} batch inserts acked, {unacked} in flight"
            )
            assert singles >= MIN_ACKED_SINGLES and batches >= MIN_ACKED_BATCHES, report[-1]

            daemon.start()  # same data directory: recovers the WAL
            rows = _read_table(daemon, consumer)
            committed_unacked = _check(rows, history)
            acked_rows = sum(len(w.acked) * (BATCH_ROWS if w.batch else 1) for w in history)
            assert len(rows) >= acked_rows
            report[-1] += f" ({committed_unacked} unacknowledged committed so far)"
        print(
            f"[{synchronous}] " + "; ".join(report) + f"; {len(rows)} rows in the table"
        )  # shown with -s / -rP
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None:
            daemon.kill9()

"""The daemon's database: one SQLAlchemy engine, one writer thread, a pool of reader threads.

All writes run on the single writer thread, so commits happen in one order and whatever a write does
after its commit (notifying subscribers) happens in that same order. Reads run on a small pool; with
SQLite in WAL mode they never wait for the writer. The event loop only awaits futures.

Both are shared fairly between tenants (the calling app, `datamgr.tenant`): the writer takes the next
job from the tenant that has used it least (`datamgr._fair`), so one app's flood or long writes wait
behind the others' instead of in front; and one tenant holds at most about half of the readers at a
time (it waits on the loop for a slot, holding no thread), so another's query always finds one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from datamgr import tenant
from datamgr._fair import FairQueue
from datamgr.budget import Watchdog
from datamgr.disk import as_resource_exhausted

T = TypeVar("T")
log = logging.getLogger("datamgr.storage")
_CHECKPOINT_EVERY_S = 0.2  # while writes come in, SQLite's WAL is copied back this often


def create_engine(url: str, sqlite_synchronous: str = "NORMAL") -> Engine:
    """An engine for `url`; SQLite files get WAL, the chosen sync level and a busy timeout."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={'FULL' if sqlite_synchronous == 'FULL' else 'NORMAL'}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


@dataclass(slots=True)
class _Write:
    loop: Any
    fut: Any
    fn: Callable[..., Any]
    args: tuple[Any, ...]


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():  # the caller went away; the write itself has committed or failed already
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


LONG_JOB_S = 0.005  # a job running this long is likely to run on (busy)


class Database:
    """An engine plus the threads that use it; `write` and `read` run a function off the loop."""

    def __init__(self, engine: Engine, read_threads: int = 4, read_threads_per_app: int = 0) -> None:
        self.engine = engine
        self._checkpoints = _Checkpoints(engine) if _is_sqlite_file(engine) else None
        # jobs arrive in one queue (cheap to put into from the loop) and wait in the fair queue, which
        # only the writer thread touches
        self._inbox: queue.SimpleQueue[tuple[str, _Write] | None] = queue.SimpleQueue()
        self._writes: FairQueue[_Write] = FairQueue()
        self._writer = threading.Thread(target=self._write_loop, name="db-writer", daemon=True)
        self._writer.start()
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="db-reader")
        # readers one tenant may hold at once (None: any number)
        share = read_threads_per_app or max(1, min(read_threads, os.cpu_count() or 1) // 2)
        self._tenant_readers = share if share < read_threads else None
        self._reading: dict[str, asyncio.Semaphore] = {}
        self._writer_conn: sa.Connection | None = None
        self._running: dict[int, float] = {}  # thread -> when its job started, while it runs (busy)
        self.watchdog = Watchdog()  # stops statements that outrun their budget (datamgr.budget)

    def writer_connection(self) -> sa.Connection:
        """The writer thread's own connection, kept open between writes (a pool checkout and its
        reset cost as much as a small insert). Only code running on the writer thread may use it."""
        conn = self._writer_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._writer_conn = self.engine.connect()
        return conn

    def busy(self, longer_than_s: float = LONG_JOB_S) -> int:
        """How many of the database's threads have run their job for `longer_than_s` now: CPU the
        host's other work (the model's inference threads) cannot count on. Short jobs end before it
        would matter."""
        now = time.perf_counter()
        return sum(now - t >= longer_than_s for t in list(self._running.values()))

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        me = threading.get_ident()
        self._running[me] = time.perf_counter()
        try:
            return fn(*args)
        finally:
            del self._running[me]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(*args)` on the writer thread, in the calling tenant's turn; `fn` opens and commits
        its own transaction.

        A plain queue and one thread-safe callback: half the hand-off cost of run_in_executor,
        which matters when the write itself takes a tenth of a millisecond."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._inbox.put((tenant.current(), _Write(loop, fut, fn, args)))
        return await fut

    def _write_loop(self) -> None:
        inbox, writes = self._inbox, self._writes
        closing = False
        while True:
            if not writes:  # wait for a job (once closing, what was queued before has run)
                item = None if closing else inbox.get()
                if item is None:
                    break
                writes.push(*item)
            while not inbox.empty():  # whatever else arrived meanwhile competes for the next turn
                item = inbox.get_nowait()
                if item is None:
                    closing = True
                else:
                    writes.push(*item)
            who, job = writes.pop()
            started = time.perf_counter()
            result, error = None, None
            try:
                result = self._run(job.fn, *job.args)
            except BaseException as exc:
                error = as_resource_exhausted(exc)  # a full disk is RESOURCE_EXHAUSTED, not a bug
            writes.charge(who, time.perf_counter() - started)
            if job.loop is not None and not job.loop.is_closed():
                job.loop.call_soon_threadsafe(_settle, job.fut, result, error)
            if self._checkpoints is not None:
                self._checkpoints.due()
        if self._writer_conn is not None:
            self._writer_conn.close()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(*args)` on a reader thread, once the calling tenant holds fewer than its share."""
        loop = asyncio.get_running_loop()
        if self._tenant_readers is None:
            return await loop.run_in_executor(self._readers, self._run, fn, *args)
        who = tenant.current()
        slots = self._reading.get(who)
        if slots is None:
            slots = self._reading[who] = asyncio.Semaphore(self._tenant_readers)
        async with slots:
            return await loop.run_in_executor(self._readers, self._run, fn, *args)

    def close(self) -> None:
        """Waits for queued writes to commit, then closes every connection."""
        self._inbox.put(None)
        self._writer.join()
        if self._checkpoints is not None:
            self._checkpoints.close()
        self._readers.shutdown(wait=True)
        self.watchdog.close()
        self.engine.dispose()


def _is_sqlite_file(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


class _Checkpoints:
    """SQLite's WAL checkpoints on a thread of their own. SQLite runs one (copying the WAL back into
    the database and syncing both) inside the commit that fills the WAL past 1000 pages: ten times
    the commit's own time, on the writer that every app waits for. Here each connection has automatic
    checkpoints off, and this thread runs a PASSIVE one (it waits for no writer or reader) shortly
    after writes, at most every _CHECKPOINT_EVERY_S."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._wake = threading.Event()
        self._closed = False

        @sa.event.listens_for(engine, "connect")
        def _manual(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def due(self) -> None:
        """A write committed (on the writer): the WAL has grown."""
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        conn: sa.Connection | None = None
        while True:
            self._wake.wait()
            self._wake.clear()  # before looking at _closed: a close after this wakes the next wait
            if self._closed:
                break
            time.sleep(_CHECKPOINT_EVERY_S)  # one checkpoint for the writes of a burst
            try:
                if conn is None:
                    conn = self._engine.connect()
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                conn.rollback()
            except Exception as exc:  # a full disk, say: the WAL keeps the data, the next try may do
                log.warning("WAL checkpoint failed: %s", exc)
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join()


async def prefetched(
    read: Callable[[Callable[[], T | None]], Awaitable[T | None]],
    fetch: Callable[[], T | None],
    stop: Callable[[], None],
) -> AsyncGenerator[T, None]:
    """What `fetch()` returns, until None, each call run by `read` (on a reader thread) while the
    previous result is on its way. A consumer that goes away, closed or cancelled, calls `stop()` (say,
    interrupts the statement) and waits here until the fetch in flight has left its thread: only then
    may the cursor it reads be closed, on whichever thread (a generator still running on one thread
    cannot be closed from another). Use it under `contextlib.aclosing`."""
    pending: asyncio.Future[T | None] | None = asyncio.ensure_future(read(fetch))
    try:
        while pending is not None:
            # shielded: cancelling the caller must not cancel the future of a thread that goes on
            got = await asyncio.shield(pending)
            pending = None
            if got is None:
                return
            pending = asyncio.ensure_future(read(fetch))
            yield got
    finally:
        if pending is not None:
            stop()
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: a fetch stopped for a consumer that left is no news

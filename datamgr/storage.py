"""The daemon's database: one SQLAlchemy engine, one writer thread, a pool of reader threads.

All writes run on the single writer thread, so commits happen in one order and whatever a write does
after its commit (notifying subscribers) happens in that same order. Reads run on a small pool; with
SQLite in WAL mode they never wait for the writer. The event loop only awaits futures.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from datamgr.budget import Watchdog
from datamgr.disk import as_resource_exhausted

T = TypeVar("T")


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


class Database:
    """An engine plus the threads that use it; `write` and `read` run a function off the loop."""

    def __init__(self, engine: Engine, read_threads: int = 4) -> None:
        self.engine = engine
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="db-writer", daemon=True)
        self._writer.start()
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="db-reader")
        self._writer_conn: sa.Connection | None = None
        self.watchdog = Watchdog()  # stops statements that outrun their budget (datamgr.budget)

    def writer_connection(self) -> sa.Connection:
        """The writer thread's own connection, kept open between writes (a pool checkout and its
        reset cost as much as a small insert). Only code running on the writer thread may use it."""
        conn = self._writer_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._writer_conn = self.engine.connect()
        return conn

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(*args)` on the writer thread; `fn` opens and commits its own transaction.

        A plain queue and one thread-safe callback: half the hand-off cost of run_in_executor,
        which matters when the write itself takes a tenth of a millisecond."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._writes.put(_Write(loop, fut, fn, args))
        return await fut

    def _write_loop(self) -> None:
        while (job := self._writes.get()) is not None:
            result, error = None, None
            try:
                result = job.fn(*job.args)
            except BaseException as exc:
                error = as_resource_exhausted(exc)  # a full disk is RESOURCE_EXHAUSTED, not a bug
            if job.loop is not None and not job.loop.is_closed():
                job.loop.call_soon_threadsafe(_settle, job.fut, result, error)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    def close(self) -> None:
        """Waits for queued writes to commit, then closes every connection."""
        if self._writer_conn is not None:
            self._writes.put(_Write(None, None, self._writer_conn.close, ()))
        self._writes.put(None)
        self._writer.join()
        self._readers.shutdown(wait=True)
        self.watchdog.close()
        self.engine.dispose()

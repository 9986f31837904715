"""Statement budgets: a call's statements stop when their time budget or the call's deadline passes,
or when the caller cancels, so that no call holds the writer (or a reader) for longer than that.

A `Budget` belongs to one call. `Watchdog.guard(conn, budget)` wraps the statements of one step (a
write's transaction, one page of a query): it starts the budget's clock, and on SQLite one watchdog
thread calls `sqlite3_interrupt` on the connection when the step's end passes (SQLite checks that flag
at every row, even inside a long LIKE scan, where a progress handler counting VM steps may never run);
on PostgreSQL the server stops it by `SET LOCAL statement_timeout`. An interrupted step raises the
budget's error (DeadlineExceeded or Cancelled) and its transaction rolls back.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from datamgr.errors import Cancelled, DatamgrError, DeadlineExceeded

_PG_QUERY_CANCELED = "57014"  # SQLSTATE of a statement stopped by statement_timeout or a cancel
# An interrupt reaches only a statement that is running; one that lands between two statements of a
# step is lost, so a stopped step is interrupted again this often until it ends.
_AGAIN_S = 0.02


class Budget:
    """One call's allowance: each guarded step may run `ms` milliseconds, never past the call's
    deadline (`timeout_s` from now, None: none); `Watchdog.cancel` stops it at once."""

    __slots__ = ("_cause", "_ends", "_interrupt", "cancelled", "deadline", "fired", "ms", "setting")

    def __init__(self, ms: int, setting: str, timeout_s: float | None = None) -> None:
        self.ms = ms
        self.setting = setting  # the setting `ms` comes from, named in the error
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.cancelled = False
        self.fired: str | None = None  # "budget" or "deadline" once a step was stopped for it
        self._ends = 0.0
        self._cause = "budget"
        self._interrupt: Callable[[], object] | None = None

    def _start(self) -> float:
        """Starts a step's clock: the monotonic time it must end by. Raises if it may not start."""
        if self.cancelled:
            raise self.error()
        now = time.monotonic()
        ends = now + self.ms / 1000
        self._cause = "budget"
        if self.deadline is not None and self.deadline <= ends:
            ends, self._cause = self.deadline, "deadline"
            if ends <= now:
                self.fired = "deadline"
                raise self.error()
        self._ends = ends
        return ends

    def error(self) -> DatamgrError:
        """What the caller is told when a step was stopped (or refused to start)."""
        if self.cancelled:
            return Cancelled("the call was cancelled: its statement was stopped and rolled back")
        if self.fired == "deadline":
            return DeadlineExceeded(
                "the call's deadline passed while its statement ran: it was stopped and rolled back"
            )
        return DeadlineExceeded(
            f"the statement ran longer than {self.setting} ({self.ms} ms): it was stopped and rolled back"
        )


def _stopped_by(budget: Budget, exc: Exception) -> bool:
    """Whether `exc` (SQLAlchemy's or the driver's own, from a raw cursor) is the database reporting
    that the budget stopped the statement."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if getattr(orig, "sqlstate", None) == _PG_QUERY_CANCELED:
        if budget.fired is None and not budget.cancelled:
            budget.fired = budget._cause  # the server's statement_timeout
        return True
    return (budget.fired is not None or budget.cancelled) and str(orig) == "interrupted"


class Watchdog:
    """One thread that interrupts SQLite statements whose step ran out of time; started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Budget, float]] = []  # (when, seq, budget, its step's end)
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextlib.contextmanager
    def guard(self, conn: sa.Connection, budget: Budget | None, *, first: bool = True) -> Iterator[None]:
        """Runs the enclosed statements on `conn` under `budget` (None: unbounded). On PostgreSQL the
        `first` step of a transaction sets its statement_timeout, which holds for each later one."""
        if budget is None:
            yield
            return
        ends = budget._start()
        interrupt = None
        if conn.dialect.name == "postgresql":
            if first:
                ms = max(1, int((ends - time.monotonic()) * 1000))
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
        else:
            interrupt = conn.connection.dbapi_connection.interrupt  # type: ignore[union-attr]
        self._arm(budget, ends, interrupt)
        try:
            yield
        except Exception as exc:
            if _stopped_by(budget, exc):
                raise budget.error() from None
            raise
        finally:
            if interrupt is not None:
                with self._cond:
                    budget._interrupt = None

    def _arm(self, budget: Budget, ends: float, interrupt: Callable[[], object] | None) -> None:
        if interrupt is None:
            return
        with self._cond:
            budget._interrupt = interrupt
            self._push(ends, budget)

    def _push(self, when: float, budget: Budget) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), budget, budget._ends))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
            self._thread.start()
        elif self._heap[0][2] is budget:  # it comes before whatever the thread waits for
            self._cond.notify()

    def cancel(self, budget: Budget) -> None:
        """The caller went away: its running step stops now, and no later step starts."""
        with self._cond:
            budget.cancelled = True
            if budget._interrupt is not None:
                budget._interrupt()
                self._push(time.monotonic() + _AGAIN_S, budget)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, budget, ends = heapq.heappop(self._heap)
                    # a step that ended, or a later step of the same budget, has moved on
                    if budget._interrupt is not None and budget._ends == ends:
                        budget.fired = budget.fired or budget._cause
                        budget._interrupt()
                        heapq.heappush(self._heap, (now + _AGAIN_S, next(self._seq), budget, ends))
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

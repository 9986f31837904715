"""Running a KV query within its budget: the store's entries stream from the database (a
transaction's pending writes over them), the query keeps its matches, and the whole of it stops when
kv.max_query_ms or the call's deadline passes, or the caller cancels.

The query is one step of a `QueryBudget`: `Watchdog.guard` interrupts its SQL (SQLite interrupt,
PostgreSQL statement_timeout) and `QueryBudget.check` stops the Python that evaluates it, which the
query calls every few entries and within long pattern matches.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

from datamgr.budget import Budget, Watchdog
from datamgr.errors import Cancelled, DatamgrError, DeadlineExceeded
from datamgr.kv._checks import value_size
from datamgr.kv.query import CompiledQuery
from datamgr.kv.storage import KvStorage, Value
from datamgr.kv.transactions import Pending

_CHECK_EVERY = 32  # entries `head` reads between two checks of its budget


class QueryBudget(Budget):
    """One KV query's allowance: `ms` (kv.max_query_ms), never past the call's deadline."""

    __slots__ = ()

    def check(self) -> None:
        """Raises once the running query passed its end, or its caller cancelled."""
        if self.cancelled:
            raise self.error()
        if time.monotonic() >= self._ends:
            self.fired = self.fired or self._cause
            raise self.error()

    def error(self) -> DatamgrError:
        if self.cancelled:
            return Cancelled("the call was cancelled: its query was stopped")
        if self.fired == "deadline":
            return DeadlineExceeded("the call's deadline passed while its query ran: it was stopped")
        return DeadlineExceeded(
            f"the query ran longer than {self.setting} ({self.ms} ms): it was stopped; "
            "narrow it (prefix_key, fewer or shorter patterns) or read fewer entries"
        )


def _overlay(
    entries: Iterable[tuple[bytes, Value]], pending: Pending[Value] | None
) -> Iterator[tuple[bytes, Any]]:
    """Stored (key, data) as a transaction sees them: its puts replace or add, its deletes remove."""
    if not pending:
        for key, value in entries:
            yield key, value.data
        return
    seen: set[bytes] = set()
    for key, value in entries:
        op = pending.get(key)
        if op is None:
            yield key, value.data
            continue
        seen.add(key)
        if op[0] is not None:
            yield key, op[0].data
    for key, (put, _) in pending.items():
        if put is not None and key not in seen:
            yield key, put.data


def select(
    storage: KvStorage,
    watchdog: Watchdog,
    budget: QueryBudget,
    store_id: str,
    query: CompiledQuery,
    device: str | None,
    pending: Pending[Value] | None,
) -> list[tuple[str, Any]]:
    """On a reader thread: the query's (key, data) rows, in its order, within `budget`."""
    with storage.engine.connect() as conn, watchdog.guard(conn, budget):
        stream = storage.stream(conn, store_id, query.prefix.encode(), device)
        with contextlib.closing(stream):
            entries = ((k.decode(errors="replace"), v) for k, v in _overlay(stream, pending))
            return query.select(entries, budget.check)


def head(
    storage: KvStorage,
    watchdog: Watchdog,
    budget: QueryBudget,
    store_id: str,
    prefix: str,
    device: str | None,
    limit: int,
    max_bytes: int,
) -> list[tuple[str, Any]]:
    """On a reader thread: the first `limit` (key, data) whose keys start with `prefix`, in key order,
    ending after the entry whose value brings the values to `max_bytes`, within `budget`: a bounded
    read of a store that has no index to search."""
    rows: list[tuple[str, Any]] = []
    total = 0
    with storage.engine.connect() as conn, watchdog.guard(conn, budget):
        stream = storage.stream(conn, store_id, prefix.encode(), device)
        with contextlib.closing(stream):
            for key, value in stream:
                if len(rows) % _CHECK_EVERY == 0:
                    budget.check()
                rows.append((key.decode(errors="replace"), value.data))
                total += value_size(value)
                if len(rows) >= limit or total >= max_bytes:
                    break
    return rows

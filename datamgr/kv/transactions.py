"""Open KV transactions: puts and deletes buffered in the daemon until Commit applies them in one write.

A transaction belongs to one app and one store. It holds at most one pending operation per key (the
last one wins), at most `max_entries` keys (the storage's batch limit, so that Commit is one write) and
`max_bytes` of keys and values. One idle longer than `idle_s` is rolled back: at its next use, or by
`expire()`, which the service calls periodically to free the memory. Runs on the event loop only.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from datamgr.errors import InvalidArgument, NotFound, ResourceExhausted, TooLarge

V = TypeVar("V")
_REMEMBER_EXPIRED = 1024


@dataclass(eq=False, slots=True)
class Transaction(Generic[V]):
    id: str
    app: str
    store_id: str
    touched: float
    # key -> (value, or None for a delete; bytes it takes), in the order of the last writes
    ops: dict[bytes, tuple[V | None, int]] = field(default_factory=dict)
    size: int = 0

    def puts(self) -> list[tuple[bytes, V]]:
        return [(k, v) for k, (v, _) in self.ops.items() if v is not None]

    def deletes(self) -> list[bytes]:
        return [k for k, (v, _) in self.ops.items() if v is None]

    def lookup(self, key: bytes) -> tuple[bool, V | None]:
        """(True, value or None if deleted here) when the transaction wrote `key`, else (False, None)."""
        op = self.ops.get(key)
        return (False, None) if op is None else (True, op[0])


Pending = dict[bytes, tuple[V | None, int]]


class Transactions(Generic[V]):
    """The open transactions of every app."""

    def __init__(
        self,
        idle_s: float,
        max_per_app: int,
        max_entries: int,
        max_bytes: int,
        value_size: Callable[[V], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle_s = idle_s
        self._max_per_app = max_per_app
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._value_size = value_size
        self._clock = clock
        self._open: dict[str, Transaction[V]] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def start(self, app: str, store_id: str) -> Transaction[V]:
        self.expire()
        held = sum(1 for tx in self._open.values() if tx.app == app)
        if held >= self._max_per_app:
            raise ResourceExhausted(
                f"{app} already has {held} open transactions, the limit; commit or roll back one first"
            )
        tx: Transaction[V] = Transaction(secrets.token_hex(16), app, store_id, self._clock())
        self._open[tx.id] = tx
        return tx

    def get(self, app: str, store_id: str, tx_id: str) -> Transaction[V]:
        """The open transaction, touched; NotFound when it is not open (or belongs to another app)."""
        tx = self._open.get(tx_id)
        if tx is not None and self._clock() - tx.touched > self._idle_s:
            self._forget(tx)
            tx = None
        if tx is None or tx.app != app:
            if tx_id in self._expired:
                raise NotFound(
                    f"transaction {tx_id} was rolled back: it was idle for more than {self._idle_s:g} s"
                )
            raise NotFound(f"no open transaction {tx_id!r} (committed, rolled back or never started)")
        if tx.store_id != store_id:
            raise InvalidArgument(f"transaction {tx_id} belongs to store {tx.store_id.split('/', 1)[-1]}")
        tx.touched = self._clock()
        return tx

    def stage(self, tx: Transaction[V], puts: Sequence[tuple[bytes, V]], deletes: Sequence[bytes]) -> None:
        """Adds writes to `tx`, all or none: over a limit, `tx` stays as it was."""
        new: dict[bytes, tuple[V | None, int]] = {}
        for key, value in puts:
            new[key] = (value, len(key) + self._value_size(value))
        for key in deletes:
            new[key] = (None, len(key))
        keys = len(tx.ops.keys() | new.keys())
        if keys > self._max_entries:
            raise TooLarge(f"a transaction may write at most {self._max_entries} keys, this one {keys}")
        size = tx.size + sum(s for _, s in new.values()) - sum(tx.ops[k][1] for k in new if k in tx.ops)
        if size > self._max_bytes:
            raise TooLarge(f"a transaction may hold at most {self._max_bytes} bytes, this one {size}")
        for key, op in new.items():
            tx.ops.pop(key, None)  # a rewritten key moves to the end: the order of the last writes
            tx.ops[key] = op
        tx.size = size

    def take(self, app: str, store_id: str, tx_id: str) -> Transaction[V]:
        """Ends the transaction and returns it (Commit applies it)."""
        tx = self.get(app, store_id, tx_id)
        del self._open[tx.id]
        return tx

    def drop_store(self, store_id: str, app: str | None = None) -> int:
        """Rolls back the transactions on a store (of one app, or of all); returns how many."""
        gone = [tx for tx in self._open.values() if tx.store_id == store_id and app in (None, tx.app)]
        for tx in gone:
            del self._open[tx.id]
        return len(gone)

    def expire(self) -> list[Transaction[V]]:
        """Rolls back every transaction idle longer than `idle_s`."""
        now = self._clock()
        gone = [tx for tx in self._open.values() if now - tx.touched > self._idle_s]
        for tx in gone:
            self._forget(tx)
        return gone

    def _forget(self, tx: Transaction[V]) -> None:
        del self._open[tx.id]
        self._expired[tx.id] = None
        while len(self._expired) > _REMEMBER_EXPIRED:
            self._expired.popitem(last=False)

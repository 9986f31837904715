"""The audit log of cross-device reads: every UDMF read served to a paired device and every one fetched
from a paired device, in the database, for the device owner to list (`datamgr devices audit`).

A paired device is trusted to be paired, not to say which app reads, so the log keeps what was said
(the bundle claimed) beside what is known (the device, by its certificate). The log is bounded: each
write deletes the entries beyond the newest `max_entries` and those older than `max_age_s`. `note`
hands an entry to the database writer without waiting (a read is never held up or failed by its log
entry: a failed write is logged); `recent` is read on the daemon's readers.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from datamgr.storage import Database

log = logging.getLogger("datamgr.sync.audit")

metadata = sa.MetaData()
peer_reads = sa.Table(
    "dm_peer_reads",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False, index=True),
    sa.Column("bundle", sa.String(128), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
)


class Direction(enum.Enum):
    SERVED = "served"  # a paired device read this device's data
    FETCHED = "fetched"  # an app here read a paired device's data


@dataclass(frozen=True, slots=True)
class PeerRead:
    direction: Direction
    device_id: str
    bundle: str  # served: what the peer claimed; fetched: the app here
    key: str
    bytes: int
    outcome: str  # "OK" or a gRPC status code name
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class AuditConfig:
    max_entries: int = 10_000
    max_age_s: float = 30 * 86_400.0


class PeerReadLog:
    """The bounded log: `note` (event loop), `record` (database writer), `recent` (any thread)."""

    def __init__(self, db: Database, config: AuditConfig) -> None:
        self._db, self._engine, self.config = db, db.engine, config
        self._pending: set[asyncio.Future[None]] = set()
        metadata.create_all(db.engine)

    def note(self, read: PeerRead) -> None:
        """Logs `read`, stamped now, on the database writer; returns at once (event loop only)."""
        task = asyncio.ensure_future(self._db.write(self.record, replace(read, at=read.at or time.time())))
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a cross-device read was not logged: %s", task.exception())

    async def drain(self) -> None:
        """Waits for the entries handed over so far to be written."""
        await asyncio.gather(*self._pending, return_exceptions=True)

    def record(self, read: PeerRead) -> None:
        """Adds `read` (stamped now unless it has a time) and drops what is past the bounds."""
        t = peer_reads
        at = read.at or time.time()
        with self._engine.begin() as conn:
            new_id = conn.execute(
                sa.insert(t).values(
                    at=at,
                    direction=read.direction.value,
                    device_id=read.device_id[:64],
                    bundle=read.bundle[:128],
                    key=read.key[:200],
                    bytes=read.bytes,
                    outcome=read.outcome[:32],
                )
            ).inserted_primary_key
            assert new_id is not None

            conn.execute(sa.delete(t).where(t.c.id <= new_id[0] - self.config.max_entries))
            conn.execute(sa.delete(t).where(t.c.at < at - self.config.max_age_s))

    def recent(self, device_id: str = "", limit: int = 100) -> list[PeerRead]:
        """The newest `limit` entries (of `device_id` only, if given), newest first."""
        t = peer_reads
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if device_id:
            query = query.where(t.c.device_id == device_id)
        with self._engine.connect() as conn:
            return [_read(r) for r in conn.execute(query)]


def _read(r: Any) -> PeerRead:
    return PeerRead(Direction(r.direction), r.device_id, r.bundle, r.key, r.bytes, r.outcome, r.at)

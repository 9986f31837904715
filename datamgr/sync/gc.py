"""Tombstone collection: a delete leaves a tombstone so that peers learn of it, and once every trusted
peer holds it nobody needs it any more.

Every `interval_s` (`sync.tombstone_gc_interval_s`) each store's tombstones at or below the lowest seq
that every trusted device acked are deleted (`KvStorage.collect_tombstones`), one store per job on the
database's writer thread. The trust list is read in that job too, so pairing and unpairing (writer
jobs as well) happen wholly before or after it.

Why a peer never misses a delete: a peer's acked seq moves only when it confirmed holding every one of
our changes up to it (its push ack, the since_seq of its pull, the received_seq of its handshake, all
for our current epoch), it never moves back, and seqs are never reused; so a tombstone at or below it
reached that peer, or lost there to a newer write. A trusted device that never synced a store acked
nothing of it (0): that store keeps its tombstones. One whose level may not hold the store's label
never gets any of it, so it is not waited for unless it acked some of the store once (its level was
higher then): what it holds may still need a delete. A rebuilt peer starts again from 0 with an empty
store, which needs no tombstone.

The trade-off (see `datamgr.kv.storage`): a replica that is not a trusted peer when a tombstone goes —
a device unpaired before it acked, or one that got the data through a third device — and still holds
an older value of the key can bring it back. With no trusted device at all, every tombstone goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from datamgr.device.trust import TrustStore
from datamgr.errors import DatamgrError
from datamgr.kv.storage import KvStorage
from datamgr.storage import Database

log = logging.getLogger("datamgr.sync")


class TombstoneCollector:
    """Collects the tombstones of every store of `storage` that every trusted device acked, every
    `interval_s` seconds once started (0: never)."""

    def __init__(self, storage: KvStorage, db: Database, trust: TrustStore, interval_s: float) -> None:
        self._storage, self._db, self._trust = storage, db, trust
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def peers(self) -> dict[str, int]:
        """The devices whose acks a collection may wait for, with their security levels: every
        trusted one (less, per store, one whose level may not hold it and that never acked any of it)."""
        return {d.device_id: d.security_level for d in sorted(self._trust.all(), key=lambda d: d.device_id)}

    def collect_store(self, store_id: str) -> int:
        """One store's collection (blocking; on the writer thread in the daemon); how many went."""
        levels = self.peers()
        return self._storage.collect_tombstones(store_id, levels, levels)

    async def collect(self) -> dict[str, int]:
        """One round over every store: the stores that lost tombstones, and how many each."""
        collected: dict[str, int] = {}
        for store in await self._db.read(self._storage.list_stores):
            try:
                if n := await self._db.write(self.collect_store, store.store_id):
                    collected[store.store_id] = n
            except DatamgrError as exc:  # deleted meanwhile, say: the next round sees the stores anew
                log.debug("tombstone collection of %s: %s", store.store_id, exc)
        return collected

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                collected = await self.collect()
            except Exception:  # a database failure: logged, and the next round tries again
                log.exception("tombstone collection failed")
                continue
            if collected:
                log.info("collected tombstones acked by every trusted peer: %s", collected)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

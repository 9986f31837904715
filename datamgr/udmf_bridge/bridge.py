"""UDMF's CROSS_DEVICE data rides the sync engine: the bridge between the UDMF store and the KV stores.

- **Descriptors.** The system KV store `ohos.distributeddata.udmf/records` (SINGLE_VERSION, S1 like
  OpenHarmony's UDMF runtime store, created at start on every device) holds one descriptor per
  UnifiedData that leaves the device (`udmf.access.leaves_device`: CROSS_DEVICE DATA_HUB or DRAG data,
  not OWN_PROCESS; `datamgr.udmf_bridge.records`): key = the UDMF key; value = its device,
  channel, writer, visibility, tag, extras, times, summary and, for DATA_HUB data up to
  `inline_bytes`, the data itself. The device holding the data writes the descriptor in the
  transaction of the UDMF write (`KvStorage.write_in`, through the `udmf.replica` hooks) and
  tombstones it in the transaction that deletes the data — deleted by its writer, consumed by a read
  here or on a paired device, expired, or no longer leaving. Only that device writes its keys, so
  last-writer-wins never has a conflict to settle. Each such commit tells the sync scheduler, whose
  automatic push takes it to the reachable paired devices (and a device coming online is caught up).
  Other data (IN_APP, CROSS_APP, OWN_PROCESS, the share channels) never gets a descriptor.
- **Remote rows.** On a paired device the mirror (`KvStorage.add_mirror`) turns every descriptor that
  took effect into a remote row of the UDMF store, and every tombstone into its deletion, inside the
  transaction applying the peer's batch; a descriptor it cannot use is skipped and logged, and one
  never replaces that device's own data. Apps there see remote rows by the usual rules: DATA_HUB data
  is listed and read (its summary at once); drag data is granted to a target by the system role
  there (GrantAccess, as for local data) and read once. Remote rows are read-only and expire at their
  holder's `expires_at`.
- **Reads from the holder.** A read that needs the data from its device — DATA_HUB data too large to
  carry, and every drag read — goes to `UdmfPeerService.FetchData` on the peer port (mutual
  TLS, paired devices only; `datamgr.udmf_bridge.peer`). The holder streams the data as a local read
  would (the same parts, chunks and limits) and consumes it in its per-key turn: the first consumer on
  any device wins, and every later read anywhere is NOT_FOUND, the tombstone syncing everywhere. An
  unreachable holder gives UNAVAILABLE and consumes nothing. The holder decides from its own records
  what it serves and that a drag's fetch consumes it, never from which app the peer says reads; both
  devices log each such read in the audit log (`datamgr.device.peer_reads`).
- **Start.** Descriptors of this device whose data is gone (expired or lazy drags dropped by the UDMF
  store's recovery, which runs before the bridge attaches) are tombstoned.

Known gaps: the descriptors of a device that never comes back stay in the store (their remote rows
expire); remote rows use the holder's clock for expiry (sync refuses skews over `sync.max_skew_ms`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from datamgr.errors import InvalidArgument
from datamgr.kv.storage import Change, KvStorage, StoreInfo, StoreKind, Value, VType
from datamgr.storage import Database
from datamgr.udmf_bridge.peer import PeerFetcher
from datamgr.udmf_bridge.records import (
    STORE_BUNDLE,
    STORE_ID,
    STORE_LABEL,
    STORE_NAME,
    carries_data,
    decode,
    encode,
)
from udmf.service import UdmfService
from udmf.store import DataRow, EntryRow

log = logging.getLogger("datamgr.sync.udmf")
_PAGE = 64  # descriptors read at a time at start


@dataclass(frozen=True, slots=True)
class UdmfSyncConfig:
    inline_bytes: int = 1024 * 1024  # DATA_HUB data up to this size syncs inside its descriptor


class UdmfBridge:
    """The `udmf.replica.Replication` of the UDMF service and the `Mirror` of the system store."""

    def __init__(
        self,
        config: UdmfSyncConfig,
        storage: KvStorage,
        udmf: UdmfService,
        db: Database,
        fetcher: PeerFetcher,
    ) -> None:
        self.config, self._storage, self._udmf, self._db = config, storage, udmf, db
        self._store = udmf.store
        self._fetcher = fetcher
        self.device_id = storage.device_id
        self._notify: Callable[[str], None] | None = None

    async def start(self, notify: Callable[[str], None]) -> None:
        """Creates the system store, tombstones this device's stale descriptors, then attaches: from
        now on UDMF writes keep descriptors and peers' descriptors become remote rows. `notify(store_id)`
        is the sync scheduler's `written`."""
        stale = await self._db.write(self._open)
        self._notify = notify
        self._storage.add_mirror(STORE_BUNDLE, self)
        self._udmf.replicate(self)
        if stale:
            log.info("udmf: %d descriptors of data gone while the daemon was down are deleted", stale)
            notify(STORE_ID)

    async def close(self) -> None:
        await self._fetcher.close()

    def _open(self) -> int:
        self._storage.create_store(STORE_BUNDLE, STORE_NAME, StoreKind.SINGLE_VERSION, STORE_LABEL)
        local = {row.key.encode() for row in self._store.cross_device()}
        stale: list[bytes] = []
        seq = 0
        while page := self._storage.changes_since(STORE_ID, seq, _PAGE):
            seq = page[-1].seq
            stale += [c.key for c in page if c.value is not None and c.origin == self.device_id]
        stale = [key for key in stale if key not in local]
        if stale:
            with self._storage.engine.begin() as conn:
                self._storage.write_in(conn, STORE_ID, [], stale)
        return len(stale)

    # ---- udmf.replica.Replication: this device's data (on the database writer) ----

    def wrote(self, conn: sa.Connection, row: DataRow, entries: Sequence[EntryRow]) -> None:
        carried = self._with_blobs(entries) if carries_data(row, self.config.inline_bytes) else None
        value = Value.of(encode(row, self.device_id, carried))
        self._storage.write_in(conn, STORE_ID, [(row.key.encode(), value)])

    def deleted(self, conn: sa.Connection, keys: Sequence[str]) -> None:
        self._storage.write_in(conn, STORE_ID, [], [key.encode() for key in keys])

    def after_commit(self) -> None:
        if self._notify is not None:
            self._notify(STORE_ID)

    def fetch(self, origin: str, key: str, reader: str) -> AsyncIterator[Any]:
        return self._fetcher.fetch(origin, key, reader)

    def _with_blobs(self, entries: Sequence[EntryRow]) -> list[EntryRow]:
        """The entries with their blob files read (small data: at most `inline_bytes`)."""
        path = self._store.blobs.path
        return [
            e if e.blob_file is None else replace(e, blob=(path / e.blob_file).read_bytes(), blob_file=None)
            for e in entries
        ]

    # ---- Mirror: peers' descriptors (inside the transaction applying their batch) ----

    def apply(self, conn: sa.Connection, info: StoreInfo, changes: list[Change]) -> None:
        for change in changes:
            try:
                self._apply(conn, change)
            except InvalidArgument as exc:
                log.warning("udmf: a descriptor from %s is skipped: %s", change.origin, exc.message)

    def _apply(self, conn: sa.Connection, change: Change) -> None:
        key = change.key.decode(errors="replace")
        if change.value is None:
            self._store.delete_remote(conn, key)  # this device's own data is never deleted so
            return
        if change.origin == self.device_id:
            return  # our own descriptor coming back (after a rebuilt store): nothing to mirror
        if change.value.vtype is not VType.BYTES:
            raise InvalidArgument(f"the descriptor of {key} is {change.value.vtype.name}, not bytes")
        data = change.value.data
        assert isinstance(data, bytes)
        row, entries = decode(change.key, data, change.origin)
        if not self._store.put_remote(conn, row, entries or []):
            raise InvalidArgument(f"{key} is this device's own data: {change.origin}'s does not replace it")

    def committed(self, info: StoreInfo, peer: str, changes: list[Change]) -> None:
        log.debug("udmf: %d descriptors from %s applied", len(changes), peer)

"""Distributed tables: DataShare tables whose rows sync with paired devices, on the KV sync engine.

A table declared `"distributed": true` has a mirror: a SINGLE_VERSION KV store of the system bundle
`ohos.distributeddata.datashare` (`tables.mirror_store_id`: the same id on every device, unseen by
apps), labelled with the table's security level, holding one entry per row — key the primary key,
value the whole row (`_rowcodec`). The KV engine syncs the mirror like any store: HLC stamps,
tombstones, watermarks, the device security rule, automatic pushes and catch-up when a peer comes online.

- Registration creates the mirror (on each device: the same app registers the same manifest there).
  A table that becomes distributed later gets its rows copied in the registering transaction.
- Local writes (`store.SilentStore`) put the mirror entries of the rows they leave, or delete those
  of the rows they delete, in the same transaction (`record`): an acknowledged write is never lost
  to sync, not even with kill -9. After the commit the sync scheduler hears that the mirror changed.
- Remote batches reach `apply` inside the transaction that applies them to the mirror and moves the
  peer's watermark: the winning rows are upserted into the table (columns this device does not
  declare are left out, those the peer did not send keep their value), deleted rows deleted. After the
  commit (`committed`) the changes go to the table's change feed, marked with the peer's device id.
- Conflicts are the KV store's: the higher (hlc, origin) wins, a row as a whole (its columns are not
  merged); the table follows its mirror, so every device keeps the same winner.
- What this device cannot use (an undecodable entry, a value that does not fit the declared column, a
  required column missing) is skipped and logged, never raised: raising would stop the peer's sync
  for good. The entry stays in the mirror, the table goes without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any, Protocol

import sqlalchemy as sa

from datamgr.changefeed import Change, Feed
from datamgr.datashare._rowcodec import MAX_KEY_BYTES, decode_key, decode_row, encode_key, encode_row, fit_row
from datamgr.datashare.manifest import Manifest
from datamgr.datashare.tables import MIRROR_BUNDLE, HostedTable, ProviderRegistry, mirror_store_id
from datamgr.datashare.targets import WriteCounts
from datamgr.errors import InvalidArgument, NotFound, TooLarge, Unavailable
from datamgr.kv.storage import MAX_VALUE_LENGTH, KvStorage, StoreInfo, StoreKind, Value, VType
from datamgr.kv.storage import Change as KvChange
from datamgr.kv.sync_api import SyncMode, SyncStatus
from datamgr.quota import Ledger
from datamgr.values import Cell

log = logging.getLogger("datamgr.datashare")
_CHUNK = 400  # primary keys per IN (...) list


class Syncer(Protocol):
    """What the mirrors need of the daemon's sync (`datamgr.sync.scheduler.SyncScheduler`)."""

    async def sync(self, store_id: str, devices: Sequence[str], mode: SyncMode) -> dict[str, SyncStatus]: ...

    def written(self, store_id: str) -> None: ...


class DistributedTables:
    """The mirrors of the distributed tables: KV storage's `Mirror` for their bundle, and what DataShare
    registration, writes and app removal call. The blocking methods run on the database writer thread."""

    def __init__(self, kv: KvStorage, providers: ProviderRegistry, feed: Feed[Change]) -> None:
        self._kv, self._providers, self._feed = kv, providers, feed
        self._sync: Syncer | None = None
        self._pending: list[Change] = []  # the feed events of the remote batch being applied
        self._applied: str | None = None  # the table the remote batch being applied writes
        self.counts = WriteCounts()  # every hosted table's committed writes (datashare.targets)
        self.usage: Ledger | None = None  # the providers' usage, measured again after a peer's rows
        kv.add_mirror(MIRROR_BUNDLE, self)

    def set_sync(self, sync: Syncer) -> None:
        """Connects the daemon's sync: manual syncs, and every local write is reported to it."""
        self._sync = sync

    # ---- registration and removal ----

    def register(self, manifest: Manifest) -> tuple[list[str], list[str]]:
        """`ProviderRegistry.register`, with the mirrors of the distributed tables: created first (so
        the registering transaction can fill them) and deleted again if the registration fails."""
        self._providers.check(manifest)
        created: list[str] = []
        try:
            for store in manifest.stores:
                for spec in store.tables:
                    if spec.distributed:
                        store_id = mirror_store_id(manifest.bundle, store.name, spec.name)
                        if self._kv.get_store(store_id) is None:
                            created.append(store_id)
                        name = store_id.partition("/")[2]
                        self._kv.create_store(MIRROR_BUNDLE, name, StoreKind.SINGLE_VERSION, spec.label)
            return self._providers.register(manifest, on_distributed=self._backfill)
        except BaseException:
            for store_id in created:
                self._kv.delete_store(store_id)
            raise

    def _backfill(self, conn: sa.Connection, hosted: HostedTable) -> None:
        """An existing table became distributed: its rows go into the mirror."""
        result = conn.execution_options(yield_per=1000).execute(sa.select(hosted.table))
        count = 0
        for part in result.partitions():
            self.record(conn, hosted, [r._asdict() for r in part])
            count += len(part)
        log.info("%s is distributed now: %d existing row(s) go to paired devices", hosted.uri, count)

    def remove(self, bundle: str) -> None:
        """Drops a removed app's tables and their mirrors."""
        dropped = self._providers.tables(bundle)
        for hosted in dropped:
            if hosted.mirror is not None:
                with contextlib.suppress(NotFound):
                    self._kv.delete_store(hosted.mirror)
        self._providers.remove(bundle)
        for hosted in dropped:  # rows found before are gone (a new table may take the name)
            self.counts.bump(hosted.table.name)

    # ---- local writes: inside the write's transaction, then after its commit ----

    def record(
        self,
        conn: sa.Connection,
        hosted: HostedTable,
        rows: Iterable[Mapping[str, Any]] = (),
        deleted: Iterable[Cell] = (),
    ) -> None:
        """Puts the mirror entries of `rows` (whole rows, as the write left them) and deletes those of
        the `deleted` primary keys, in the caller's transaction."""
        assert hosted.mirror is not None
        pk = hosted.spec.primary_key
        pk_type = hosted.spec.column(pk).type
        puts = []
        for row in rows:
            raw = encode_row(row)
            if len(raw) > MAX_VALUE_LENGTH:
                raise TooLarge(
                    f"a row of distributed table {hosted.uri} is {len(raw)} bytes encoded; "
                    f"at most {MAX_VALUE_LENGTH} go to paired devices"
                )
            puts.append((_key(hosted, pk_type, row[pk]), Value(VType.BYTES, raw)))
        deletes = [_key(hosted, pk_type, value) for value in deleted]
        if puts or deletes:
            self._kv.write_in(conn, hosted.mirror, puts, deletes)

    def record_batch(
        self,
        conn: sa.Connection,
        hosted: HostedTable,
        names: Sequence[str],
        columns: Sequence[Sequence[Cell]],
        absent: Sequence[Sequence[int]] = (),
    ) -> None:
        """`record` of a batch insert given by columns: each row with the declared defaults of the
        columns it did not give (what the database filled in; a distributed key is never generated)."""
        spec = hosted.spec
        rows: list[dict[str, Cell]] = list(map(dict, map(zip, repeat(names), zip(*columns, strict=True))))
        defaults = {c.name: c.default for c in spec.columns if c.name not in names}
        if defaults:
            rows = [{**defaults, **row} for row in rows]
        for name, missing in zip(names, absent, strict=False):
            default = spec.column(name).default
            for i in missing:
                rows[i][name] = default
        self.record(conn, hosted, rows)

    def written(self, hosted: HostedTable) -> None:
        """A local write of `hosted` committed: automatic sync pushes its mirror."""
        if self._sync is not None and hosted.mirror is not None:
            self._sync.written(hosted.mirror)

    # ---- remote changes: datamgr.kv.storage.Mirror ----

    def apply(self, conn: sa.Connection, info: StoreInfo, changes: list[KvChange]) -> None:
        """A peer's changes that won in `info`'s mirror go into its table, in the same transaction."""
        self._pending, self._applied = [], None
        hosted = self._providers.by_mirror(info.store_id)
        if hosted is None:
            log.warning(
                "%d change(s) of %s, which mirrors no table here: skipped", len(changes), info.store_id
            )
            return
        if self.usage is not None:
            self.usage.forget(hosted.bundle)
        pk_type = hosted.spec.column(hosted.spec.primary_key).type
        rows: dict[Any, dict[str, Cell]] = {}
        deleted: dict[Any, None] = {}
        skipped, reason = 0, ""
        for c in changes:
            try:
                pk = decode_key(pk_type, c.key)
                if c.value is None:
                    rows.pop(pk, None)
                    deleted[pk] = None
                elif c.value.vtype is not VType.BYTES:
                    raise ValueError(f"a row is bytes, not {c.value.vtype.name}")
                else:
                    row = fit_row(hosted.spec, decode_row(c.value.data), pk)  # type: ignore[arg-type]
                    deleted.pop(pk, None)
                    rows[pk] = row
            except ValueError as exc:
                skipped += 1
                reason = reason or str(exc)
        if skipped:
            log.warning(
                "%s: skipped %d of %d synced row(s) that do not fit here (%s)",
                hosted.uri,
                skipped,
                len(changes),
                reason,
            )
        watched = self._feed.has_subscribers(hosted.uri)
        self._applied = hosted.table.name
        try:
            with conn.begin_nested():
                self._pending = self._write(conn, hosted, list(rows.values()), list(deleted), watched)
        except (sa.exc.StatementError, OverflowError) as exc:
            log.warning("%s: synced rows failed together (%s); trying them one by one", hosted.uri, exc)
            self._pending = self._one_by_one(conn, hosted, list(rows.values()), list(deleted), watched)

    def committed(self, info: StoreInfo, peer: str, changes: list[KvChange]) -> None:
        """The applied rows go to the table's subscribers, as changes from `peer`."""
        events, self._pending = self._pending, []
        if self._applied is not None:
            self.counts.bump(self._applied)  # after the commit: finds on readers see it changed
            self._applied = None
        for event in events:
            self._feed.publish(event.uri, [dataclasses.replace(event, device=peer)])

    def _one_by_one(
        self,
        conn: sa.Connection,
        hosted: HostedTable,
        rows: list[dict[str, Cell]],
        deleted: list[Cell],
        watched: bool,
    ) -> list[Change]:
        """Each row in its own savepoint, so that one the database refuses leaves the others applied."""
        events: list[Change] = []
        failed, reason = 0, ""
        items: list[tuple[list[dict[str, Cell]], list[Cell]]] = [([r], []) for r in rows]
        items += [([], [pk]) for pk in deleted]
        for put, gone in items:
            try:
                with conn.begin_nested():
                    events += self._write(conn, hosted, put, gone, watched)
            except (sa.exc.StatementError, OverflowError) as exc:
                failed += 1
                reason = reason or str(exc)
        if failed:
            log.warning("%s: skipped %d synced row(s) the database refused (%s)", hosted.uri, failed, reason)
        return events

    @staticmethod
    def _write(
        conn: sa.Connection,
        hosted: HostedTable,
        rows: list[dict[str, Cell]],
        deleted: list[Cell],
        watched: bool,
    ) -> list[Change]:
        """Upserts `rows` and deletes the `deleted` keys; the feed events when someone is watching."""
        t, pk = hosted.table, hosted.pk
        events: list[Change] = []
        gone: list[dict[str, Any]] = []
        for part in _chunks(deleted):
            stmt = sa.delete(t).where(pk.in_(part))
            if watched:
                gone += [r._asdict() for r in conn.execute(stmt.returning(*t.c))]
            else:
                conn.execute(stmt)
        if gone:
            events.append(Change("DELETE", hosted.uri, tuple(gone)))
        if not rows:
            return events
        keys = [r[pk.name] for r in rows]
        before = (
            {k for part in _chunks(keys) for k in conn.execute(sa.select(pk).where(pk.in_(part))).scalars()}
            if watched
            else set()
        )
        groups: dict[tuple[str, ...], list[dict[str, Cell]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        for names, group in groups.items():
            conn.execute(_upsert(conn.dialect.name, t, pk, names), group)
        if watched:
            after = [
                r._asdict() for part in _chunks(keys) for r in conn.execute(sa.select(t).where(pk.in_(part)))
            ]
            inserted = tuple(r for r in after if r[pk.name] not in before)
            updated = tuple(r for r in after if r[pk.name] in before)
            events += [
                Change(kind, hosted.uri, rs) for kind, rs in (("INSERT", inserted), ("UPDATE", updated)) if rs
            ]
        return events

    # ---- manual sync ----

    async def sync(
        self, hosted: HostedTable, devices: Sequence[str], mode: SyncMode
    ) -> dict[str, SyncStatus]:
        """Syncs the table's mirror with paired devices now (every paired device if none is given)."""
        if hosted.mirror is None:
            raise InvalidArgument(
                f'{hosted.uri} is not distributed: declare it "distributed": true to sync it'
            )
        if self._sync is None:
            raise Unavailable("sync between devices is not running on this device")
        return await self._sync.sync(hosted.mirror, devices, mode)


def _key(hosted: HostedTable, pk_type: str, value: Cell) -> bytes:
    key = encode_key(pk_type, value)
    if len(key) - 1 > MAX_KEY_BYTES:
        raise InvalidArgument(
            f"the primary key of a row of distributed table {hosted.uri} is {len(key) - 1} bytes; "
            f"at most {MAX_KEY_BYTES} go to paired devices"
        )
    return key


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _upsert(dialect: str, t: sa.Table, pk: sa.Column, names: tuple[str, ...]) -> sa.Executable:
    """INSERT of the `names` columns that updates them in the row with the same primary key."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(t)
    others = {n: stmt.excluded[n] for n in names if n != pk.name}
    if not others:
        return stmt.on_conflict_do_nothing(index_elements=[pk])
    return stmt.on_conflict_do_update(index_elements=[pk], set_=others)

"""The replicated storage of KV stores: the contract the KV API and the sync engine both build on.

Tables (SQLAlchemy Core, created by `KvStorage`):

- `kv_stores(store_id PK "{bundle}/{name}", bundle, name, kind, security_level 1-4, epoch, created_at,
  last_seq, max_hlc)`. `epoch` is a fresh uuid4 whenever a store is (re)created, so a peer detects a
  rebuilt store. `last_seq` is the store's change counter (kept here so collecting a tombstone never
  lets a seq be reused); `max_hlc` the highest timestamp written, which seeds the clock at start.
- `kv_entries(store_id, device, key, value NULL = tombstone, vtype, hlc, origin, seq)`, PK (store_id,
  device, key), unique index (store_id, seq). `device` is '' in SINGLE_VERSION stores; in
  DEVICE_COLLABORATION stores it is the writing device, whose writes live in their own key space.
  `origin` is the device that wrote the value, `hlc` its hybrid-logical-clock stamp; `seq` is this
  replica's change sequence, strictly increasing per store, assigned on every local write and on every
  remote change that took effect here. A row holds only the latest change of its key.
- `kv_peer_state(store_id, peer, peer_epoch, received_seq, acked_seq)`: per peer, the highest peer
  seq applied here and the highest local seq the peer confirmed.

Semantics:

- `write` is one transaction: every put and delete is stamped `clock.now()`, origin = this device,
  the next seq. A delete of a missing key is a no-op (no change, no seq). A key may appear once per
  write (collapse a transaction's operations per key first).
- `apply_remote` is one transaction that merges a peer's batch and records the peer's watermark.
  SINGLE_VERSION: the higher (hlc, origin) wins — a total order, so every replica keeps the same
  winner; deletes compete as tombstones. DEVICE_COLLABORATION: each change goes into its origin's key
  space; a remote change into this device's own key space is refused. A batch at or below the
  watermark changes nothing; changes at or below it inside a batch are skipped; a batch that would
  leave a gap after the watermark is refused. Timestamps too far ahead are refused (ClockSkew) before
  anything is written.
- Peer state: `set_acked` only moves forward; `note_peer_epoch` is the handshake's atomic "record
  this epoch, reset both watermarks if it changed" (a rebuilt peer).
- Mirrors: a daemon subsystem (DataShare distributed tables, UDMF CROSS_DEVICE records) keeps its
  replicated state in KV stores of its own system bundle (`SYSTEM_BUNDLE_PREFIX`, which no app may
  take). It writes them inside its own transactions with `write_in`, and `add_mirror(bundle, mirror)`
  makes `apply_remote` hand every batch that took effect in that bundle's stores to
  `mirror.apply(conn, info, changes)` inside the same transaction (so its own tables move with the
  watermark, or not at all) and to `mirror.committed(info, peer, changes)` after the commit. `apply`
  must not raise for data it cannot use (it would stop the peer's sync for good): it skips it.
- Tombstones stay until `collect_tombstones` finds that every listed peer acked them (the daemon lists
  its trusted devices, periodically: `datamgr.sync.gc`). A replica not in that list that still holds an
  older value can bring the key back (the usual tombstone-GC trade-off).

Limits (OpenHarmony's constants): keys 1..1024 bytes (896 in DEVICE_COLLABORATION stores, where OH
prefixes the device id), values ≤ 4194303 bytes encoded, ≤ 128 entries per app write. Over a limit:
InvalidArgument (or its subclass TooLarge, RESOURCE_EXHAUSTED) and nothing is written.

All methods block; the daemon runs writes on its one writer thread and reads on reader threads. Every
write transaction starts by updating its store's row, which serialises writers of a store on SQLite
and PostgreSQL alike.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Container, Generator, Iterable, Mapping, Sequence
from typing import Protocol

import sqlalchemy as sa

from datamgr.bundles import SYSTEM_BUNDLE_PREFIX, check_bundle
from datamgr.errors import FailedPrecondition, InvalidArgument, TooLarge
from datamgr.hlc import HLC
from datamgr.kv import _storage_sql as sql
from datamgr.kv._storage_sql import E, P, S, entries_table, metadata, peers_table, stores_table
from datamgr.kv._storage_types import (
    MAX_BATCH_SIZE,
    MAX_DEVICE_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_KEY_LENGTH_DEVICE,
    MAX_VALUE_LENGTH,
    Change,
    PeerState,
    StoreInfo,
    StoreKind,
    Value,
    ValueData,
    VType,
    check_changes,
    check_key,
    check_value,
    key_limit,
)
from datamgr.quota import ROW_OVERHEAD, Ledger
from datamgr.security_levels import check_label, may_hold

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_DEVICE_ID_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_KEY_LENGTH_DEVICE",
    "MAX_VALUE_LENGTH",
    "STORE_NAME_RE",
    "Change",
    "KvStorage",
    "Mirror",
    "PeerState",
    "StoreInfo",
    "StoreKind",
    "VType",
    "Value",
    "ValueData",
    "key_limit",
    "metadata",
]

STORE_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,128}")  # use with fullmatch: `$` would let "abc\n" through
_STREAM_ROWS = 256  # rows a streamed scan fetches at once


class Mirror(Protocol):
    """A subsystem whose state rides the KV stores of one system bundle (see the module docstring)."""

    def apply(self, conn: sa.Connection, info: StoreInfo, changes: list[Change]) -> None:
        """Peer changes that took effect in `info`'s store, inside the transaction that applies them."""

    def committed(self, info: StoreInfo, peer: str, changes: list[Change]) -> None:
        """The same changes, after the commit (on the writer thread)."""


class KvStorage:
    """KV stores of one device in one database. `device_id` is this device; `clock` stamps its writes
    and is raised at construction to the highest timestamp stored (restart monotonicity)."""

    def __init__(self, engine: sa.Engine, device_id: str, clock: HLC) -> None:
        if not device_id:
            raise InvalidArgument("a device id is required")
        self.engine, self.device_id, self.clock = engine, device_id, clock
        self._mirrors: dict[str, Mirror] = {}
        self.usage: Ledger | None = None  # the apps' usage: local writes report their bytes, exactly
        metadata.create_all(engine)
        with engine.connect() as conn:
            clock.observe(conn.execute(sa.select(sa.func.coalesce(sa.func.max(S.max_hlc), 0))).scalar_one())

    # ---- stores ----

    def create_store(self, bundle: str, name: str, kind: StoreKind | str, security_level: int) -> StoreInfo:
        """The store, created if missing; the same options again return it, others are refused."""
        check_bundle(bundle)
        if not isinstance(name, str) or not STORE_NAME_RE.fullmatch(name):
            raise InvalidArgument(f"invalid store name {name!r}: letters, digits, _; 1-128 characters")
        try:
            kind = StoreKind(kind)
        except ValueError:
            raise InvalidArgument(
                f"invalid store kind {kind!r}: DEVICE_COLLABORATION or SINGLE_VERSION"
            ) from None
        check_label(security_level)
        store_id = f"{bundle}/{name}"
        with self.engine.begin() as conn:
            existing = sql.get_info(conn, store_id)
            if existing is not None:
                if (existing.kind, existing.security_level) != (kind, security_level):
                    raise InvalidArgument(
                        f"store {store_id} exists as {existing.kind.value} S{existing.security_level}; "
                        f"it cannot be opened as {kind.value} S{security_level} (options changed)"
                    )
                return existing
            info = StoreInfo(store_id, bundle, name, kind, security_level, uuid.uuid4().hex, time.time())
            conn.execute(
                sa.insert(stores_table).values(
                    store_id=store_id, bundle=bundle, name=name, kind=kind.value,
                    security_level=security_level, epoch=info.epoch, created_at=info.created_at,
                    last_seq=0, max_hlc=0,
                )
            )  # fmt: skip
        return info

    def get_store(self, store_id: str) -> StoreInfo | None:
        with self.engine.connect() as conn:
            return sql.get_info(conn, store_id)

    def list_stores(self, bundle: str | None = None) -> list[StoreInfo]:
        """The stores of `bundle` (None: of every app)."""
        q = sa.select(stores_table).order_by(S.bundle, S.name)
        with self.engine.connect() as conn:
            rows = conn.execute(q if bundle is None else q.where(S.bundle == bundle))
            return [sql.to_info(r) for r in rows]

    def delete_store(self, store_id: str) -> None:
        """Deletes the store, its entries and its peers' watermarks; NotFound if there is none."""
        with self.engine.begin() as conn:
            info, _ = sql.lock_store(conn, store_id)
            conn.execute(sa.delete(entries_table).where(E.store_id == store_id))
            conn.execute(sa.delete(peers_table).where(P.store_id == store_id))
            conn.execute(sa.delete(stores_table).where(S.store_id == store_id))
        if self.usage is not None:
            self.usage.forget(info.bundle)

    # ---- data ----

    def write(
        self, store_id: str, puts: Sequence[tuple[bytes, Value]], deletes: Sequence[bytes] = ()
    ) -> list[Change]:
        """Puts and deletes in one transaction, in this device's key space; returns the changes made."""
        if len(puts) + len(deletes) > MAX_BATCH_SIZE:
            raise TooLarge(f"{len(puts) + len(deletes)} entries in one write; at most {MAX_BATCH_SIZE}")
        with self.engine.begin() as conn:
            changes, bundle, delta = self._write_in(conn, store_id, puts, deletes)
        if self.usage is not None and delta:
            self.usage.add(bundle, delta)
        return changes

    def write_in(
        self,
        conn: sa.Connection,
        store_id: str,
        puts: Sequence[tuple[bytes, Value]],
        deletes: Sequence[bytes] = (),
    ) -> list[Change]:
        """`write` inside the caller's transaction `conn`, with no limit on the number of entries
        (for the daemon's mirrors, whose writes move with their own tables; they count in no app's
        usage)."""
        return self._write_in(conn, store_id, puts, deletes)[0]

    def _write_in(
        self,
        conn: sa.Connection,
        store_id: str,
        puts: Sequence[tuple[bytes, Value]],
        deletes: Sequence[bytes] = (),
    ) -> tuple[list[Change], str, int]:
        """The write in `conn`: its changes, the owner's bundle and the bytes it added (admitted
        against the owner's quota before anything is written; the caller reports them after commit)."""
        info, last_seq = sql.lock_store(conn, store_id)
        limit = key_limit(info.kind)
        keys = [check_key(k, limit) for k, _ in puts] + [check_key(k, limit) for k in deletes]
        if len(set(keys)) != len(keys):
            raise InvalidArgument("a key appears twice in one write; collapse it to one operation")
        for _, value in puts:
            check_value(value)
        device = self.device_id if info.kind is StoreKind.DEVICE_COLLABORATION else ""
        delta = 0
        if self.usage is not None and not info.bundle.startswith(SYSTEM_BUNDLE_PREFIX):
            old = sql.live_sizes(conn, store_id, device, keys, ROW_OVERHEAD)
            live: Container[bytes] = old
            delta = sum(ROW_OVERHEAD + len(k) + len(v.encode()) for k, v in puts) - sum(old.values())
            self.usage.admit(conn, info.bundle, delta)
        else:
            live = sql.live_keys(conn, store_id, device, deletes)
        ops = [*puts, *((k, None) for k in deletes if k in live)]
        rows: list[sql.Row] = [(device, k, v, self.clock.now(), self.device_id) for k, v in ops]
        return sql.put_rows(conn, store_id, last_seq, rows, self.clock.last), info.bundle, delta

    @staticmethod
    def bytes_of(conn: sa.Connection, bundle: str) -> int:
        """What `bundle`'s KV data takes in its quota: keys and values of its live entries."""
        return sql.bundle_bytes(conn, bundle, ROW_OVERHEAD)

    def add_mirror(self, bundle: str, mirror: Mirror) -> None:
        """Peer changes to the stores of system bundle `bundle` also go to `mirror` (module docstring)."""
        if not bundle.startswith(SYSTEM_BUNDLE_PREFIX):
            raise InvalidArgument(f"a mirror's bundle starts with {SYSTEM_BUNDLE_PREFIX}, not {bundle!r}")
        self._mirrors[bundle] = mirror

    def get(self, store_id: str, key: bytes, device: str | None = None) -> Value | None:
        """The live value of `key` (None if missing or deleted), in `device`'s key space (see scan)."""
        with self.engine.connect() as conn:
            space = self._space(conn, store_id, device)
            where = (E.store_id == store_id, E.device == space, E.key == key, E.value.is_not(None))
            row = conn.execute(sa.select(E.vtype, E.value).where(*where)).first()
        return None if row is None else Value.decode(row.vtype, row.value)

    def scan(
        self, store_id: str, prefix: bytes = b"", device: str | None = None, limit: int | None = None
    ) -> list[tuple[bytes, Value, str]]:
        """Live (key, value, device) in key order. `device` None: this device's key space in a
        DEVICE_COLLABORATION store, the one key space of a SINGLE_VERSION store."""
        with self.engine.connect() as conn:
            space = self._space(conn, store_id, device)
            q = sa.select(E.key, E.vtype, E.value, E.device).where(
                E.store_id == store_id, E.device == space, E.value.is_not(None), E.key >= prefix
            )
            if (end := sql.successor(prefix)) is not None:
                q = q.where(E.key < end)
            rows = conn.execute(q.order_by(E.key).limit(limit)).all()
        return [(r.key, Value.decode(r.vtype, r.value), r.device) for r in rows]

    def stream(
        self, conn: sa.Connection, store_id: str, prefix: bytes = b"", device: str | None = None
    ) -> Generator[tuple[bytes, Value], None, None]:
        """`scan`'s live (key, value) on the caller's connection, fetched a few hundred at a time (a
        query keeps only its matches); close the iterator to end the statement early."""
        space = self._space(conn, store_id, device)
        q = sa.select(E.key, E.vtype, E.value).where(
            E.store_id == store_id, E.device == space, E.value.is_not(None), E.key >= prefix
        )
        if (end := sql.successor(prefix)) is not None:
            q = q.where(E.key < end)
        result = conn.execution_options(yield_per=_STREAM_ROWS).execute(q.order_by(E.key))
        try:
            for r in result:
                yield r.key, Value.decode(r.vtype, r.value)
        finally:
            result.close()

    def changes_since(self, store_id: str, seq: int, limit: int) -> list[Change]:
        """Up to `limit` changes with a local seq above `seq`, tombstones included, in seq order."""
        with self.engine.connect() as conn:
            sql.require(conn, store_id)
            return sql.changes_since(conn, store_id, seq, max(0, limit))

    # ---- replication ----

    def apply_remote(
        self,
        store_id: str,
        peer: str,
        peer_epoch: str,
        changes: Sequence[Change],
        last_peer_seq: int,
        *,
        since_seq: int | None = None,
    ) -> list[Change]:
        """Merges a peer's batch covering its seqs (since_seq, last_peer_seq] and records
        received_seq = last_peer_seq, in one transaction. Returns the changes that took effect here,
        with their new local seqs. `since_seq` None: no gap check (the caller knows the batch follows)."""
        if peer == self.device_id:
            raise InvalidArgument(f"a batch from {peer} cannot be applied on {peer} itself")
        with self.engine.begin() as conn:
            info, last_seq = sql.lock_store(conn, store_id)
            check_changes(changes, store_id, info.kind, self.device_id)
            seqs, lower = [c.seq for c in changes], since_seq or 0
            if any(b <= a for a, b in itertools.pairwise(seqs)) or not (
                lower <= last_peer_seq and (not seqs or lower < seqs[0] <= seqs[-1] <= last_peer_seq)
            ):
                raise InvalidArgument(
                    f"malformed batch from {peer}: seqs must increase inside ({lower}, {last_peer_seq}]"
                )
            if changes:  # before anything is written: a far-future batch is refused whole
                self.clock.check(max(c.hlc for c in changes))
            state = sql.get_peer(conn, store_id, peer)
            if state is not None and state.peer_epoch not in (None, peer_epoch):
                raise FailedPrecondition(
                    f"batch from {peer}'s store epoch {peer_epoch}, but the session is with epoch "
                    f"{state.peer_epoch}: handshake again"
                )
            received = state.received_seq if state is not None else 0
            if last_peer_seq <= received:
                return []  # a replay: everything in it is here already
            if since_seq is not None and since_seq > received:
                raise FailedPrecondition(
                    f"batch from {peer} follows its seq {since_seq}, but only {received} is applied here: "
                    "resend from there"
                )
            fresh = [c for c in changes if c.seq > received]
            if fresh:
                self.clock.update(max(c.hlc for c in fresh))
            applied = sql.put_rows(
                conn, store_id, last_seq, self._winners(conn, store_id, fresh), self.clock.last
            )
            mirror = self._mirrors.get(info.bundle)
            if mirror is not None and applied:
                mirror.apply(conn, info, applied)
            sql.save_peer(conn, store_id, peer, peer_epoch=peer_epoch, received_seq=last_peer_seq)
        if self.usage is not None and applied:
            self.usage.forget(info.bundle)  # the owner's usage is measured again when next needed
        if mirror is not None and applied:
            mirror.committed(info, peer, applied)
        return applied

    def peer_state(self, store_id: str, peer: str) -> PeerState | None:
        with self.engine.connect() as conn:
            return sql.get_peer(conn, store_id, peer)

    def set_acked(self, store_id: str, peer: str, seq: int) -> None:
        """Records that `peer` holds this store's changes up to `seq`; the watermark never moves back."""
        with self.engine.begin() as conn:
            _, last_seq = sql.lock_store(conn, store_id)
            if not isinstance(seq, int) or not 0 <= seq <= last_seq:
                raise InvalidArgument(f"{peer} acked seq {seq} of {store_id}, whose last seq is {last_seq}")
            state = sql.get_peer(conn, store_id, peer)
            if state is None or seq > state.acked_seq:
                sql.save_peer(conn, store_id, peer, acked_seq=seq)

    def note_peer_epoch(self, store_id: str, peer: str, peer_epoch: str) -> tuple[PeerState, bool]:
        """Records the epoch a handshake showed for `peer`, in one transaction; a different epoch
        than the recorded one means its store was rebuilt and resets both watermarks. Returns the
        state and whether it was reset."""
        with self.engine.begin() as conn:
            sql.lock_store(conn, store_id)
            state = sql.get_peer(conn, store_id, peer)
            rebuilt = state is not None and state.peer_epoch not in (None, peer_epoch)
            if rebuilt:
                sql.save_peer(conn, store_id, peer, peer_epoch=peer_epoch, received_seq=0, acked_seq=0)
            elif state is None or state.peer_epoch is None:
                sql.save_peer(conn, store_id, peer, peer_epoch=peer_epoch)
            new = sql.get_peer(conn, store_id, peer)
            assert new is not None
            return new, rebuilt

    def collect_tombstones(
        self, store_id: str, peers: Iterable[str], levels: Mapping[str, int] | None = None
    ) -> int:
        """Deletes the tombstones every listed peer has acked (all of them when `peers` is empty: no
        one else needs them); returns how many. With `levels` (a peer's device security level), a peer
        that may not hold the store's label and never acked any of it is not waited for: no change of
        this store ever went to it, so it has no value a tombstone must reach."""
        peers = list(peers)
        with self.engine.begin() as conn:
            info, floor = sql.lock_store(conn, store_id)
            q = sa.select(P.peer, P.acked_seq).where(P.store_id == store_id, P.peer.in_(peers))
            acked: dict[str, int] = {r.peer: r.acked_seq for r in conn.execute(q)} if peers else {}
            if levels is not None:
                label = info.security_level
                peers = [p for p in peers if acked.get(p, 0) or p not in levels or may_hold(levels[p], label)]
            if peers:
                floor = min(acked.get(p, 0) for p in peers)
            where = (E.store_id == store_id, E.value.is_(None), E.seq <= floor)
            return conn.execute(sa.delete(entries_table).where(*where)).rowcount

    # ---- internals ----

    def _space(self, conn: sa.Connection, store_id: str, device: str | None) -> str:
        info = sql.require(conn, store_id)
        if info.kind is StoreKind.DEVICE_COLLABORATION:
            return device or self.device_id
        if device:
            raise InvalidArgument(f"{store_id} is SINGLE_VERSION: one key space, not one per device")
        return ""

    @staticmethod
    def _winners(conn: sa.Connection, store_id: str, changes: list[Change]) -> list[sql.Row]:
        """The changes that beat what is stored and each other: the higher (hlc, origin) wins; an
        equal one is the same write arriving again and changes nothing."""
        current = sql.versions(conn, store_id, ((c.device, c.key) for c in changes))
        winners: dict[tuple[str, bytes], sql.Row] = {}
        for c in changes:
            slot = (c.device, c.key)
            if slot not in current or (c.hlc, c.origin) > current[slot]:
                current[slot] = (c.hlc, c.origin)
                winners.pop(slot, None)  # a later win of the same key goes last
                winners[slot] = (c.device, c.key, c.value, c.hlc, c.origin)
        return list(winners.values())

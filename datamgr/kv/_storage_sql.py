"""The tables of `datamgr.kv.storage` and the statements it runs on them (inside its transactions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from datamgr.errors import NotFound
from datamgr.kv._storage_types import Change, PeerState, StoreInfo, StoreKind, Value

metadata = sa.MetaData()
stores_table = sa.Table(
    "kv_stores",
    metadata,
    sa.Column("store_id", sa.String(260), primary_key=True),
    sa.Column("bundle", sa.String(128), nullable=False, index=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("security_level", sa.SmallInteger, nullable=False),
    sa.Column("epoch", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("max_hlc", sa.BigInteger, nullable=False),
)
entries_table = sa.Table(
    "kv_entries",
    metadata,
    sa.Column("store_id", sa.String(260), primary_key=True),
    sa.Column("device", sa.String(128), primary_key=True),
    sa.Column("key", sa.LargeBinary, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=True),
    sa.Column("vtype", sa.SmallInteger, nullable=False),
    sa.Column("hlc", sa.BigInteger, nullable=False),
    sa.Column("origin", sa.String(128), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Index("kv_entries_seq", "store_id", "seq", unique=True),
)
peers_table = sa.Table(
    "kv_peer_state",
    metadata,
    sa.Column("store_id", sa.String(260), primary_key=True),
    sa.Column("peer", sa.String(128), primary_key=True),
    sa.Column("peer_epoch", sa.String(32), nullable=True),
    sa.Column("received_seq", sa.BigInteger, nullable=False),
    sa.Column("acked_seq", sa.BigInteger, nullable=False),
)
S, E, P = stores_table.c, entries_table.c, peers_table.c
Row = tuple[str, bytes, Value | None, int, str]  # device, key, value, hlc, origin: a change without seq
_CHUNK = 400  # bound parameters per IN (...) list
_IN_SIZES = (8, 64, _CHUNK)  # IN lists are padded to one of these, so few statements are compiled


@dataclass(frozen=True, slots=True)
class _Statement:
    """A statement compiled for one dialect, run through the driver (`exec_driver_sql`): on batches of
    a thousand rows SQLAlchemy's per-row processing of parameters and results costs more than the
    query. `order`: the parameter names in position order (None: the driver takes them by name)."""

    sql: str
    order: tuple[str, ...] | None
    defaults: dict[str, Any]

    def params(self, values: dict[str, Any]) -> Any:
        merged = {**self.defaults, **values}
        return merged if self.order is None else tuple(merged[k] for k in self.order)


_statements: dict[tuple[str, str, str], _Statement] = {}


def _statement(
    dialect: sa.Dialect, name: str, build: Callable[[], Any], keys: Sequence[str] = ()
) -> _Statement:
    """`build()` compiled for `dialect`, once per `name` (`keys`: column keys of an INSERT)."""
    cache_key = (dialect.name, dialect.driver, name)
    stmt = _statements.get(cache_key)
    if stmt is None:
        compiled = build().compile(dialect=dialect, column_keys=list(keys) or None)
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        defaults = {k: b.value for k, b in compiled.binds.items() if not b.required}
        stmt = _statements[cache_key] = _Statement(compiled.string, order, defaults)
    return stmt


def _bytes(b: Any) -> bytes:
    return b if type(b) is bytes else bytes(b)  # psycopg2 returns bytea as memoryview


def successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


def _per_device(slots: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, Sequence[bytes]]]:
    """(device, keys) in chunks small enough for one IN list."""
    by_device: dict[str, list[bytes]] = {}
    for device, key in slots:
        by_device.setdefault(device, []).append(key)
    for device, keys in by_device.items():
        for i in range(0, len(keys), _CHUNK):
            yield device, keys[i : i + _CHUNK]


def changes_since(conn: sa.Connection, store_id: str, seq: int, limit: int) -> list[Change]:
    """Up to `limit` changes with a seq above `seq`, in seq order (the store must exist)."""

    def build() -> Any:
        q = sa.select(E.device, E.key, E.value, E.vtype, E.hlc, E.origin, E.seq)
        q = q.where(E.store_id == sa.bindparam("store_id"), E.seq > sa.bindparam("seq"))
        return q.order_by(E.seq).limit(sa.bindparam("limit", type_=sa.Integer))

    stmt = _statement(conn.dialect, "changes_since", build)
    rows = conn.exec_driver_sql(stmt.sql, stmt.params({"store_id": store_id, "seq": seq, "limit": limit}))
    decode = Value.decode
    return [
        Change(store_id, device, _bytes(key), None if raw is None else decode(vtype, raw), hlc, origin, s)
        for device, key, raw, vtype, hlc, origin, s in rows
    ]


def to_info(row: sa.Row[tuple[object, ...]]) -> StoreInfo:
    m = row._mapping
    kind = StoreKind(m["kind"])
    return StoreInfo(
        m["store_id"], m["bundle"], m["name"], kind, m["security_level"], m["epoch"], m["created_at"]
    )


def get_info(conn: sa.Connection, store_id: str) -> StoreInfo | None:
    row = conn.execute(sa.select(stores_table).where(S.store_id == store_id)).first()
    return None if row is None else to_info(row)


def require(conn: sa.Connection, store_id: str) -> StoreInfo:
    info = get_info(conn, store_id)
    if info is None:
        raise NotFound(f"no KV store {store_id}")
    return info


def lock_store(conn: sa.Connection, store_id: str) -> tuple[StoreInfo, int]:
    """The store and its last seq, its row locked for the transaction (a no-op UPDATE): writers of a
    store take turns on SQLite and PostgreSQL alike. NotFound if there is no such store."""
    stmt = sa.update(stores_table).where(S.store_id == store_id).values(last_seq=S.last_seq)
    row = conn.execute(stmt.returning(*stores_table.c)).first()
    if row is None:
        raise NotFound(f"no KV store {store_id}")
    return to_info(row), row._mapping["last_seq"]


def live_keys(conn: sa.Connection, store_id: str, device: str, keys: Sequence[bytes]) -> set[bytes]:
    live: set[bytes] = set()
    for dev, part in _per_device((device, k) for k in keys):
        where = (E.store_id == store_id, E.device == dev, E.key.in_(part), E.value.is_not(None))
        live.update(conn.execute(sa.select(E.key).where(*where)).scalars())
    return live


def versions(
    conn: sa.Connection, store_id: str, slots: Iterable[tuple[str, bytes]]
) -> dict[tuple[str, bytes], tuple[int, str]]:
    """(hlc, origin) of the stored rows (live or tombstones) of the given (device, key) slots."""
    found: dict[tuple[str, bytes], tuple[int, str]] = {}
    for device, part in _per_device(slots):
        size = next(n for n in _IN_SIZES if n >= len(part))
        keys = [*part, *[part[-1]] * (size - len(part))]  # a repeated key changes nothing

        def build(size: int = size) -> Any:
            where = (E.store_id == sa.bindparam("store_id"), E.device == sa.bindparam("device"))
            in_keys = E.key.in_([sa.bindparam(f"k{i}", type_=sa.LargeBinary) for i in range(size)])
            return sa.select(E.key, E.hlc, E.origin).where(*where, in_keys)

        stmt = _statement(conn.dialect, f"versions{size}", build)
        values = {"store_id": store_id, "device": device} | {f"k{i}": k for i, k in enumerate(keys)}
        for key, hlc, origin in conn.exec_driver_sql(stmt.sql, stmt.params(values)):
            found[device, _bytes(key)] = (hlc, origin)
    return found


def live_sizes(
    conn: sa.Connection, store_id: str, device: str, keys: Sequence[bytes], overhead: int
) -> dict[bytes, int]:
    """The bytes each live key of `keys` takes (key, value and `overhead`); missing and deleted keys
    are left out. One compiled statement per IN size, as `versions`."""
    found: dict[bytes, int] = {}
    for dev, part in _per_device((device, k) for k in keys):
        size = next(n for n in _IN_SIZES if n >= len(part))
        padded = [*part, *[part[-1]] * (size - len(part))]

        def build(size: int = size) -> Any:
            where = (E.store_id == sa.bindparam("store_id"), E.device == sa.bindparam("device"))
            in_keys = E.key.in_([sa.bindparam(f"k{i}", type_=sa.LargeBinary) for i in range(size)])
            return sa.select(E.key, sa.func.length(E.value)).where(*where, in_keys, E.value.is_not(None))

        stmt = _statement(conn.dialect, f"live_sizes{size}", build)
        values = {"store_id": store_id, "device": dev} | {f"k{i}": k for i, k in enumerate(padded)}
        for key, n in conn.exec_driver_sql(stmt.sql, stmt.params(values)):
            found[_bytes(key)] = overhead + len(key) + n
    return found


def bundle_bytes(conn: sa.Connection, bundle: str, overhead: int) -> int:
    """The bytes of every live entry of `bundle`'s stores (keys, values and `overhead` each)."""
    stores = sa.select(S.store_id).where(S.bundle == bundle).scalar_subquery()
    size = sa.func.coalesce(sa.func.sum(sa.func.length(E.key) + sa.func.length(E.value) + overhead), 0)
    where = (E.store_id.in_(stores), E.value.is_not(None))
    return int(conn.execute(sa.select(size).where(*where)).scalar_one())


_COLUMNS = ("store_id", "device", "key", "value", "vtype", "hlc", "origin", "seq")


def _upsert(dialect: sa.Dialect) -> _Statement | None:
    """INSERT ... ON CONFLICT (the key's row) DO UPDATE for `dialect` (None if it has no upsert)."""
    if dialect.name not in ("sqlite", "postgresql"):
        return None

    def build() -> Any:
        if dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        stmt = insert(entries_table)
        new = {c: stmt.excluded[c] for c in _COLUMNS[3:]}
        return stmt.on_conflict_do_update(index_elements=[E.store_id, E.device, E.key], set_=new)

    upsert = _statement(dialect, "upsert", build, _COLUMNS)
    assert upsert.order in (None, _COLUMNS)
    return upsert


def put_rows(
    conn: sa.Connection, store_id: str, last_seq: int, rows: list[Row], max_hlc: int
) -> list[Change]:
    """Stores each row as the latest change of its key with the next seq; moves the store's last_seq
    and max_hlc along. Returns the changes as stored."""
    if not rows:
        return []
    changes: list[Change] = []
    params: list[tuple[object, ...]] = []
    for seq, (device, key, value, hlc, origin) in enumerate(rows, last_seq + 1):
        changes.append(Change(store_id, device, key, value, hlc, origin, seq))
        encoded, vtype = (None, 0) if value is None else (value.encode(), int(value.vtype))
        params.append((store_id, device, key, encoded, vtype, hlc, origin, seq))
    upsert = _upsert(conn.dialect)
    if upsert is None:
        for device, part in _per_device((c.device, c.key) for c in changes):
            where = (E.store_id == store_id, E.device == device, E.key.in_(part))
            conn.execute(sa.delete(entries_table).where(*where))
        conn.execute(sa.insert(entries_table), [dict(zip(_COLUMNS, p, strict=True)) for p in params])
    elif upsert.order is not None:
        conn.exec_driver_sql(upsert.sql, params)
    else:
        conn.exec_driver_sql(upsert.sql, [dict(zip(_COLUMNS, p, strict=True)) for p in params])
    higher = sa.case((S.max_hlc < max_hlc, max_hlc), else_=S.max_hlc)
    conn.execute(
        sa.update(stores_table).where(S.store_id == store_id).values(last_seq=changes[-1].seq, max_hlc=higher)
    )
    return changes


def get_peer(conn: sa.Connection, store_id: str, peer: str) -> PeerState | None:
    row = conn.execute(sa.select(peers_table).where(P.store_id == store_id, P.peer == peer)).first()
    if row is None:
        return None
    return PeerState(store_id, peer, row.peer_epoch, row.received_seq, row.acked_seq)


def save_peer(conn: sa.Connection, store_id: str, peer: str, **values: object) -> None:
    """Updates the peer's row, creating it (watermarks 0, epoch unknown) if missing."""
    where = (P.store_id == store_id, P.peer == peer)
    if conn.execute(sa.update(peers_table).where(*where).values(**values)).rowcount == 0:
        row = {"peer_epoch": None, "received_seq": 0, "acked_seq": 0, **values}
        conn.execute(sa.insert(peers_table).values(store_id=store_id, peer=peer, **row))

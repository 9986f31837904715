"""UDMF's runtime store: the data, its entries, grants and custom types, in the daemon's database.

Plain synchronous SQLAlchemy Core on the engine the daemon passes in; the servicer runs writes on the
daemon's database writer and reads on its readers. Entry values are serialized `Value` messages (the
store never parses them); a blob up to the inline threshold lives in its row, a larger one in a file of
`BlobDir`, which the row names. Methods that delete return the file names they freed: the caller removes
the files after the commit (a crash in between leaves orphans, which `recover` removes at start).

Remote rows hold another device's CROSS_DEVICE data (`origin` is its id): the summary, and the entries
only if `copied` (their blobs inline in the rows, never files). The daemon's bridge writes them inside
its own transactions (`put_remote`, `delete_remote`); `replication` hears of every local write and
delete of this device's data, in its transaction (`udmf.replica`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from udmf._blobs import BlobDir
from udmf.access import Runtime, ShareOptions, Visibility, leaves_device
from udmf.errors import ResourceExhausted
from udmf.keys import Intention

if TYPE_CHECKING:
    from udmf.replica import Replication

metadata = sa.MetaData()
data_table = sa.Table(
    "udmf_data",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("intention", sa.String(16), nullable=False, index=True),
    sa.Column("writer", sa.String(128), nullable=False),
    sa.Column("visibility", sa.String(16), nullable=False),
    sa.Column("share_options", sa.String(16), nullable=False, index=True),
    sa.Column("tag", sa.Text, nullable=False),
    sa.Column("extras", sa.JSON, nullable=False),
    sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("record_count", sa.Integer, nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("total_size", sa.BigInteger, nullable=False),
    # a lazy drag whose source has not delivered the data yet: summary only, no entries
    sa.Column("pending", sa.Boolean, nullable=False),
    # a remote row: the device holding the data ("" this one); whether its entries were copied here
    sa.Column("origin", sa.String(128), nullable=False, server_default=""),
    sa.Column("copied", sa.Boolean, nullable=False, server_default=sa.false()),
    # a listing walks one intention's data in (created_at, key) order, a page at a time
    sa.Index("ix_udmf_data_listing", "intention", "created_at", "key"),
)
entries_table = sa.Table(
    "udmf_entries",
    metadata,
    sa.Column("key", sa.String(200), sa.ForeignKey("udmf_data.key", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("record", sa.Integer, nullable=False),
    sa.Column("type", sa.String(160), nullable=False),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=True),
    sa.Column("blob_file", sa.String(64), nullable=True, index=True),
    sa.Column("blob_size", sa.BigInteger, nullable=False),
    sa.Column("blob_field", sa.String(128), nullable=False),
    sa.Column("blob_text", sa.Boolean, nullable=False),
)
grants_table = sa.Table(
    "udmf_grants",
    metadata,
    sa.Column("key", sa.String(200), sa.ForeignKey("udmf_data.key", ondelete="CASCADE"), primary_key=True),
    sa.Column("bundle", sa.String(128), primary_key=True),
    sa.Column("keep", sa.Boolean, nullable=False),
)
types_table = sa.Table(
    "udmf_types",
    metadata,
    sa.Column("type_id", sa.String(160), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("declaration", sa.JSON, nullable=False),
)


ROW_OVERHEAD = 32  # bytes a stored data counts in its writer's usage besides its total_size


class Usage(Protocol):
    """The daemon's count of what each app stores (its quota). The store asks `refusal` inside a write's
    transaction before the write grows its writer's data, and reports `add` after the commit (both on
    the database writer); `room` is asked while data still streams in, before its bytes reach disk.
    A refusal is the message of the RESOURCE_EXHAUSTED the writer gets."""

    def refusal(self, conn: sa.Connection, bundle: str, grow: int) -> str | None: ...

    def add(self, bundle: str, delta: int) -> None: ...

    def room(self, bundle: str, total: int, new: int) -> str | None: ...


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One entry: its serialized `Value` without the blob, and the blob inline or in a file."""

    record: int
    type: str
    value: bytes
    blob_size: int = 0
    blob_field: str = ""
    blob_text: bool = False
    blob: bytes | None = None
    blob_file: str | None = None


@dataclass(frozen=True, slots=True)
class DataRow:
    """One UnifiedData's row; the store stamps `timestamp_ms`, `created_at` and `expires_at`."""

    key: str
    intention: Intention
    writer: str
    record_count: int
    summary: Mapping[str, int]
    total_size: int
    visibility: Visibility = Visibility.ALL
    share_options: ShareOptions = ShareOptions.CROSS_APP
    tag: str = ""
    extras: Mapping[str, Any] = field(default_factory=dict)  # JSON of each extra's Value
    pending: bool = False
    timestamp_ms: int = 0
    created_at: float = 0.0
    expires_at: float = 0.0
    grants: Mapping[str, bool] = field(default_factory=dict)
    origin: str = ""  # the device holding the data: "" this one, else a remote row (module docstring)
    copied: bool = False  # a remote row whose entries are here too

    def runtime(self) -> Runtime:
        return Runtime(
            self.key,
            self.intention,
            self.writer,
            self.visibility,
            self.share_options,
            self.grants,
            self.origin,
        )


class UdmfStore:
    def __init__(
        self, engine: sa.Engine, blobs: BlobDir, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self.blobs = blobs
        self._ttl = ttl_s
        self._clock = clock
        self.replication: Replication | None = None
        self.usage: Usage | None = None  # this device's data counts in its writer's usage
        metadata.create_all(engine)
        _add_columns(engine)
        blobs.ensure()

    # ---- writes (the database writer) ----

    def insert(self, row: DataRow, entries: Sequence[EntryRow]) -> DataRow:
        """Stores new data, stamped with the current time; returns the stamped row."""
        row = self._stamp(row)
        grow = ROW_OVERHEAD + (0 if row.pending else row.total_size)
        with self._engine.begin() as conn:
            self._admit(conn, row.writer, grow)
            conn.execute(sa.insert(data_table).values(_data_values(row)))
            self._insert_entries(conn, row.key, entries)
            told = self._wrote(conn, row, entries)
        self._committed(told, {row.writer: grow})
        return row

    def replace(self, row: DataRow, entries: Sequence[EntryRow]) -> list[str] | None:
        """Replaces the data and entries under `row.key` (grants stay); the freed files, or None if gone."""
        row = self._stamp(row)
        with self._engine.begin() as conn:
            values = _data_values(row)
            del values["key"]
            local = (data_table.c.key == row.key, data_table.c.origin == "")
            was_shared = self._shared(conn, [row.key])
            grow = row.total_size - (_sizes(conn, [row.key]).get(row.writer, 0) - ROW_OVERHEAD)
            self._admit(conn, row.writer, grow)
            if conn.execute(sa.update(data_table).where(*local).values(values)).rowcount == 0:
                return None
            freed = _files(conn, [row.key])
            conn.execute(sa.delete(entries_table).where(entries_table.c.key == row.key))
            self._insert_entries(conn, row.key, entries)
            told = self._wrote(conn, row, entries, was_shared)
        self._committed(told, {row.writer: grow})
        return freed

    def fill(self, row: DataRow, entries: Sequence[EntryRow]) -> bool:
        """Stores a lazy drag's data under its pending row (keeping its time); False if it is gone."""
        with self._engine.begin() as conn:
            was_shared = self._shared(conn, [row.key])
            self._admit(conn, row.writer, row.total_size)
            updated = conn.execute(
                sa.update(data_table)
                .where(data_table.c.key == row.key, data_table.c.pending.is_(True))
                .values(
                    pending=False,
                    record_count=row.record_count,
                    summary=dict(row.summary),
                    total_size=row.total_size,
                    tag=row.tag,
                    extras=dict(row.extras),
                    share_options=row.share_options.value,
                )
            )
            if updated.rowcount == 0:
                return False
            self._insert_entries(conn, row.key, entries)
            stored = conn.execute(sa.select(data_table).where(data_table.c.key == row.key)).one()
            told = self._wrote(conn, _data_row(stored, {}), entries, was_shared)
        self._committed(told, {stored.writer: row.total_size})
        return True

    def delete(self, keys: Iterable[str]) -> list[str]:
        """Deletes the data under `keys`; returns the freed blob files."""
        keys = list(keys)
        freed: list[str] = []
        told = False
        sizes: dict[str, int] = {}
        with self._engine.begin() as conn:
            for chunk in _chunks(keys):
                for writer, n in _sizes(conn, chunk).items():
                    sizes[writer] = sizes.get(writer, 0) - n
                freed += _files(conn, chunk)
                told |= self._deleted(conn, self._shared(conn, chunk))
                for table in (entries_table, grants_table, data_table):
                    conn.execute(sa.delete(table).where(table.c.key.in_(chunk)))
        self._committed(told, sizes)
        return freed

    def delete_pending(self, key: str) -> bool:
        """Deletes a lazy drag that was never loaded; False if it was loaded (or is gone)."""
        with self._engine.begin() as conn:
            found = conn.execute(
                sa.select(data_table.c.writer).where(data_table.c.key == key, data_table.c.pending.is_(True))
            ).first()
            if found is None:
                return False
            sizes = {writer: -n for writer, n in _sizes(conn, [key]).items()}
            told = self._deleted(conn, self._shared(conn, [key]))
            conn.execute(sa.delete(grants_table).where(grants_table.c.key == key))
            conn.execute(sa.delete(data_table).where(data_table.c.key == key))
        self._committed(told, sizes)
        return True

    def grant(self, key: str, bundle: str, keep: bool) -> bool:
        """Lets `bundle` read `key` (a repeated grant updates `keep`); False if there is no such key."""
        with self._engine.begin() as conn:
            if conn.execute(sa.select(data_table.c.key).where(data_table.c.key == key)).first() is None:
                return False
            where = (grants_table.c.key == key, grants_table.c.bundle == bundle)
            if conn.execute(sa.update(grants_table).where(*where).values(keep=keep)).rowcount == 0:
                conn.execute(sa.insert(grants_table).values(key=key, bundle=bundle, keep=keep))
        return True

    def sweep(self) -> list[str]:
        """Deletes the data whose time is up; returns the freed blob files."""
        return self.sweep_some(None)[1]

    def sweep_some(self, limit: int | None) -> tuple[int, list[str]]:
        """Deletes at most `limit` (None: all) of the data whose time is up, the longest expired first,
        so that one write stays short however much expired; returns how many and the freed blob files."""
        t = data_table
        with self._engine.connect() as conn:
            q = sa.select(t.c.key).where(t.c.expires_at <= self._clock()).order_by(t.c.expires_at)
            keys = list(conn.scalars(q.limit(limit)))
        return len(keys), self.delete(keys)

    def recover(self) -> tuple[int, int]:
        """At start: drops lazy drags (their sources are gone), expired data and orphan blob files.
        Returns (data deleted, orphan files removed)."""
        with self._engine.connect() as conn:
            pending = list(
                conn.scalars(
                    sa.select(data_table.c.key).where(
                        data_table.c.pending.is_(True), data_table.c.origin == ""
                    )
                )
            )
        freed = self.delete(pending) + self.sweep()
        self.blobs.remove(freed)
        with self._engine.connect() as conn:
            referenced = set(
                conn.scalars(
                    sa.select(entries_table.c.blob_file).where(entries_table.c.blob_file.is_not(None))
                )
            )
        return len(pending), self.blobs.remove_orphans(referenced)

    # ---- reads (any thread) ----

    def get(self, key: str) -> DataRow | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(data_table).where(data_table.c.key == key)).first()
            return None if row is None else _data_row(row, _grants(conn, [key]).get(key, {}))

    def by_intention(self, intention: Intention) -> list[DataRow]:
        return self._rows(data_table.c.intention == intention.value)

    def listing(
        self, intention: Intention, caller: str, own: bool, after: tuple[float, str] | None, limit: int
    ) -> list[DataRow]:
        """A page of at most `limit` rows of `intention` after `after` (created_at, key), in that order:
        those `caller` wrote (`own`), or those it may see (`access._visible`, in SQL), so that a listing
        never loads the data other apps hid from it, nor all of it at once."""
        t = data_table
        mine = t.c.writer == caller
        shown = t.c.visibility == Visibility.ALL.value, t.c.share_options != ShareOptions.IN_APP.value
        where = [t.c.intention == intention.value, mine if own else sa.or_(mine, sa.and_(*shown))]
        if after is not None:
            where.append(sa.tuple_(t.c.created_at, t.c.key) > sa.tuple_(*after))
        with self._engine.connect() as conn:
            q = sa.select(t).where(*where).order_by(t.c.created_at, t.c.key).limit(limit)
            rows = conn.execute(q).all()
            grants = _grants(conn, [r.key for r in rows])
        return [_data_row(r, grants.get(r.key, {})) for r in rows]

    def cross_device(self) -> list[DataRow]:
        """This device's data that reaches paired devices (`access.leaves_device`), loaded."""
        return self._rows(*_leaving(data_table), data_table.c.pending.is_(False), data_table.c.origin == "")

    # ---- remote rows (the bridge, inside its transaction `conn`) ----

    def put_remote(self, conn: sa.Connection, row: DataRow, entries: Sequence[EntryRow]) -> bool:
        """Stores or replaces another device's data (grants given here stay). False, and nothing
        changed, when this device's own data holds the key."""
        assert row.origin and not row.pending
        t = data_table
        existing = conn.execute(sa.select(t.c.origin).where(t.c.key == row.key)).scalar_one_or_none()
        if existing == "":
            return False
        values = _data_values(row)
        if existing is None:
            conn.execute(sa.insert(t).values(values))
        else:
            del values["key"]
            conn.execute(sa.update(t).where(t.c.key == row.key).values(values))
            conn.execute(sa.delete(entries_table).where(entries_table.c.key == row.key))
        self._insert_entries(conn, row.key, [dataclasses.replace(e, blob_file=None) for e in entries])
        return True

    def delete_remote(self, conn: sa.Connection, key: str) -> bool:
        """Deletes another device's data under `key` (never this device's); False if there is none."""
        remote = (data_table.c.key == key, data_table.c.origin != "")
        if conn.execute(sa.select(data_table.c.key).where(*remote)).first() is None:
            return False
        for table in (entries_table, grants_table):
            conn.execute(sa.delete(table).where(table.c.key == key))
        conn.execute(sa.delete(data_table).where(*remote))
        return True

    def entries(self, key: str, after_seq: int = -1, limit: int = 64) -> list[tuple[int, EntryRow]]:
        """(seq, entry) in order, a page of at most `limit` after `after_seq`."""
        t = entries_table
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.key == key, t.c.seq > after_seq).order_by(t.c.seq).limit(limit)
            ).all()
        return [
            (
                r.seq,
                EntryRow(
                    r.record, r.type, r.value, r.blob_size, r.blob_field, r.blob_text, r.blob, r.blob_file
                ),
            )
            for r in rows
        ]

    # ---- custom types ----

    def load_types(self) -> list[dict[str, Any]]:
        """The persisted custom type declarations (UtdRegistry's form), in registration order."""
        with self._engine.connect() as conn:
            return [
                dict(d)
                for d in conn.scalars(sa.select(types_table.c.declaration).order_by(types_table.c.seq))
            ]

    def add_types(self, declarations: Sequence[Mapping[str, Any]]) -> None:
        with self._engine.begin() as conn:
            top = conn.scalar(sa.select(sa.func.max(types_table.c.seq))) or 0
            conn.execute(
                sa.insert(types_table),
                [
                    {
                        "type_id": d["type_id"],
                        "seq": top + i,
                        "owner": d["owner_bundle"],
                        "declaration": dict(d),
                    }
                    for i, d in enumerate(declarations, 1)
                ],
            )

    def remove_types(self, type_ids: Sequence[str]) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.delete(types_table).where(types_table.c.type_id.in_(list(type_ids))))

    # ---- internals ----

    # The replication hears only of this device's data that leaves it (`access.leaves_device`); data
    # that stops leaving (an update, a lazy drag's fill) counts as deleted. Each returns whether it told.

    def _shared(self, conn: sa.Connection, keys: list[str]) -> list[str]:
        """Which of `keys` are this device's data that leaves it now (none without a replication)."""
        if self.replication is None:
            return []
        t = data_table
        return list(conn.scalars(sa.select(t.c.key).where(t.c.key.in_(keys), t.c.origin == "", *_leaving(t))))

    def _wrote(
        self, conn: sa.Connection, row: DataRow, entries: Sequence[EntryRow], was_shared: Sequence[str] = ()
    ) -> bool:
        if self.replication is None:
            return False
        if leaves_device(row.runtime()):
            self.replication.wrote(conn, row, entries)
            return True
        return self._deleted(conn, list(was_shared))

    def _deleted(self, conn: sa.Connection, keys: list[str]) -> bool:
        if self.replication is None or not keys:
            return False
        self.replication.deleted(conn, keys)
        return True

    def _committed(self, told: bool, sizes: Mapping[str, int] | None = None) -> None:
        if told and self.replication is not None:
            self.replication.after_commit()
        if sizes and self.usage is not None:
            for writer, delta in sizes.items():
                self.usage.add(writer, delta)

    def _admit(self, conn: sa.Connection, writer: str, grow: int) -> None:
        if grow > 0 and self.usage is not None:
            refused = self.usage.refusal(conn, writer, grow)
            if refused is not None:
                raise ResourceExhausted(refused)

    @staticmethod
    def bytes_of(conn: sa.Connection, bundle: str) -> int:
        """What `bundle`'s data on this device takes in its usage (a lazy drag not loaded yet: its row)."""
        t = data_table
        size = ROW_OVERHEAD + sa.case((t.c.pending.is_(True), 0), else_=t.c.total_size)
        q = sa.select(sa.func.coalesce(sa.func.sum(size), 0)).where(t.c.writer == bundle, t.c.origin == "")
        return int(conn.execute(q).scalar_one())

    def _stamp(self, row: DataRow) -> DataRow:
        now = self._clock()
        return dataclasses.replace(
            row,
            timestamp_ms=int(now * 1000),
            created_at=now,
            expires_at=now + self._ttl,
            grants=dict(row.grants),
        )

    def _insert_entries(self, conn: sa.Connection, key: str, entries: Sequence[EntryRow]) -> None:
        if entries:
            conn.execute(
                sa.insert(entries_table),
                [{"key": key, "seq": seq, **dataclasses.asdict(e)} for seq, e in enumerate(entries)],
            )

    def _rows(self, *where: Any) -> list[DataRow]:
        with self._engine.connect() as conn:
            t = data_table
            rows = conn.execute(sa.select(t).where(*where).order_by(t.c.created_at, t.c.key)).all()
            grants = _grants(conn, [r.key for r in rows])
        return [_data_row(r, grants.get(r.key, {})) for r in rows]


def _leaving(t: sa.Table) -> tuple[Any, ...]:
    """`access.leaves_device` in SQL."""
    return (
        t.c.share_options == ShareOptions.CROSS_DEVICE.value,
        t.c.visibility == Visibility.ALL.value,
        t.c.intention.in_([Intention.DATA_HUB.value, Intention.DRAG.value]),
    )


def _data_values(row: DataRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "intention": row.intention.value,
        "writer": row.writer,
        "visibility": row.visibility.value,
        "share_options": row.share_options.value,
        "tag": row.tag,
        "extras": dict(row.extras),
        "timestamp_ms": row.timestamp_ms,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "record_count": row.record_count,
        "summary": dict(row.summary),
        "total_size": row.total_size,
        "pending": row.pending,
        "origin": row.origin,
        "copied": row.copied,
    }


def _data_row(r: Any, grants: Mapping[str, bool]) -> DataRow:
    return DataRow(
        key=r.key,
        intention=Intention(r.intention),
        writer=r.writer,
        record_count=r.record_count,
        summary=dict(r.summary),
        total_size=r.total_size,
        visibility=Visibility(r.visibility),
        share_options=ShareOptions(r.share_options),
        tag=r.tag,
        extras=dict(r.extras),
        pending=r.pending,
        timestamp_ms=r.timestamp_ms,
        created_at=r.created_at,
        expires_at=r.expires_at,
        grants=grants,
        origin=r.origin,
        copied=r.copied,
    )


def _add_columns(engine: sa.Engine) -> None:
    """Adds the columns and indexes a database made by an older version lacks (each column has a
    server default)."""
    with engine.begin() as conn:
        present = {c["name"] for c in sa.inspect(conn).get_columns(data_table.name)}
        for column in data_table.columns:
            if column.name not in present:
                ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {data_table.name} ADD COLUMN {ddl}"))
        for index in data_table.indexes:
            index.create(conn, checkfirst=True)


def _grants(conn: sa.Connection, keys: list[str]) -> dict[str, dict[str, bool]]:
    found: dict[str, dict[str, bool]] = {}
    for chunk in _chunks(keys):
        for key, bundle, keep in conn.execute(sa.select(grants_table).where(grants_table.c.key.in_(chunk))):
            found.setdefault(key, {})[bundle] = keep
    return found


def _sizes(conn: sa.Connection, keys: list[str]) -> dict[str, int]:
    """What the data of this device under `keys` takes in each writer's usage."""
    t = data_table
    size = sa.func.sum(ROW_OVERHEAD + sa.case((t.c.pending.is_(True), 0), else_=t.c.total_size))
    q = sa.select(t.c.writer, size).where(t.c.key.in_(keys), t.c.origin == "").group_by(t.c.writer)
    return {writer: int(n) for writer, n in conn.execute(q)}


def _files(conn: sa.Connection, keys: list[str]) -> list[str]:
    t = entries_table
    return list(conn.scalars(sa.select(t.c.blob_file).where(t.c.key.in_(keys), t.c.blob_file.is_not(None))))


def _chunks(keys: list[str], size: int = 500) -> Iterable[list[str]]:
    """Bounded IN lists."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]

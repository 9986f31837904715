"""The providers' manifests and the tables the daemon hosts for them.

Each declared table lives in one physical table `ds_{id}` of the daemon's database (ids come from the
`ds_tables` registry), so names never reach SQL text and every provider shares one engine. Registering
a manifest again migrates: new columns are added, nothing is dropped or retyped. A distributed table
also names its mirror, the KV store that carries its rows to paired devices
(`datamgr.datashare.distributed`); a table may become distributed later, never stop being it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from datamgr.datashare import index_ddl
from datamgr.datashare.manifest import Manifest, StoreSpec, TableSpec, effective_access, parse_manifest
from datamgr.datashare.uri import DataShareUri
from datamgr.errors import InvalidArgument, NotFound

metadata = sa.MetaData()
providers_table = sa.Table(
    "ds_providers",
    metadata,
    sa.Column("bundle", sa.String(128), primary_key=True),
    sa.Column("manifest_json", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
tables_table = sa.Table(
    "ds_tables",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bundle", sa.String(128), nullable=False),
    sa.Column("store", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.UniqueConstraint("bundle", "store", "name"),
)

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SQL_TYPES: dict[str, sa.types.TypeEngine] = {
    "integer": _BIGINT,
    "real": sa.Double(),
    "text": sa.Text(),
    "blob": sa.LargeBinary(),
    "boolean": sa.Boolean(),
}


# The system bundle (datamgr.bundles.SYSTEM_BUNDLE_PREFIX) of the distributed tables' mirror stores.
MIRROR_BUNDLE = "ohos.distributeddata.datashare"


def mirror_store_id(bundle: str, store: str, table: str) -> str:
    """The KV store id of a distributed table's mirror: the same on every device. Its name is the
    table's path made a store name, cut to fit, and a hash of the path (the cut and the replaced dots
    could make two paths alike)."""
    path = f"{bundle}/{store}/{table}"
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return f"{MIRROR_BUNDLE}/{re.sub(r'[^A-Za-z0-9_]', '_', path)[:111]}_{digest}"


@dataclass(frozen=True, slots=True)
class HostedTable:
    """A provider table the daemon hosts: its spec, access rules and SQLAlchemy table; `mirror` is the
    KV store id of a distributed table's mirror (None: the table is not distributed)."""

    uri: str
    manifest: Manifest
    store: StoreSpec
    spec: TableSpec
    table: sa.Table
    read_permission: str | None
    write_permission: str | None
    allow_list: tuple[str, ...] | None
    mirror: str | None = None

    @property
    def bundle(self) -> str:
        return self.manifest.bundle

    @property
    def pk(self) -> sa.Column:
        return self.table.c[self.spec.primary_key]


def _column(spec: TableSpec, name: str) -> sa.Column:
    col = spec.column(name)
    is_pk = name == spec.primary_key
    kwargs: dict = {"primary_key": is_pk, "nullable": col.nullable and not is_pk}
    if is_pk:
        kwargs["autoincrement"] = col.type == "integer"
    if col.default is not None:
        kwargs["server_default"] = sa.text(
            sa.literal(col.default).compile(compile_kwargs={"literal_binds": True}).string
        )
    return sa.Column(name, SQL_TYPES[col.type], **kwargs)


def _sa_table(meta: sa.MetaData, table_id: int | str, spec: TableSpec, uri: str = "") -> sa.Table:
    """The physical table `ds_{table_id}` (or the one named `table_id`) as `spec` declares it."""
    name = table_id if isinstance(table_id, str) else f"ds_{table_id}"
    return sa.Table(name, meta, *(_column(spec, c.name) for c in spec.columns), info={"uri": uri})


class ProviderRegistry:
    """Manifests and hosted tables; `register` runs on the database writer thread."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        metadata.create_all(engine)
        self._manifests: dict[str, Manifest] = {}
        self._tables: dict[tuple[str, str, str], HostedTable] = {}
        self._mirrors: dict[str, HostedTable] = {}
        self._load()

    def _load(self) -> None:
        with self._engine.connect() as conn:
            ids = {(b, s, n): i for i, b, s, n in conn.execute(sa.select(tables_table))}
            rows = conn.execute(sa.select(providers_table.c.manifest_json)).scalars().all()
        manifests = {m.bundle: m for m in map(parse_manifest, rows)}
        meta = sa.MetaData()
        tables = {}
        for m in manifests.values():
            for store in m.stores:
                for spec in store.tables:
                    key = (m.bundle, store.name, spec.name)
                    uri = f"datashare:///{m.bundle}/{store.name}/{spec.name}"
                    tables[key] = self._hosted(m, store, spec, _sa_table(meta, ids[key], spec, uri))
        self._manifests, self._tables = manifests, tables
        self._mirrors = {h.mirror: h for h in tables.values() if h.mirror is not None}

    @staticmethod
    def _hosted(m: Manifest, store: StoreSpec, spec: TableSpec, table: sa.Table) -> HostedTable:
        access = effective_access(m, store, spec)
        return HostedTable(
            uri=f"datashare:///{m.bundle}/{store.name}/{spec.name}",
            manifest=m,
            store=store,
            spec=spec,
            table=table,
            read_permission=access.read_permission,
            write_permission=access.write_permission,
            allow_list=tuple(access.allow_list) if access.allow_list is not None else None,
            mirror=mirror_store_id(m.bundle, store.name, spec.name) if spec.distributed else None,
        )

    def indexed(self) -> list[HostedTable]:
        """Every table with an indexed column (`datamgr.datashare.index_ddl`)."""
        return [h for h in self._tables.values() if h.spec.vector_columns or h.spec.fulltext_columns]

    def tables(self, bundle: str) -> list[HostedTable]:
        """The tables `bundle` declares."""
        return [h for (b, _s, _n), h in self._tables.items() if b == bundle]

    def by_mirror(self, store_id: str) -> HostedTable | None:
        """The distributed table whose mirror is KV store `store_id`."""
        return self._mirrors.get(store_id)

    def check(self, manifest: Manifest) -> None:
        """Raises InvalidArgument if `manifest` may not replace the registered one (see register)."""
        old = self._manifests.get(manifest.bundle)
        if old is not None:
            _check_compatible(old, manifest)

    def manifest(self, bundle: str) -> Manifest | None:
        return self._manifests.get(bundle)

    def resolve(self, uri: DataShareUri) -> HostedTable | None:
        """The hosted table a URI names, or None when the provider does not declare it."""
        if not uri.is_table:
            return None
        return self._tables.get((uri.bundle, uri.store, uri.table))

    def require(self, uri: DataShareUri) -> HostedTable:
        hosted = self.resolve(uri)
        if hosted is None:
            if uri.bundle not in self._manifests:
                raise NotFound(f"no provider {uri.bundle} is registered (uri {uri})")
            raise NotFound(f"{uri.bundle} declares no table {'/'.join(uri.path)} (uri {uri})")
        return hosted

    def register(
        self,
        manifest: Manifest,
        on_distributed: Callable[[sa.Connection, HostedTable], None] | None = None,
    ) -> tuple[list[str], list[str]]:
        """Stores the manifest and creates or migrates its tables in one transaction;
        `on_distributed(conn, hosted)` runs in it for each existing table that becomes distributed.

        Returns the table URIs and the columns added (as uri#column).
        """
        old = self._manifests.get(manifest.bundle)
        self.check(manifest)
        added: list[str] = []
        uris: list[str] = []
        with self._engine.begin() as conn:
            for store in manifest.stores:
                for spec in store.tables:
                    uri = f"datashare:///{manifest.bundle}/{store.name}/{spec.name}"
                    uris.append(uri)
                    key = (manifest.bundle, store.name, spec.name)
                    existing = self._tables.get(key)
                    if existing is None:
                        inserted = conn.execute(
                            sa.insert(tables_table).values(bundle=key[0], store=key[1], name=key[2])
                        ).inserted_primary_key
                        assert inserted is not None
                        table_id = inserted[0]
                        created = _sa_table(sa.MetaData(), table_id, spec)
                        created.create(conn)
                        index_ddl.install(conn, created, spec, None)
                        continue
                    for col in spec.columns:
                        if col.name in existing.table.c:
                            continue
                        if not col.nullable and col.default is None:
                            raise InvalidArgument(
                                f"new column {col.name} of {uri} must be nullable or have a default"
                            )
                        ddl = sa.schema.CreateColumn(_column(spec, col.name)).compile(dialect=conn.dialect)
                        conn.execute(sa.text(f"ALTER TABLE {existing.table.name} ADD COLUMN {ddl}"))
                        added.append(f"{uri}#{col.name}")
                    current = _sa_table(sa.MetaData(), existing.table.name, spec, uri)
                    index_ddl.install(conn, current, spec, existing.spec)
                    if spec.distributed and not existing.spec.distributed and on_distributed is not None:
                        table = _sa_table(sa.MetaData(), existing.table.name, spec, uri)
                        on_distributed(conn, self._hosted(manifest, store, spec, table))
            values = {"manifest_json": manifest.model_dump_json(), "updated_at": time.time()}
            if old is None:
                conn.execute(sa.insert(providers_table).values(bundle=manifest.bundle, **values))
            else:
                conn.execute(
                    sa.update(providers_table)
                    .where(providers_table.c.bundle == manifest.bundle)
                    .values(**values)
                )
        self._load()
        return uris, added

    def remove(self, bundle: str) -> None:
        """Forgets a provider's manifest and drops its tables (when its app is removed)."""
        with self._engine.begin() as conn:
            for (b, _s, _n), hosted in self._tables.items():
                if b == bundle:
                    index_ddl.drop(conn, hosted.table, hosted.spec)
                    hosted.table.drop(conn)
            conn.execute(sa.delete(tables_table).where(tables_table.c.bundle == bundle))
            conn.execute(sa.delete(providers_table).where(providers_table.c.bundle == bundle))
        self._load()


def _check_compatible(old: Manifest, new: Manifest) -> None:
    """A new manifest may add stores, tables and nullable/defaulted columns; it may not take any away."""
    for store in old.stores:
        for spec in store.tables:
            found = new.table(store.name, spec.name)
            where = f"datashare:///{old.bundle}/{store.name}/{spec.name}"
            if found is None:
                raise InvalidArgument(f"the manifest drops table {where}; removing tables is not supported")
            _, new_spec = found
            if new_spec.primary_key != spec.primary_key:
                raise InvalidArgument(
                    f"the manifest changes the primary key of {where}; that is not supported"
                )
            if spec.distributed and not new_spec.distributed:
                raise InvalidArgument(
                    f"the manifest stops distributing {where}; that is not supported (its rows are on "
                    "paired devices, whose changes would keep arriving)"
                )
            if spec.distributed and new_spec.label != spec.label:
                raise InvalidArgument(
                    f"the manifest changes the security level of distributed table {where} from "
                    f"S{spec.label} to S{new_spec.label}; a synced table's label never changes"
                )
            new_cols = {c.name: c for c in new_spec.columns}
            for col in spec.columns:
                if col.name not in new_cols:
                    raise InvalidArgument(
                        f"the manifest drops column {col.name} of {where}; that is not supported"
                    )
                if new_cols[col.name].type != col.type:
                    raise InvalidArgument(
                        f"the manifest changes column {col.name} of {where} from {col.type} to "
                        f"{new_cols[col.name].type}; that is not supported"
                    )

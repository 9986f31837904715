"""The devices this device trusts: the ones it was paired with, kept in the database.

A trusted device is its certificate (pinned: its fingerprint is what peer calls are checked against)
plus its name, where it was last reached and two security levels: the one the owner confirmed (at
pairing or later, `datamgr devices set-level`), which sync and UDMF use, and the one the device
asserted about itself, kept only to show. A device is not believed about its own level: unless the
owner says otherwise it gets `DEFAULT_LEVEL`, SL1, the level every device has, which may hold only S1
data (the UDMF runtime store's label); anything more sensitive goes to it once the owner confirms
more. A database from before levels were confirmed has its devices lowered to SL1 at start (logged).
The
list is mirrored in memory and swapped whole on every change, so the event loop (per-call checks) and
gRPC's handshake thread (the mutual-TLS root certificates) read it without locks or database access.
Methods that change it run on the database writer thread (they commit).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import sqlalchemy as sa

from datamgr.errors import NotFound
from datamgr.security_levels import check_device_level

log = logging.getLogger("datamgr.device")
DEFAULT_LEVEL = 1  # what a paired device gets unless its owner confirms another level

metadata = sa.MetaData()
trusted_devices = sa.Table(
    "dm_trusted_devices",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("security_level", sa.Integer, nullable=False),  # confirmed by the owner
    sa.Column("asserted_level", sa.Integer, nullable=False, server_default="0"),  # 0: not known
    sa.Column("address", sa.String(300), nullable=False, default=""),
    sa.Column("paired_at", sa.Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    device_id: str
    name: str
    fingerprint: str
    cert_pem: str
    security_level: int  # SL1-SL5, as the owner confirmed it: what sync and UDMF go by
    address: str = ""  # host:port of its peer server when last known ("" if never)
    paired_at: float = 0.0
    asserted_level: int = 0  # what the device said of itself at pairing (0: not known); shown only


@dataclass(frozen=True, slots=True)
class _Snapshot:
    by_id: dict[str, TrustedDevice]
    by_fingerprint: dict[str, TrustedDevice]
    version: int


class TrustStore:
    """The trusted-device list: `add`/`remove`/`set_address`/`set_level` write (writer thread), the
    rest read memory."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        metadata.create_all(engine)
        _confirm_levels(engine)
        self._snap = _Snapshot({}, {}, 0)
        self._reload()

    def _reload(self) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(trusted_devices)).mappings().all()
        devices = [TrustedDevice(**row) for row in rows]
        self._snap = _Snapshot(
            {d.device_id: d for d in devices},
            {d.fingerprint: d for d in devices},
            self._snap.version + 1,
        )

    @property
    def version(self) -> int:
        """Goes up on every change; the peer server reloads its root certificates when it does."""
        return self._snap.version

    def is_trusted(self, fingerprint: str) -> bool:
        return fingerprint in self._snap.by_fingerprint

    def by_fingerprint(self, fingerprint: str) -> TrustedDevice | None:
        return self._snap.by_fingerprint.get(fingerprint)

    def get(self, device_id: str) -> TrustedDevice:
        device = self._snap.by_id.get(device_id)
        if device is None:
            raise NotFound(f"device {device_id} is not paired with this device (datamgr devices trusted)")
        return device

    def all(self) -> list[TrustedDevice]:
        return sorted(self._snap.by_id.values(), key=lambda d: (d.name, d.device_id))

    def roots_pem(self) -> bytes:
        """Every trusted certificate, concatenated: the roots client certificates must chain to."""
        return "".join(d.cert_pem for d in self.all()).encode()

    def add(self, device: TrustedDevice) -> TrustedDevice:
        """Trusts `device`, replacing what was known about the same device id (pairing again)."""
        device = replace(device, paired_at=device.paired_at or time.time())
        with self._engine.begin() as conn:
            conn.execute(sa.delete(trusted_devices).where(trusted_devices.c.device_id == device.device_id))
            conn.execute(
                sa.delete(trusted_devices).where(trusted_devices.c.fingerprint == device.fingerprint)
            )
            conn.execute(
                sa.insert(trusted_devices).values(
                    device_id=device.device_id,
                    fingerprint=device.fingerprint,
                    name=device.name,
                    cert_pem=device.cert_pem,
                    security_level=check_device_level(device.security_level),
                    asserted_level=device.asserted_level,
                    address=device.address,
                    paired_at=device.paired_at,
                )
            )
        self._reload()
        return device

    def remove(self, device_id: str) -> TrustedDevice:
        """Stops trusting `device_id` at once (NotFound if it is not trusted); returns what it was."""
        device = self.get(device_id)
        with self._engine.begin() as conn:
            conn.execute(sa.delete(trusted_devices).where(trusted_devices.c.device_id == device_id))
        self._reload()
        return device

    def set_address(self, device_id: str, address: str) -> TrustedDevice:
        """Records where a trusted device's peer server was last seen (pairing, discovery)."""
        device = self.get(device_id)
        if device.address == address:
            return device
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(trusted_devices)
                .where(trusted_devices.c.device_id == device_id)
                .values(address=address)
            )
        self._reload()
        return self.get(device_id)

    def set_level(self, device_id: str, level: int) -> TrustedDevice:
        """The owner confirms `level` (SL1-SL5) for a trusted device; sync and UDMF use it at once."""
        check_device_level(level)
        self.get(device_id)
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(trusted_devices)
                .where(trusted_devices.c.device_id == device_id)
                .values(security_level=level)
            )
        self._reload()
        return self.get(device_id)


def _confirm_levels(engine: sa.Engine) -> None:
    """A table from before levels were confirmed holds what devices asserted: that is kept as
    `asserted_level`, and every device is lowered to `DEFAULT_LEVEL` until its owner confirms more."""
    t = trusted_devices
    with engine.begin() as conn:
        if "asserted_level" in {c["name"] for c in sa.inspect(conn).get_columns(t.name)}:
            return
        ddl = sa.schema.CreateColumn(t.c.asserted_level).compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {t.name} ADD COLUMN {ddl}"))
        for device_id, name, level in conn.execute(
            sa.select(t.c.device_id, t.c.name, t.c.security_level)
        ).all():
            if level > DEFAULT_LEVEL:
                log.warning(
                    "paired device %s (%s) asserted SL%d, which nobody confirmed: it is SL%d now "
                    "(datamgr devices set-level %s LEVEL to confirm another)",
                    name,
                    device_id,
                    level,
                    DEFAULT_LEVEL,
                    device_id,
                )
        conn.execute(sa.update(t).values(asserted_level=t.c.security_level, security_level=DEFAULT_LEVEL))

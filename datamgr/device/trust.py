"""The devices this device trusts: the ones it was paired with, kept in the database.

A trusted device is its certificate (pinned: its fingerprint is what peer calls are checked against)
plus what it said about itself at pairing (name, security level) and where it was last reached. The
list is mirrored in memory and swapped whole on every change, so the event loop (per-call checks) and
gRPC's handshake thread (the mutual-TLS root certificates) read it without locks or database access.
Methods that change it run on the database writer thread (they commit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import sqlalchemy as sa

from datamgr.errors import NotFound

metadata = sa.MetaData()
trusted_devices = sa.Table(
    "dm_trusted_devices",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("security_level", sa.Integer, nullable=False),
    sa.Column("address", sa.String(300), nullable=False, default=""),
    sa.Column("paired_at", sa.Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    device_id: str
    name: str
    fingerprint: str
    cert_pem: str
    security_level: int  # SL1-SL5, as the device declared it at pairing
    address: str = ""  # host:port of its peer server when last known ("" if never)
    paired_at: float = 0.0


@dataclass(frozen=True, slots=True)
class _Snapshot:
    by_id: dict[str, TrustedDevice]
    by_fingerprint: dict[str, TrustedDevice]
    version: int


class TrustStore:
    """The trusted-device list: `add`/`remove`/`set_address` write (writer thread), the rest read memory."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        metadata.create_all(engine)
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
                    security_level=device.security_level,
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

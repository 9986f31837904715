"""The trusted-device list: kept in the database, read from memory, every change visible at once."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from datamgr.device.identity import Identity, load_identity
from datamgr.device.trust import TrustedDevice, TrustStore
from datamgr.errors import InvalidArgument, NotFound
from datamgr.storage import create_engine


def _device(ident: Identity, name: str = "phone", level: int = 3) -> TrustedDevice:
    return TrustedDevice(ident.device_id, name, ident.fingerprint, ident.cert_pem.decode(), level)


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore(create_engine(f"sqlite:///{tmp_path / 'trust.db'}"))


def test_add_list_remove(tmp_path: Path, store: TrustStore) -> None:
    a, b = load_identity(tmp_path / "a"), load_identity(tmp_path / "b")
    assert store.all() == [] and not store.is_trusted(a.fingerprint)
    added = store.add(_device(a, "tablet"))
    store.add(_device(b, "laptop", 1))
    assert added.paired_at > 0
    assert [d.name for d in store.all()] == ["laptop", "tablet"]
    assert store.is_trusted(a.fingerprint) and store.is_trusted(b.fingerprint)
    assert store.get(a.device_id) == added
    assert store.by_fingerprint(b.fingerprint).security_level == 1  # type: ignore[union-attr]

    removed = store.remove(a.device_id)
    assert removed.device_id == a.device_id
    assert not store.is_trusted(a.fingerprint) and store.by_fingerprint(a.fingerprint) is None
    assert [d.device_id for d in store.all()] == [b.device_id]
    with pytest.raises(NotFound, match="not paired"):
        store.get(a.device_id)
    with pytest.raises(NotFound):
        store.remove(a.device_id)


def test_every_change_bumps_the_version_and_roots(tmp_path: Path, store: TrustStore) -> None:
    a = load_identity(tmp_path / "a")
    v0 = store.version
    assert store.roots_pem() == b""
    store.add(_device(a))
    assert store.version > v0
    assert store.roots_pem() == a.cert_pem
    v1 = store.version
    store.set_address(a.device_id, "127.0.0.1:4000")
    assert store.version > v1 and store.get(a.device_id).address == "127.0.0.1:4000"
    v2 = store.version
    store.set_address(a.device_id, "127.0.0.1:4000")  # no change, no new version
    assert store.version == v2
    store.remove(a.device_id)
    assert store.version > v2 and store.roots_pem() == b""


def test_pairing_again_replaces_the_old_certificate(tmp_path: Path, store: TrustStore) -> None:
    a = load_identity(tmp_path / "a")
    store.add(_device(a, "old name"))
    a.cert_path.unlink()
    renewed = load_identity(tmp_path / "a")  # same key and id, new certificate
    store.add(_device(renewed, "new name"))
    assert [d.name for d in store.all()] == ["new name"]
    assert store.is_trusted(renewed.fingerprint)
    assert not store.is_trusted(a.fingerprint)


def test_the_list_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trust.db'}"
    a = load_identity(tmp_path / "a")
    TrustStore(create_engine(url)).add(_device(a))
    reopened = TrustStore(create_engine(url))
    assert reopened.is_trusted(a.fingerprint)
    assert reopened.get(a.device_id).cert_pem == a.cert_pem.decode()


def test_the_owner_confirms_the_level_the_device_only_asserts(tmp_path: Path, store: TrustStore) -> None:
    a = load_identity(tmp_path / "a")
    store.add(dataclasses.replace(_device(a, level=1), asserted_level=5))
    v = store.version
    assert (store.get(a.device_id).security_level, store.get(a.device_id).asserted_level) == (1, 5)
    raised = store.set_level(a.device_id, 3)
    assert (raised.security_level, raised.asserted_level) == (3, 5) and store.version > v
    assert TrustStore(store._engine).get(a.device_id).security_level == 3  # kept
    for bad in (0, 6):
        with pytest.raises(InvalidArgument, match="SL1-SL5"):
            store.set_level(a.device_id, bad)
    with pytest.raises(NotFound):
        store.set_level("f" * 64, 2)


def test_levels_devices_asserted_before_confirmation_existed_are_lowered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database of an older version holds what each device asserted, as its level: kept as the
    asserted level, and the device is SL1 until its owner confirms more."""
    engine = create_engine(f"sqlite:///{tmp_path / 'trust.db'}")
    a, b = load_identity(tmp_path / "a"), load_identity(tmp_path / "b")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE dm_trusted_devices (device_id VARCHAR(64) PRIMARY KEY, fingerprint VARCHAR(64) "
            "NOT NULL UNIQUE, name VARCHAR(128) NOT NULL, cert_pem TEXT NOT NULL, security_level INTEGER "
            "NOT NULL, address VARCHAR(300) NOT NULL, paired_at FLOAT NOT NULL)"
        )
        for ident, level in ((a, 5), (b, 1)):
            conn.exec_driver_sql(
                "INSERT INTO dm_trusted_devices VALUES (?, ?, 'old', ?, ?, '', 1.0)",
                (ident.device_id, ident.fingerprint, ident.cert_pem.decode(), level),
            )
    with caplog.at_level(logging.WARNING, "datamgr.device"):
        store = TrustStore(engine)
    assert (store.get(a.device_id).security_level, store.get(a.device_id).asserted_level) == (1, 5)
    assert (store.get(b.device_id).security_level, store.get(b.device_id).asserted_level) == (1, 1)
    assert "asserted SL5, which nobody confirmed" in caplog.text and b.device_id not in caplog.text
    store.set_level(a.device_id, 4)
    assert TrustStore(engine).get(a.device_id).security_level == 4  # the lowering happens once

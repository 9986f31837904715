"""The trusted-device list: kept in the database, read from memory, every change visible at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamgr.device.identity import Identity, load_identity
from datamgr.device.trust import TrustedDevice, TrustStore
from datamgr.errors import NotFound
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

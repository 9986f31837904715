"""Remote rows in the UDMF store (another device's CROSS_DEVICE data): put and delete inside the
caller's transaction, never over this device's own data, kept by the start-up recovery, expired like
any row; and a database made before remote rows existed gains their columns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_store import WRITER, row

from udmf._blobs import BlobDir
from udmf.access import ShareOptions
from udmf.keys import Intention, new_key
from udmf.store import DataRow, EntryRow, UdmfStore, metadata


def _store(tmp_path: Path, engine: sa.Engine | None = None) -> UdmfStore:
    engine = engine or sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    return UdmfStore(engine, BlobDir(tmp_path / "blobs"), ttl_s=10.0, clock=lambda: 1_000.0)


def _remote(intention: Intention = Intention.DATA_HUB, **kw: object) -> DataRow:
    """A paired device's CROSS_DEVICE row, as its descriptor brings it."""
    fields: dict[str, object] = {
        "share_options": ShareOptions.CROSS_DEVICE,
        "origin": "a" * 32,
        "expires_at": 2_000.0,
    }
    return row(intention, **{**fields, **kw})


def test_remote_rows_are_put_replaced_and_deleted_in_the_callers_transaction(tmp_path: Path) -> None:
    store = _store(tmp_path)
    engine = store._engine
    row = _remote(copied=True)
    entry = EntryRow(0, "general.plain-text", b"v", 3, "", True, b"abc")
    with engine.begin() as conn:
        assert store.put_remote(conn, row, [entry])
    assert store.get(row.key) == row and [e for _, e in store.entries(row.key)] == [entry]
    assert store.grant(row.key, "com.example.target", keep=True)
    with engine.begin() as conn:  # a new descriptor: the grant given here stays
        assert store.put_remote(conn, dataclasses.replace(row, tag="new", copied=False), [])
    assert store.get(row.key) == dataclasses.replace(
        row, tag="new", copied=False, grants={"com.example.target": True}
    )
    assert store.entries(row.key) == []
    assert store.cross_device() == []  # not this device's to offer
    with engine.begin() as conn:
        assert store.delete_remote(conn, row.key) and not store.delete_remote(conn, row.key)
    assert store.get(row.key) is None


def test_this_devices_own_data_is_never_touched(tmp_path: Path) -> None:
    store = _store(tmp_path)
    mine = store.insert(dataclasses.replace(_remote(), origin=""), [])
    with store._engine.begin() as conn:
        assert not store.put_remote(conn, dataclasses.replace(_remote(), key=mine.key), [])
        assert not store.delete_remote(conn, mine.key)
    assert store.get(mine.key) == dataclasses.replace(mine, grants={})
    assert store.replace(_remote(key=mine.key), []) is not None  # an update of its own data works
    remote = _remote()
    with store._engine.begin() as conn:
        store.put_remote(conn, remote, [])
    assert store.replace(remote, []) is None  # UpdateData never replaces a remote row


def test_recovery_keeps_remote_rows_and_expiry_removes_them(tmp_path: Path) -> None:
    store = _store(tmp_path)
    live, old = _remote(Intention.DRAG), _remote(expires_at=999.0)
    with store._engine.begin() as conn:
        store.put_remote(conn, live, [])
        store.put_remote(conn, old, [])
    assert store.recover() == (0, 0)  # no lazy drag of this device dropped; the expired one swept
    assert store.get(live.key) is not None and store.get(old.key) is None


def test_an_older_database_gains_the_remote_columns(tmp_path: Path) -> None:
    _older_database_gains_the_columns(tmp_path, sa.create_engine(f"sqlite:///{tmp_path / 'old.sqlite'}"))


@pytest.mark.postgres
def test_the_same_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        _older_database_gains_the_columns(tmp_path, engine)
        store = _store(tmp_path, engine)
        row = _remote(copied=True)
        with engine.begin() as conn:
            assert store.put_remote(conn, row, [EntryRow(0, "general.plain-text", b"v")])
        assert store.get(row.key) == row and len(store.entries(row.key)) == 1
        with engine.begin() as conn:
            assert store.delete_remote(conn, row.key)
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def _older_database_gains_the_columns(tmp_path: Path, engine: sa.Engine) -> None:
    with engine.begin() as conn:  # udmf_data as the version before remote rows made it
        conn.execute(
            sa.text(
                "CREATE TABLE udmf_data (key VARCHAR(200) PRIMARY KEY, intention VARCHAR(16) NOT NULL, "
                "writer VARCHAR(128) NOT NULL, visibility VARCHAR(16) NOT NULL, share_options VARCHAR(16) "
                "NOT NULL, tag TEXT NOT NULL, extras JSON NOT NULL, timestamp_ms BIGINT NOT NULL, "
                "created_at FLOAT NOT NULL, expires_at FLOAT NOT NULL, record_count INTEGER NOT NULL, "
                "summary JSON NOT NULL, total_size BIGINT NOT NULL, pending BOOLEAN NOT NULL)"
            )
        )
    key = str(new_key(Intention.DATA_HUB, WRITER))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO udmf_data (key, intention, writer, visibility, share_options, tag, extras, "
                "timestamp_ms, created_at, expires_at, record_count, summary, total_size, pending) VALUES "
                "(:key, 'DataHub', :writer, 'all', 'cross_app', '', '{}', 0, 1000, 5000, 0, '{}', 0, false)"
            ),
            {"key": key, "writer": WRITER},
        )
    store = _store(tmp_path, engine)
    row = store.get(key)
    assert row is not None and (row.origin, row.copied) == ("", False)
    _store(tmp_path, engine)  # a second start adds nothing

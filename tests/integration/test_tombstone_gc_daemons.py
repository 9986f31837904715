"""Tombstone collection between two real paired daemons: a delete that reached the peer leaves no
tombstone on the writer once the collection interval has passed, one that did not stays, and the
collected delete does not come back."""

from __future__ import annotations

import sqlite3
import time

import pytest
from harness import Daemon
from test_sync_daemons import BUNDLE, SINGLE, _open, pair_factory  # noqa: F401 - pair_factory is a fixture

from datamgr.client.kv import SecurityLevel, SyncMode
from datamgr.errors import NotFound

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STORE_ID = f"{BUNDLE}/notes"


def _tombstones(d: Daemon) -> list[bytes]:
    """The keys of the store's tombstones, read from the daemon's SQLite file."""
    conn = sqlite3.connect(f"file:{d.data_dir / 'datamgr.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT key FROM kv_entries WHERE store_id = ? AND value IS NULL ORDER BY key", (STORE_ID,)
        ).fetchall()
    finally:
        conn.close()
    return [bytes(key) for (key,) in rows]


def _wait_for(d: Daemon, expected: list[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := _tombstones(d)) != expected:
        assert time.monotonic() < deadline, f"tombstones {seen}, expected {expected}:\n{d.log()[-3000:]}"
        time.sleep(0.1)


def test_a_delete_the_peer_acked_is_collected_and_an_unsynced_one_stays(pair_factory) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, b = pair_factory(DATAMGR_SYNC__TOMBSTONE_GC_INTERVAL_S="0.3")
    with a.client() as ca, b.client() as cb:
        sa = _open(ca, "notes", SINGLE, SecurityLevel.S1)
        sb = _open(cb, "notes", SINGLE, SecurityLevel.S1)
        sa.put_batch({"synced": 1, "unsynced": 2, "kept": 3})
        sa.delete("synced")
        assert sa.sync([b.device_id], SyncMode.PUSH_ONLY)[b.device_id].code == "OK"
        with pytest.raises(NotFound):
            sb.get("synced")  # B holds the delete, and acked it
        sa.delete("unsynced")  # B has never heard of this one

        _wait_for(a.daemon, [b"unsynced"])  # the acked tombstone goes within a few intervals
        time.sleep(1.5)  # five more intervals: the one B has not acked stays
        assert _tombstones(a.daemon) == [b"unsynced"]

        # both ways now: the collected delete stays a delete on both, the other one reaches B
        result = sa.sync([b.device_id], SyncMode.PUSH_PULL)[b.device_id]
        assert result.code == "OK", result
        for store in (sa, sb):
            for key in ("synced", "unsynced"):
                with pytest.raises(NotFound):
                    store.get(key)
            assert store.get("kept") == 3
        # the pull brought B's own copy of the collected tombstone back (A had never pulled from B): a
        # new change here, which goes once B acks it, like the second one
        assert b"synced" in _tombstones(a.daemon)
        again = sa.sync([b.device_id], SyncMode.PUSH_ONLY)[b.device_id]
        assert (again.code, again.pushed) == ("OK", 0), again  # B holds that very delete already
        _wait_for(a.daemon, [])
        quiet = sa.sync([b.device_id], SyncMode.PUSH_PULL)[b.device_id]
        assert (quiet.code, quiet.pushed, quiet.pulled) == ("OK", 0, 0), quiet  # nothing comes back
        time.sleep(0.6)
        assert _tombstones(a.daemon) == []

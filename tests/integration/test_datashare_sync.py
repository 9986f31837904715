"""DataShare distributed tables between two real daemons on loopback, paired: the same provider manifest
on both; inserts, updates and deletes on one reach the other's table and its subscribers (automatic
sync), concurrent updates of a row converge to one winner (manual Sync), an acknowledged write survives
kill -9 on its way to the peer, and the manifests and calls that may not sync are refused."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_sync_daemons import BUNDLE, DATASYNC, Side, pair_factory  # noqa: F401 - pair_factory is a fixture

from datamgr.client import DataShareHelper, DataSharePredicates, SyncMode, SyncResult
from datamgr.errors import InvalidArgument, NotFound, PermissionDenied
from datamgr.v1 import datashare_pb2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

URI = f"datashare:///{BUNDLE}/main/notes"
READ, WRITE = "com.example.permission.READ_NOTES", "com.example.permission.WRITE_NOTES"
READER = "com.example.reader"


def manifest(pk_type: str = "text", **table: Any) -> dict[str, Any]:
    columns = [
        {"name": "uid", "type": pk_type},
        {"name": "title", "type": "text", "nullable": False},
        {"name": "n", "type": "integer"},
        {"name": "done", "type": "boolean", "default": False},
        {"name": "photo", "type": "blob"},
    ]
    spec = {"name": "notes", "primary_key": "uid", "columns": columns, "distributed": True, **table}
    return {
        "bundle": BUNDLE,
        "read_permission": READ,
        "write_permission": WRITE,
        "stores": [{"name": "main", "tables": [spec, {**spec, "name": "local", "distributed": False}]}],
    }


def _helper(side: Side, token: str | None = None) -> DataShareHelper:
    return side.daemon.helper(token or side.token)


def _register(*sides: Side) -> None:
    for side in sides:
        with _helper(side) as h:
            h.register_provider(manifest())


def _rows(h: DataShareHelper, uri: str = URI) -> list[dict[str, Any]]:
    preds = DataSharePredicates().order_by_asc("uid")
    cols = ["uid", "title", "n", "done", "photo"]
    with h.query(uri, preds, cols) as rs:
        return list(rs.rows())


def _until(what: Callable[[], bool], message: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _sync(h: DataShareHelper, device: str, mode: SyncMode = SyncMode.PUSH_PULL) -> SyncResult:
    """DataShareHelper.sync with one device: its result."""
    [(synced, result)] = h.sync(URI, [device], mode).items()
    assert synced == device
    return result


def _share_cli(side: Side, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "datamgr", "share", *args, "--address", side.daemon.address]
    env = {**side.daemon.env(), "DATAMGR_TOKEN": side.token, "COLUMNS": "200"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_writes_on_either_side_reach_the_other_and_its_subscribers(pair_factory) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, b = pair_factory(auto=True)
    _register(a, b)
    reader = b.daemon.add_app(READER, READ)
    with _helper(a) as ha, _helper(b, reader) as hr:
        stream = hr._stub.Subscribe(datashare_pb2.SubscribeRequest(uri=URI), metadata=hr._md)
        assert next(stream).WhichOneof("event") == "subscribed"
        # each step reaches B before the next (a push carries only the latest change of each row)
        ha.insert(URI, {"uid": "u1", "title": "milk", "photo": b"\x00\xff"})
        ha.batch_insert(URI, [{"uid": f"b{i:03d}", "title": f"item {i}", "n": i} for i in range(200)])
        _until(lambda: len(_rows(hr)) == 201, f"A's inserts did not reach B:\n{b.daemon.log()[-3000:]}")
        ha.update(URI, DataSharePredicates().equal_to("uid", "u1"), {"done": True, "n": 7})
        _until(lambda: _rows(hr)[-1]["done"] is True, "A's update did not reach B")
        ha.delete(URI, DataSharePredicates().less_than("uid", "b100"))
        _until(lambda: len(_rows(hr)) == 101, "A's delete did not reach B")
        assert _rows(hr) == _rows(ha)
        assert _rows(hr)[-1] == {"uid": "u1", "title": "milk", "n": 7, "done": True, "photo": b"\x00\xff"}

        # B's reader saw each change, as a change from A
        seen: dict[str, set[str]] = {"INSERT": set(), "UPDATE": set(), "DELETE": set()}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                while len(seen["INSERT"]) < 201 or not seen["UPDATE"] or len(seen["DELETE"]) < 100:
                    change = pool.submit(next, stream).result(15).change
                    assert change.uri == URI and change.device_id == a.device_id
                    kind = datashare_pb2.ChangeType.Name(change.type).removeprefix("CHANGE_TYPE_")
                    seen[kind] |= {v.values["uid"].string_value for v in change.values}
            finally:
                stream.cancel()
        assert seen == {
            "INSERT": {"u1", *(f"b{i:03d}" for i in range(200))},
            "UPDATE": {"u1"},
            "DELETE": {f"b{i:03d}" for i in range(100)},
        }

        # the replicated rows are B's table: B's permissions apply to them
        outsider = b.daemon.add_app("com.example.game")
        with _helper(b, outsider) as ho, pytest.raises(PermissionDenied, match=READ):
            _rows(ho)
        # B's own writes go back to A; the table that is not distributed stays on its device
        with _helper(b) as hb:
            hb.update(URI, DataSharePredicates().equal_to("uid", "u1"), {"title": "oat milk"})
            hb.insert(f"datashare:///{BUNDLE}/main/local", {"uid": "here", "title": "stays"})
        _until(lambda: _rows(ha)[-1]["title"] == "oat milk", "B's update did not reach A")
        assert _rows(ha, f"datashare:///{BUNDLE}/main/local") == []


def test_concurrent_updates_converge_and_manual_sync(pair_factory) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, b = pair_factory()  # no automatic sync: only Sync moves data
    _register(a, b)
    with _helper(a) as ha, _helper(b) as hb:
        ha.insert(URI, {"uid": "r", "title": "first"})
        status = _sync(ha, b.device_id, SyncMode.PUSH_ONLY)
        assert (status.code, status.pushed, status.pulled) == ("OK", 1, 0), status
        assert _rows(hb)[0]["title"] == "first"

        # both update the row before they sync: the later write wins, on both
        ha.update(URI, DataSharePredicates().equal_to("uid", "r"), {"title": "alpha's", "n": 1})
        time.sleep(0.01)
        hb.update(URI, DataSharePredicates().equal_to("uid", "r"), {"title": "bravo's"})
        status = _sync(ha, b.device_id)
        assert status.code == "OK" and status.pulled == 1, status
        assert _rows(ha) == _rows(hb)
        assert _rows(ha)[0] == {"uid": "r", "title": "bravo's", "n": None, "done": False, "photo": None}
        nothing = _sync(hb, a.device_id)
        assert (nothing.code, nothing.pushed, nothing.pulled) == ("OK", 0, 0), nothing

        # what Sync refuses
        stranger = _sync(ha, "f" * 32)
        assert stranger.code == "ERROR" and stranger.message.startswith("UNAUTHENTICATED")
        with pytest.raises(InvalidArgument, match="not distributed"):
            ha.sync(f"datashare:///{BUNDLE}/main/local")

    # the CLI: `datamgr share sync`, one row per device; exit 1 unless every device is OK
    with _helper(b) as hb:
        hb.insert(URI, {"uid": "cli", "title": "from the command line"})
    ok = _share_cli(b, "sync", URI, "--device", a.device_id, "--mode", "push", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)[a.device_id] == {"code": "OK", "message": "", "pushed": 1, "pulled": 0}
    with _helper(a) as ha:
        assert [r["title"] for r in _rows(ha) if r["uid"] == "cli"] == ["from the command line"]
    refused = _share_cli(b, "sync", URI, "--device", "f" * 32)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stdout
    no_sync = a.daemon.add_app(READER, READ)
    with _helper(a, no_sync) as hr, pytest.raises(PermissionDenied, match=DATASYNC):
        _sync(hr, b.device_id)


def test_an_acknowledged_write_reaches_the_peer_after_kill_9(pair_factory) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, b = pair_factory()
    _register(a, b)
    with _helper(a) as ha:
        ha.batch_insert(URI, [{"uid": f"k{i:05d}", "title": "x" * 100} for i in range(2000)])
        ha.insert(URI, {"uid": "last", "title": "acknowledged"})
    a.daemon.kill9()
    a.daemon.start()
    with _helper(a) as ha, _helper(b) as hb:
        assert _sync(ha, b.device_id).code == "OK"
        assert len(_rows(hb)) == 2001 and _rows(hb)[-1]["title"] == "acknowledged"


def test_manifests_that_cannot_sync_are_refused_and_register_nothing(pair_factory) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, _ = pair_factory()
    with _helper(a) as ha:
        with pytest.raises(InvalidArgument, match=r"auto-increment.*text primary key"):
            ha.register_provider(manifest(pk_type="integer"))
        with pytest.raises(NotFound, match=f"no provider {BUNDLE}"):
            _rows(ha)
        with pytest.raises(InvalidArgument, match="security_level"):
            ha.register_provider(manifest(security_level=5))
    other = a.daemon.add_app("com.example.other")  # without DISTRIBUTED_DATASYNC
    with _helper(a, other) as ho, pytest.raises(PermissionDenied, match=DATASYNC):
        ho.register_provider({**manifest(), "bundle": "com.example.other"})
    with _helper(a) as ha:
        ha.register_provider(manifest())  # the good one still registers
        assert _rows(ha) == []

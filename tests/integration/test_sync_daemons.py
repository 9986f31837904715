"""KV store sync between two real daemons on loopback, paired, over the mutual-TLS peer port: manual
sync both ways, conflicts and deletes, device key spaces, the security-label rule, automatic sync to a
remote subscriber, refusal after unpairing, and a kill -9 in the middle of a large sync."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from harness import Daemon
from test_pairing import _owner, _pair

from datamgr.client.kv import (
    KvStoreClient,
    KvStoreType,
    SecurityLevel,
    SingleKVStore,
    SubscribeType,
    SyncMode,
)
from datamgr.device.identity import load_identity
from datamgr.device.peer_channel import open_peer_channel
from datamgr.errors import DatamgrError, NotFound
from datamgr.sync.v1 import sync_pb2, sync_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BUNDLE = "com.example.notes"
DATASYNC = "ohos.permission.DISTRIBUTED_DATASYNC"
ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__ENABLED": "false"}
SINGLE = KvStoreType.SINGLE_VERSION


@dataclass
class Side:
    daemon: Daemon
    device_id: str
    token: str

    def client(self) -> KvStoreClient:
        return KvStoreClient.connect(self.daemon.address, self.token)


def _start(tmp_path: Path, name: str, level: int, **env: str) -> Daemon:
    settings = {
        **ENV,
        "DATAMGR_DISCOVERY__DEVICE_NAME": name,
        "DATAMGR_DISCOVERY__SECURITY_LEVEL": str(level),
        **env,
    }
    return Daemon(tmp_path / name, env=settings).start()


def _side(d: Daemon) -> Side:
    with _owner(d) as owner:
        device_id = owner.identity().device_id
    return Side(d, device_id, d.add_app(BUNDLE, DATASYNC))


@pytest.fixture
def pair_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Daemon] = []

    def make(level_b: int = 4, auto: bool = False, **env_a: str) -> tuple[Side, Side]:
        flag = {"DATAMGR_SYNC__AUTO": str(auto).lower()}
        a = _start(tmp_path, "alpha", 4, **flag, **env_a)
        started.append(a)
        b = _start(tmp_path, "bravo", level_b, **flag)
        started.append(b)
        _pair(a, b)
        return _side(a), _side(b)

    yield make
    for d in started:
        if d.proc is not None:
            d.stop()


def _open(client: KvStoreClient, name: str, kind: KvStoreType, level: SecurityLevel) -> SingleKVStore:
    return client.get_kv_store(name, kind=kind, security_level=level)


def test_put_conflicts_and_deletes_converge(pair_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = pair_factory()
    with a.client() as ca, b.client() as cb:
        sa = _open(ca, "notes", SINGLE, SecurityLevel.S2)
        sb = _open(cb, "notes", SINGLE, SecurityLevel.S2)
        sa.put("k1", "from alpha")
        sa.put_batch({f"n{i}": i for i in range(50)})
        [(peer, result)] = sa.sync([b.device_id], SyncMode.PUSH_ONLY).items()
        assert peer == b.device_id and result.code == "OK", result
        assert result.pushed == 51 and result.pulled == 0
        assert sb.get("k1") == "from alpha"
        assert sb.get_result_size("n") == 50

        # the same key written on both: after a sync both ways, both hold the same winner
        sa.put("x", "alpha's")
        sb.put("x", "bravo's")
        sb.put("only_b", True)
        result = sa.sync([b.device_id])[b.device_id]
        assert result.code == "OK", result
        assert sa.get("x") == sb.get("x") == "bravo's"  # written later, so the higher HLC wins
        assert sa.get("only_b") is True
        sb.put("x", "bravo again")
        sa.put("x", "alpha last")
        assert sb.sync([a.device_id], SyncMode.PUSH_PULL)[a.device_id].code == "OK"
        assert sa.get("x") == sb.get("x") == "alpha last"

        # a delete on either side reaches the other
        sa.delete("k1")
        sb.delete("n7")
        assert sa.sync([b.device_id])[b.device_id].code == "OK"
        for store in (sa, sb):
            with pytest.raises(NotFound):
                store.get("k1")
            with pytest.raises(NotFound):
                store.get("n7")
        assert sorted(e.key for e in sa.get_entries()) == sorted(e.key for e in sb.get_entries())

        # nothing new: a sync moves nothing
        again = sa.sync([b.device_id])[b.device_id]
        assert (again.code, again.pushed, again.pulled) == ("OK", 0, 0)

        # the CLI: datamgr kv sync STORE --device ID --mode push
        sa.put("cli", "via the cli")
        done = _cli(a, "sync", "notes", "--device", b.device_id, "--mode", "push", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[b.device_id] == {
            "code": "OK", "message": "", "pushed": 1, "pulled": 0
        }  # fmt: skip
        assert sb.get("cli") == "via the cli"
        refused = _cli(a, "sync", "notes", "--device", "f" * 32)
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stdout


def _cli(side: Side, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "datamgr", "kv", *args, "--address", side.daemon.address]
    env = {**side.daemon.env(), "DATAMGR_TOKEN": side.token, "COLUMNS": "200"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_device_collaboration_and_security_labels(pair_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = pair_factory(level_b=2)  # B is SL2: it may hold S1-S2 data
    with a.client() as ca, b.client() as cb:
        da = _open(ca, "shared", KvStoreType.DEVICE_COLLABORATION, SecurityLevel.S1)
        db = _open(cb, "shared", KvStoreType.DEVICE_COLLABORATION, SecurityLevel.S1)
        da.put("k", "alpha's own")
        db.put("k", "bravo's own")
        assert da.sync([b.device_id])[b.device_id].code == "OK"
        # each device's key space, read-only on the other
        assert db.get("k") == "bravo's own"
        assert db.get("k", device_id=a.device_id) == "alpha's own"
        assert da.get("k", device_id=b.device_id) == "bravo's own"
        assert [e.key for e in db.get_entries(device_id=a.device_id)] == ["k"]
        with pytest.raises(DatamgrError, match="read-only"):
            _put_into(db, a.device_id)
        assert db.get("k", device_id=a.device_id) == "alpha's own"

        # an S4 store does not go to an SL2 device, in either direction
        sa4 = _open(ca, "secrets", SINGLE, SecurityLevel.S4)
        sb4 = _open(cb, "secrets", SINGLE, SecurityLevel.S4)
        sa4.put("pin", "1234")
        pushed = sa4.sync([b.device_id], SyncMode.PUSH_ONLY)[b.device_id]
        assert pushed.code == "SKIPPED" and "SL2" in pushed.message and pushed.pushed == 0, pushed
        both = sa4.sync([b.device_id], SyncMode.PUSH_PULL)[b.device_id]  # B may send S4 data to SL4 A
        assert both.code == "PARTIAL" and "push skipped" in both.message and both.pushed == 0, both
        assert sb4.get_result_size() == 0
        pulled = sb4.sync([a.device_id], SyncMode.PULL_ONLY)[a.device_id]
        assert pulled.code == "SKIPPED" and pulled.pulled == 0, pulled
        assert sb4.get_result_size() == 0
        # while S2 data does
        sa2 = _open(ca, "plain", SINGLE, SecurityLevel.S2)
        sb2 = _open(cb, "plain", SINGLE, SecurityLevel.S2)
        sa2.put("k", 1)
        assert sb2.sync([a.device_id], SyncMode.PULL_ONLY)[a.device_id].code == "OK"
        assert sb2.get("k") == 1

        # a device that is not paired gets a status saying so; options that differ do not sync
        stranger = sa2.sync(["f" * 32])["f" * 32]
        assert stranger.code == "ERROR" and stranger.message.startswith("UNAUTHENTICATED"), stranger
        _open(cb, "mismatch", KvStoreType.DEVICE_COLLABORATION, SecurityLevel.S2)
        other = _open(ca, "mismatch", SINGLE, SecurityLevel.S2)
        result = other.sync([b.device_id])[b.device_id]
        assert result.code == "ERROR" and "FAILED_PRECONDITION" in result.message, result


def _put_into(store: SingleKVStore, device_id: str) -> None:
    """A put into `device_id`'s key space (the SDK never sends one; the wire can)."""
    from datamgr.connection import call
    from datamgr.v1 import kv_pb2

    value = store._put("k", "forged").value
    req = kv_pb2.PutRequest(store=store.name, key="k", value=value, device_id=device_id)
    call(store._stub.Put, req, metadata=store._md)


def _next_within(sub: object, timeout: float) -> object:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(sub.next)  # type: ignore[attr-defined]
        try:
            return future.result(timeout)
        finally:
            sub.close()  # type: ignore[attr-defined]


def test_automatic_sync_reaches_a_remote_subscriber(pair_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = pair_factory(auto=True)
    with a.client() as ca, b.client() as cb:
        sb = _open(cb, "live", SINGLE, SecurityLevel.S1)
        sa = _open(ca, "live", SINGLE, SecurityLevel.S1)
        sub = sb.on_data_change(SubscribeType.REMOTE)
        started = time.monotonic()
        for i in range(20):  # many writes, coalesced into few pushes
            sa.put(f"auto{i}", i)
        note = _next_within(sub, 10.0)
        assert note.insert_entries or note.update_entries  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while sb.get_result_size("auto") < 20:
            assert time.monotonic() < deadline, "automatic sync did not deliver every write"
            time.sleep(0.05)
        assert time.monotonic() - started < 10
        assert sb.get("auto19") == 19
        # B's own writes reach A the same way
        sb.put("back", "from bravo")
        deadline = time.monotonic() + 10
        while True:
            try:
                assert sa.get("back") == "from bravo"
                break
            except NotFound:
                assert time.monotonic() < deadline
                time.sleep(0.05)


def test_unpaired_devices_are_refused_at_once(pair_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = pair_factory()
    with a.client() as ca, b.client() as cb:
        sa = _open(ca, "notes", SINGLE, SecurityLevel.S1)
        _open(cb, "notes", SINGLE, SecurityLevel.S1)
        sa.put("k", 1)
        assert sa.sync([b.device_id])[b.device_id].code == "OK"
        with _owner(a.daemon) as owner_a:
            assert owner_a.unpair(b.device_id).notified
        began = time.monotonic()
        for store, peer in ((sa, b.device_id), (cb.get_kv_store("notes", kind=None), a.device_id)):
            result = store.sync([peer])[peer]
            assert result.code == "ERROR" and result.message.startswith("UNAUTHENTICATED"), result
        assert time.monotonic() - began < 5

    # and on the wire: B's certificate no longer gets a handshake through A's SyncService
    with _owner(a.daemon) as owner_a:
        ident = owner_a.identity()

    async def handshake() -> None:
        identity = load_identity(b.daemon.data_dir)
        address = f"127.0.0.1:{ident.peer_port}"
        async with open_peer_channel(address, identity, ident.certificate_pem) as channel:
            await sync_pb2_grpc.SyncServiceStub(channel).Handshake(
                sync_pb2.HandshakeRequest(version=1, store_id=f"{BUNDLE}/notes"), timeout=10
            )

    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(handshake())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _last_seq(d: Daemon, store_id: str) -> tuple[int, int]:
    """(kv_stores.last_seq, live rows) of a store, read from the daemon's SQLite file."""
    conn = sqlite3.connect(f"file:{d.data_dir / 'datamgr.db'}?mode=ro", uri=True)
    try:
        (last,) = conn.execute("SELECT last_seq FROM kv_stores WHERE store_id = ?", (store_id,)).fetchone()
        (rows,) = conn.execute(
            "SELECT count(*) FROM kv_entries WHERE store_id = ? AND value IS NOT NULL", (store_id,)
        ).fetchone()
    finally:
        conn.close()
    return last, rows


def test_kill_9_in_the_middle_of_a_large_sync(pair_factory) -> None:  # type: ignore[no-untyped-def]
    n = 20_000
    a, b = pair_factory(DATAMGR_SYNC__BATCH_SIZE="100")
    with a.client() as ca:
        sa = _open(ca, "big", SINGLE, SecurityLevel.S1)
        for start in range(0, n, 128):
            sa.put_batch({f"key{i:06d}": f"value {i}" for i in range(start, min(n, start + 128))})
    with b.client() as cb:
        sb = _open(cb, "big", SINGLE, SecurityLevel.S1)

        failures: list[BaseException] = []

        def run_sync() -> None:
            try:
                with a.client() as c:
                    c.get_kv_store("big", kind=None).sync([b.device_id], SyncMode.PUSH_ONLY)
            except DatamgrError as exc:  # A dies under it
                failures.append(exc)

        syncing = threading.Thread(target=run_sync, daemon=True)
        syncing.start()
        deadline = time.monotonic() + 60
        while (seen := sb.get_result_size()) < 2000:
            assert time.monotonic() < deadline, "the sync did not start"
            time.sleep(0.02)
        a.daemon.kill9()
        syncing.join(30)
        assert not syncing.is_alive() and failures, "the sync call did not fail with A killed"
        time.sleep(0.5)  # a batch B received before the kill commits
        partial = sb.get_result_size()
        assert seen <= partial < n, "the sync ended before the kill: make it larger"

        a.daemon.start()
        with a.client() as ca:
            result = ca.get_kv_store("big", kind=None).sync([b.device_id], SyncMode.PUSH_ONLY)[b.device_id]
        assert result.code == "OK", result
        assert result.pushed == n - partial  # what B had already is not applied again
        entries = sb.get_entries("key")
        assert len(entries) == n
        assert all(e.value == f"value {int(e.key[3:])}" for e in entries)
    last, rows = _last_seq(b.daemon, f"{BUNDLE}/big")
    assert rows == n and last == n  # every change applied exactly once: one local seq each


def test_a_peer_coming_online_is_caught_up(tmp_path: Path) -> None:
    """With discovery on: writes made while B is down reach it when it comes back (A sees it ONLINE,
    at its new peer port), and B's writes made meanwhile reach A."""
    env = {"DATAMGR_DISCOVERY__ENABLED": "true", "DATAMGR_DISCOVERY__OFFLINE_AFTER_S": "10"}
    env |= {"DATAMGR_SYNC__AUTO": "true"}
    a = _start(tmp_path, "alpha", 4, **env)
    b = _start(tmp_path, "bravo", 4, **env)
    try:
        _pair(a, b)
        sa_side, sb_side = _side(a), _side(b)
        with sa_side.client() as ca, sb_side.client() as cb:
            sa = _open(ca, "notes", SINGLE, SecurityLevel.S1)
            _open(cb, "notes", SINGLE, SecurityLevel.S1)
        b.stop()  # says goodbye: A sees it OFFLINE at once
        with sa_side.client() as ca:
            sa = ca.get_kv_store("notes", kind=None)
            sa.put_batch({f"while_down{i}": i for i in range(10)})
            time.sleep(0.5)  # the automatic push finds no reachable peer
            b.start()
            with sb_side.client() as cb:
                sb = cb.get_kv_store("notes", kind=None)
                deadline = time.monotonic() + 30
                while sb.get_result_size("while_down") < 10:
                    assert time.monotonic() < deadline, f"B was not caught up:\n{a.log()[-3000:]}"
                    time.sleep(0.1)
                sb.put("from_b", "hello")
                deadline = time.monotonic() + 15
                while sa.get_result_size("from_b") < 1:
                    assert time.monotonic() < deadline, "B's write did not reach A"
                    time.sleep(0.1)
    finally:
        for d in (a, b):
            if d.proc is not None:
                d.stop()

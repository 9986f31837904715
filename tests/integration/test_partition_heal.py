"""Partition and heal between two daemons in network namespaces joined by a veth pair (discovery on
the veth addresses, paired, automatic sync on): writes on both sides during a partition (the same
keys written on both, deletes against updates) converge to the same winners, the latest (HLC, device
id), once the link is back, whether packets were silently dropped or the link went down; a daemon
killed with SIGKILL during the partition catches up when it restarts after the heal (a SIGKILL in
the middle of a sync is test_sync_daemons'). A partition longer than discovery's offline timeout
heals too: discovery keeps asking for a peer it lost by timeout. The namespaces are removed after
each test, passed or failed. The time from heal to convergence is benchmarks/heal_bench.py's to
measure."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Daemon
from netns import Cut, End, NetnsUnavailable, VethPair, unavailable
from test_discovery import NamespacedDaemon, client, device_id, env, wait_for
from test_pairing import _owner

from datamgr.client.kv import KvStoreClient, KvStoreType, SecurityLevel, SingleKVStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(unavailable() is not None, reason=f"network namespaces: {unavailable()}"),
]

BUNDLE = "com.example.notes"
STORE = "notes"
STORE_ID = f"{BUNDLE}/{STORE}"
DATASYNC = "ohos.permission.DISTRIBUTED_DATASYNC"
HEAL_BOUND_S = 20.0  # a bound that only a stuck sync misses; the time itself is heal_bench's

Version = tuple[int, str, int, bytes | None]  # hlc, origin, vtype, value (None: a tombstone)


@pytest.fixture
def net() -> Iterator[VethPair]:
    try:
        pair = VethPair()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield pair
    finally:
        pair.close()


@dataclass
class Host:
    daemon: Daemon
    device_id: str
    token: str

    def client(self) -> KvStoreClient:
        return KvStoreClient.connect(self.daemon.address, self.token)


def host_env(end: End, name: str, ttl: float = 30.0, auto: bool = True) -> dict[str, str]:
    """Discovery, the peer port and pairing on the namespace's veth address only."""
    return {
        **env(name, ttl=ttl, interface=end.address),
        "DATAMGR_PEER__LISTEN": f"{end.address}:0",
        "DATAMGR_PEER__PAIRING_LISTEN": f"{end.address}:0",
        "DATAMGR_SYNC__AUTO": str(auto).lower(),
    }


def start_hosts(root: Path, net: VethPair, ttl: float = 30.0, auto: bool = True) -> tuple[Host, Host]:
    """Alpha in namespace a, bravo in b: started, paired, each seeing the other online. The caller
    stops them (`stop`); if this fails, it stops what it started."""
    a = NamespacedDaemon(net.a.netns, root / "alpha", host_env(net.a, "alpha", ttl, auto))
    b = NamespacedDaemon(net.b.netns, root / "bravo", host_env(net.b, "bravo", ttl, auto))
    try:
        a.start()
        b.start()
        pair(a, b)
        wait_online(a, b)
        return Host(a, device_id(a), a.add_app(BUNDLE, DATASYNC)), Host(
            b, device_id(b), b.add_app(BUNDLE, DATASYNC)
        )
    except BaseException:
        for d in (b, a):
            if d.proc is not None:
                d.stop()
        raise


def pair(a: Daemon, b: Daemon) -> None:
    """B shows a code, A types it (over the veth pair: B's pairing port is on its namespace address)."""
    with _owner(b) as owner_b, _owner(a) as owner_a:
        events = owner_b.open_window()
        opened = next(events).opened
        owner_a.pair(opened.pairing_address, opened.code)
        final = next(events)
        events.close()
    assert final.WhichOneof("event") == "paired"


def wait_online(*daemons: Daemon, timeout: float = 20.0) -> None:
    for d in daemons:
        with client(d) as c:
            wait_for(
                f"{d.data_dir.name} sees its peer online",
                lambda: any(p.online for p in c.list_devices()),
                timeout,
            )


def open_store(c: KvStoreClient) -> SingleKVStore:
    return c.get_kv_store(STORE, kind=KvStoreType.SINGLE_VERSION, security_level=SecurityLevel.S1)


def rows(d: Daemon, store_id: str = STORE_ID) -> dict[bytes, Version]:
    """Every row of the store, tombstones too, read from the daemon's SQLite file."""
    conn = sqlite3.connect(f"file:{d.data_dir / 'datamgr.db'}?mode=ro", uri=True, timeout=10)
    try:
        found = conn.execute(
            "SELECT key, hlc, origin, vtype, value FROM kv_entries WHERE store_id = ? AND device = ''",
            (store_id,),
        ).fetchall()
    finally:
        conn.close()
    return {
        bytes(k): (hlc, origin, vtype, None if v is None else bytes(v)) for k, hlc, origin, vtype, v in found
    }


def merged(*states: dict[bytes, Version]) -> dict[bytes, Version]:
    """What every replica must hold once synced: per key the version with the highest (hlc, origin)."""
    out: dict[bytes, Version] = {}
    for state in states:
        for key, version in state.items():
            if key not in out or version[:2] > out[key][:2]:
                out[key] = version
    return out


def wait_converged(a: Host, b: Host, expected: dict[bytes, Version], timeout: float = HEAL_BOUND_S) -> float:
    """Seconds until both daemons hold exactly `expected`; fails with both logs after `timeout`."""
    started = time.monotonic()
    while (now := time.monotonic()) - started < timeout:
        if rows(a.daemon) == expected and rows(b.daemon) == expected:
            return now - started
        time.sleep(0.05)
    diff = {
        k for k in expected if rows(a.daemon).get(k) != expected[k] or rows(b.daemon).get(k) != expected[k]
    }
    raise AssertionError(
        f"not converged {timeout} s after the heal; {len(diff)} keys differ, e.g. {sorted(diff)[:5]}\n"
        f"--- alpha\n{a.daemon.log()[-4000:]}\n--- bravo\n{b.daemon.log()[-4000:]}"
    )


def stop(*hosts: Host) -> None:
    for h in hosts:
        if h.daemon.proc is not None:
            h.daemon.stop()


def seed(a: Host, b: Host) -> None:
    """The store opened on both; k00..k39 written on alpha and synced (automatically) to bravo."""
    with b.client() as cb:
        open_store(cb)
    with a.client() as ca:
        open_store(ca).put_batch({f"k{i:02d}": f"base {i}" for i in range(40)})
    expected = rows(a.daemon)
    assert len(expected) == 40
    wait_converged(a, b, expected, timeout=10)


def write_during_partition(sa: SingleKVStore, sb: SingleKVStore) -> None:
    """Each side's own keys, the same keys on both (alternating last writer), deletes against updates.
    The pauses put each write of a key in a later millisecond than the one before (both daemons read
    this machine's clock), so the later write has the higher HLC."""
    steps = [
        lambda: sa.put_batch({f"a{i}": f"alpha only {i}" for i in range(20)}),
        lambda: sb.put_batch({f"b{i}": f"bravo only {i}" for i in range(20)}),
        lambda: sa.put_batch({f"c{i}": "alpha" for i in range(10)}),
        lambda: sb.put_batch({f"c{i}": "bravo" for i in range(10)}),  # later: bravo wins c0-c9 ...
        lambda: sa.put_batch({f"c{i}": "alpha last" for i in range(5, 10)}),  # ... but alpha c5-c9
        lambda: sa.delete_batch([f"k{i:02d}" for i in range(5)]),  # deleted on alpha ...
        lambda: sb.put_batch({f"k{i:02d}": "bravo revives" for i in range(3)}),  # ... k00-k02 updated later
        lambda: sa.put_batch({f"k{i:02d}": "alpha updates" for i in range(10, 15)}),  # updated on alpha ...
        lambda: sb.delete_batch([f"k{i:02d}" for i in range(10, 13)]),  # ... k10-k12 deleted later
        lambda: sb.delete("k20"),
    ]
    for step in steps:
        step()
        time.sleep(0.005)


# The partitions below end before the peers' first refresh query (80% of offline_after_s after they
# met), so discovery lists them online throughout. 6 s of drops outlasts the connection (its keepalive
# gives it up 2-4 s in): the heal is found by reconnecting; after 1 s down, within a ping's 2 s, by TCP
# retransmitting.
@pytest.mark.parametrize(("cut", "partition_s"), [("drop", 6.0), ("down", 1.0)])
def test_writes_on_both_sides_of_a_partition_converge_after_heal(
    tmp_path: Path, net: VethPair, cut: Cut, partition_s: float
) -> None:
    a, b = start_hosts(tmp_path, net)
    try:
        seed(a, b)
        with a.client() as ca, b.client() as cb:
            sa, sb = open_store(ca), open_store(cb)
            net.partition(cut)
            cut_at = time.monotonic()
            write_during_partition(sa, sb)
            expected = merged(rows(a.daemon), rows(b.daemon))
            assert rows(a.daemon) != expected != rows(b.daemon), "the partition let a write through"
            time.sleep(max(0.0, cut_at + partition_s - time.monotonic()))
            assert rows(a.daemon) != expected != rows(b.daemon), "the partition let a write through"
            net.heal()
            wait_converged(a, b, expected)
            # the winners, as an app reads them on either side: the later write of each key
            conflicts = ["bravo", "bravo", "alpha last", "alpha last"]
            against = ["bravo revives", "bravo revives", "alpha updates", "alpha updates"]
            gone = {"k03", "k04", "k10", "k11", "k12", "k20"}
            for store in (sa, sb):
                live = {e.key: e.value for e in store.get_entries()}
                assert [live.get(k) for k in ("c0", "c4", "c5", "c9")] == conflicts
                assert [live.get(k) for k in ("k00", "k02", "k13", "k14")] == against
                assert gone.isdisjoint(live) and len(live) == 20 + 20 + 10 + 40 - len(gone)
    finally:
        stop(a, b)


def test_a_daemon_killed_during_the_partition_catches_up_after_heal(tmp_path: Path, net: VethPair) -> None:
    a, b = start_hosts(tmp_path, net)
    try:
        seed(a, b)
        with a.client() as ca, b.client() as cb:
            sa, sb = open_store(ca), open_store(cb)
            net.partition("drop")
            write_during_partition(sa, sb)
        b.daemon.kill9()  # every write it acknowledged is committed
        expected = merged(rows(a.daemon), rows(b.daemon))
        with a.client() as ca:
            open_store(ca).put("after the kill", "alpha")
        expected = merged(expected, rows(a.daemon))
        time.sleep(1.0)
        net.heal()
        b.daemon.start()  # a new peer port: alpha reaches it where discovery now sees it
        wait_converged(a, b, expected)
    finally:
        stop(a, b)


def test_a_partition_longer_than_the_offline_timeout_heals(tmp_path: Path, net: VethPair) -> None:
    ttl = 3.0
    started = time.monotonic()
    a, b = start_hosts(tmp_path, net, ttl=ttl)
    try:
        seed(a, b)
        net.partition("drop")
        for d in (a.daemon, b.daemon):
            with client(d) as c:
                wait_for("the peer offline", lambda: not any(p.online for p in c.list_devices()), ttl + 5)
        with a.client() as ca:
            open_store(ca).put_batch({f"long{i}": i for i in range(10)})  # no push: bravo is offline
        expected = merged(rows(a.daemon), rows(b.daemon))
        # past zeroconf's browser start-up queries (0, 1, 5 and 14 s after start), which would find
        # the peer again by chance
        time.sleep(max(1.0, started + 16 - time.monotonic()))
        net.heal()
        wait_converged(a, b, expected, timeout=10)
    finally:
        stop(a, b)

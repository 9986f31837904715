"""Discovery between real daemons: two on loopback find each other, see each other go offline on a
goodbye (SIGTERM) and after the TTL (SIGKILL); two in network namespaces joined by a veth pair."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon

from datamgr.client import DeviceClient
from datamgr.errors import FailedPrecondition, PermissionDenied, Unauthenticated

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

TTL_S = 3.0
ONLINE, OFFLINE = 1, 2


def env(name: str, ttl: float = TTL_S, interface: str = "127.0.0.1") -> dict[str, str]:
    return {
        "DATAMGR_AI__ENABLED": "false",
        "DATAMGR_DISCOVERY__DEVICE_NAME": name,
        "DATAMGR_DISCOVERY__OFFLINE_AFTER_S": str(ttl),
        "DATAMGR_DISCOVERY__INTERFACES": json.dumps([interface]),
    }


def client(d: Daemon) -> DeviceClient:
    return DeviceClient(d.address, token_path=d.data_dir / "admin.token")


def device_id(d: Daemon) -> str:
    with client(d) as c:
        return c.local_device().device_id


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def cli_list(d: Daemon) -> list[dict[str, Any]]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATAMGR_")}
    environ["DATAMGR_DATA_DIR"] = str(d.data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "datamgr", "devices", "list", "--json"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(proc.stdout)


class Watcher:
    """WatchDevices in a thread; `next()` returns the next message."""

    def __init__(self, d: Daemon) -> None:
        self._client = client(d)
        self._stream = self._client.watch(timeout=110)
        self._messages: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self._stream:
                self._messages.put(message)
        except Exception as exc:
            self._messages.put(exc)

    def next(self, timeout: float) -> Any:
        message = self._messages.get(timeout=timeout)
        if isinstance(message, Exception):
            raise message
        return message

    def event(self, device: str, timeout: float) -> tuple[int, Any]:
        """The next event about `device` (others' are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if message.HasField("event") and message.event.device.device_id == device:
                return message.event.type, message.event.device

    def close(self) -> None:
        self._client.close()  # ends the stream
        self._thread.join(5)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    a = Daemon(tmp_path / "a", env=env("alpha")).start()
    b = Daemon(tmp_path / "b", env=env("beta"))
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_two_daemons_see_each_other(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    b.start()
    a_id = device_id(a)
    with client(b) as c:
        b_local = c.local_device()
    assert a_id != b_local.device_id
    started = time.monotonic()
    found = wait_for("a lists b", lambda: [d for d in cli_list(a) if d["device_id"] == b_local.device_id], 10)
    assert time.monotonic() - started < 5
    assert found[0] == {
        "device_id": b_local.device_id,
        "name": "beta",
        "security_level": "SL3",
        "fingerprint": b_local.fingerprint,
        "capabilities": ["datashare", "udmf"],
        "addresses": ["127.0.0.1"],
        "port": b.endpoint()["peer_port"],
        "protocol_version": 1,
        "online": True,
        "last_seen": found[0]["last_seen"],
    }
    assert b_local.port == found[0]["port"] != 0
    assert abs(found[0]["last_seen"] - time.time()) < TTL_S + 1
    with client(b) as c:
        wait_for("b lists a", lambda: a_id in [d.device_id for d in c.list_devices()], 10)
        local = c.local_device()
    assert (local.name, local.online, list(local.addresses)) == ("beta", True, ["127.0.0.1"])
    time.sleep(TTL_S * 1.5)  # past the TTL: refreshed, so still online; never itself
    listed = {d["device_id"]: d["online"] for d in cli_list(a)}
    assert listed[b_local.device_id] is True and a_id not in listed


def test_watch_sees_online_then_offline_on_goodbye(tmp_path: Path) -> None:
    # a long TTL: the OFFLINE that arrives quickly can only be the goodbye
    a = Daemon(tmp_path / "a", env=env("alpha", ttl=60)).start()
    b = Daemon(tmp_path / "b", env=env("beta", ttl=60))
    watcher = Watcher(a)
    try:
        assert watcher.next(10).HasField("snapshot")
        b.start()
        b_id = device_id(b)
        kind, device = watcher.event(b_id, 10)
        assert (kind, device.name, device.online) == (ONLINE, "beta", True)
        stopping = time.monotonic()
        assert b.stop() == 0
        kind, device = watcher.event(b_id, 10)
        assert (kind, device.online) == (OFFLINE, False)
        assert time.monotonic() - stopping < 5
        with client(a) as c:
            assert [d.online for d in c.list_devices() if d.device_id == b_id] == [False]
            assert b_id not in [d.device_id for d in c.list_devices(online_only=True)]
    finally:
        watcher.close()
        b.stop()
        a.stop()


def test_killed_peer_goes_offline_after_the_ttl_and_comes_back(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    watcher = Watcher(a)
    try:
        watcher.next(10)  # the snapshot
        b.start()
        b_id = device_id(b)
        assert watcher.event(b_id, 10)[0] == ONLINE
        b.kill9()  # no goodbye
        killed = time.monotonic()
        assert watcher.event(b_id, TTL_S + 5)[0] == OFFLINE
        assert time.monotonic() - killed <= TTL_S + 2
        b.start()  # same data directory: same device, its PTR record still in a's cache
        assert watcher.event(b_id, 10)[0] == ONLINE
    finally:
        watcher.close()


def test_device_calls_need_the_admin_token_or_distributed_datasync(pair: tuple[Daemon, Daemon]) -> None:
    a, _ = pair
    syncer = a.add_app("com.example.sync", "ohos.permission.DISTRIBUTED_DATASYNC")
    other = a.add_app("com.example.game")
    with DeviceClient(a.address, token=syncer) as c:
        assert isinstance(c.list_devices(), list)
    with DeviceClient(a.address, token=other) as c, pytest.raises(PermissionDenied):
        c.list_devices()
    with DeviceClient(a.address, token="nonsense") as c, pytest.raises(Unauthenticated):
        c.local_device()


def test_cli_watch_prints_the_table_then_events(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    b.start()
    b_id = device_id(b)
    wait_for("a lists b", lambda: any(d["device_id"] == b_id for d in cli_list(a)), 10)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATAMGR_")}
    environ["DATAMGR_DATA_DIR"] = str(a.data_dir)
    cmd = [sys.executable, "-m", "datamgr", "devices", "watch", "--json", "--count", "100", "--timeout", "30"]
    with subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, text=True) as watch:
        assert watch.stdout is not None
        lines = (json.loads(line) for line in watch.stdout)
        known = next(m for m in lines if m["device"]["device_id"] == b_id)  # the table: watching now
        assert (known["event"], known["device"]["name"]) == ("known", "beta")
        b.stop()
        offline = next(m for m in lines if m["device"]["device_id"] == b_id)
        assert (offline["event"], offline["device"]["online"]) == ("offline", False)
        watch.terminate()


def test_device_calls_when_discovery_is_off(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "off", env={**env("off"), "DATAMGR_DISCOVERY__ENABLED": "false"}).start()
    try:
        with client(d) as c:
            local = c.local_device()
            assert (local.name, local.online) == ("off", False)
            with pytest.raises(FailedPrecondition, match="discovery is off"):
                c.list_devices()
    finally:
        d.stop()


# two hosts: network namespaces joined by a veth pair


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def namespaces() -> Iterator[tuple[tuple[str, str], tuple[str, str]]]:
    """Two namespaces, each with one end of a veth pair: ((ns, address), (ns, address))."""
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2)")
    tag = f"{os.getpid() % 100_000}"
    subnet = f"10.231.{os.getpid() % 250}"
    ns = (f"dmtest-{tag}-a", f"dmtest-{tag}-b")
    made: list[str] = []
    try:
        for n in ns:
            proc = _ip("netns", "add", n)
            if proc.returncode != 0:
                pytest.skip(f"cannot create network namespaces: {proc.stderr.strip()}")
            made.append(n)
        va, vb = f"dmv{tag}a", f"dmv{tag}b"
        steps = [
            f"link add {va} netns {ns[0]} type veth peer {vb} netns {ns[1]}",
            f"-n {ns[0]} addr add {subnet}.1/24 dev {va}",
            f"-n {ns[1]} addr add {subnet}.2/24 dev {vb}",
            f"-n {ns[0]} link set {va} up",
            f"-n {ns[1]} link set {vb} up",
            f"-n {ns[0]} link set lo up",
            f"-n {ns[1]} link set lo up",
        ]
        for step in steps:
            proc = _ip(*step.split())
            if proc.returncode != 0:
                pytest.skip(f"cannot set up the veth pair (ip {step}): {proc.stderr.strip()}")
        yield (ns[0], f"{subnet}.1"), (ns[1], f"{subnet}.2")
    finally:
        for n in made:
            _ip("netns", "del", n)  # takes its end of the veth pair, and so the pair, with it
        left = _ip("netns", "list").stdout
        assert not any(n in left for n in made), f"network namespaces left behind: {left}"


class NamespacedDaemon(Daemon):
    """A daemon started inside a network namespace (its Unix socket is still reachable from here)."""

    def __init__(self, netns: str, data_dir: Path, env: dict[str, str]) -> None:
        super().__init__(data_dir, env=env)
        self.netns = netns

    def start(self, wait: bool = True, service: str = "") -> Daemon:
        cmd = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "datamgr", "serve"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_healthy()
        return self


def test_daemons_in_two_namespaces_find_each_other_over_veth(
    tmp_path: Path, namespaces: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    (ns_a, addr_a), (ns_b, addr_b) = namespaces
    a = NamespacedDaemon(ns_a, tmp_path / "a", env("alpha", interface=addr_a))
    b = NamespacedDaemon(ns_b, tmp_path / "b", env("beta", interface=addr_b))
    try:
        a.start()
        b.start()
        a_id, b_id = device_id(a), device_id(b)
        with client(a) as ca, client(b) as cb:
            seen_by_a = wait_for("a finds b", lambda: [d for d in ca.list_devices() if d.online], 10)
            seen_by_b = wait_for("b finds a", lambda: [d for d in cb.list_devices() if d.online], 10)
        assert [(d.device_id, list(d.addresses)) for d in seen_by_a] == [(b_id, [addr_b])]
        assert [(d.device_id, list(d.addresses)) for d in seen_by_b] == [(a_id, [addr_a])]
    finally:
        b.stop()
        a.stop()

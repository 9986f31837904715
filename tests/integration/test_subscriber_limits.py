"""Subscribers are bounded in bytes: idle subscribers that never read, fed many 1 MiB changes, grow the
daemon by about the per-app cap, not by what was written; each is closed with RESOURCE_EXHAUSTED naming
the setting, and once they are closed the daemon's memory does not keep growing.

The values are 1 MiB so that the memory is allocated (and freed) as whole blocks the allocator can give
back, and the daemon's RSS measures what the queues hold."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from harness import CONTACTS, PEOPLE_URI, READ, Daemon, contacts_manifest

from datamgr.client import DataSharePredicates, KvStoreClient, SecurityLevel
from datamgr.connection import metadata
from datamgr.v1 import datashare_pb2 as ds_pb
from datamgr.v1 import datashare_pb2_grpc as ds_grpc
from datamgr.v1 import kv_pb2 as kv_pb
from datamgr.v1 import kv_pb2_grpc as kv_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MIB = 1 << 20
ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__ENABLED": "false"}
APP_CAP = 64 * MIB  # the default kv/datashare .app_subscriber_bytes
# What the caps allow (the app's queues) plus what does not depend on how much was written: one
# message in flight per subscriber and what gRPC's flow-control windows take, and the allocator's slack.
ALLOWED_GROWTH = APP_CAP + 48 * MIB
WRITES = 240  # MiB written while the subscribers idle: far more than ALLOWED_GROWTH


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("limits") / "data", env=ENV).start()
    try:
        yield d
        assert "Traceback" not in d.log()
    finally:
        d.stop()


def rss(d: Daemon) -> int:
    """The daemon's resident set in bytes (VmRSS)."""
    with open(f"/proc/{d.endpoint()['pid']}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Idle:
    """A subscription on its own connection that reads its first message and then nothing: the
    daemon has to hold (or drop) what it cannot send."""

    def __init__(self, d: Daemon, open_call: Callable[[grpc.Channel], Any]) -> None:
        self.channel = grpc.insecure_channel(d.address)
        self.call = open_call(self.channel)
        next(self.call)  # subscribed: the subscription is live

    def finish(self, timeout: float = 120.0) -> tuple[str, str]:
        """Reads what the stream still delivers; its status code name and details."""
        result: list[tuple[str, str]] = []

        def drain() -> None:
            try:
                for _ in self.call:
                    pass
                result.append(("OK", ""))
            except grpc.RpcError as exc:
                result.append((exc.code().name, exc.details() or ""))

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        thread.join(timeout)
        self.call.cancel()
        self.channel.close()
        return result[0] if result else ("STILL OPEN", "")


def settle() -> None:
    time.sleep(1.0)  # lets the daemon's loop dispatch what the last writes published


def flood(
    d: Daemon, subscribe: Callable[[grpc.Channel], Any], write: Callable[[int], None], subscribers: int
) -> tuple[int, list[tuple[str, str]], int]:
    """Warms up, opens idle subscribers, writes WRITES values of about 1 MiB; the RSS growth, how
    each subscriber ended, then the growth over as many writes again once they are closed."""
    for i in range(20):
        write(i)  # the allocator, SQLite's cache and gRPC's buffers reach their working size
    settle()
    before = rss(d)
    idle = [Idle(d, subscribe) for _ in range(subscribers)]
    for i in range(WRITES):
        write(i)
    settle()
    grown = rss(d) - before
    ends = [s.finish() for s in idle]
    settle()
    closed = rss(d)
    for i in range(WRITES):
        write(i)
    settle()
    return grown, ends, rss(d) - closed


def test_idle_kv_subscribers_are_closed_and_bounded_in_bytes(daemon: Daemon) -> None:
    token = daemon.add_app("com.example.flood")
    with KvStoreClient.connect(daemon.address, token) as kv:
        store = kv.get_kv_store("flood", security_level=SecurityLevel.S1)

        def subscribe(channel: grpc.Channel) -> Any:
            req = kv_pb.KvStoreServiceSubscribeRequest(store="flood")
            return kv_grpc.KvStoreServiceStub(channel).Subscribe(req, metadata=metadata(token), timeout=300)

        def write(i: int) -> None:
            store.put(f"key-{i % 8}", os.urandom(MIB))

        grown, ends, regrown = flood(daemon, subscribe, write, subscribers=8)  # 8: the limit per store
    assert grown < ALLOWED_GROWTH, f"the daemon grew by {grown / MIB:.0f} MiB"
    assert all(code == "RESOURCE_EXHAUSTED" for code, _ in ends), ends
    assert all("kv.app_subscriber_bytes" in d or "kv.subscriber_bytes" in d for _, d in ends), ends
    assert regrown < 32 * MIB, f"the daemon grew by {regrown / MIB:.0f} MiB more after the subscribers closed"


def test_idle_datashare_subscribers_are_closed_and_bounded_in_bytes(daemon: Daemon) -> None:
    provider = daemon.add_app(CONTACTS)
    reader = daemon.add_app("com.example.dialer", READ)
    with daemon.helper(provider) as h:
        h.register_provider(contacts_manifest(read_permission=READ, write_permission=None))
        photo = 850 * 1024  # under datashare.max_call_bytes (900 KB)

        def subscribe(channel: grpc.Channel) -> Any:
            req = ds_pb.SubscribeRequest(uri=PEOPLE_URI)
            return ds_grpc.DataShareServiceStub(channel).Subscribe(
                req, metadata=metadata(reader), timeout=300
            )

        for i in range(8):
            h.insert(PEOPLE_URI, {"id": i, "name": f"p{i}"})

        def write(i: int) -> None:  # updates: the table stays at 8 rows, within the app's storage quota
            h.update(PEOPLE_URI, DataSharePredicates().equal_to("id", i % 8), {"photo": os.urandom(photo)})

        grown, ends, regrown = flood(daemon, subscribe, write, subscribers=20)
    assert grown < ALLOWED_GROWTH, f"the daemon grew by {grown / MIB:.0f} MiB"
    assert all(code == "RESOURCE_EXHAUSTED" for code, _ in ends), ends
    assert all("datashare." in d and "subscriber_bytes" in d for _, d in ends), ends
    assert regrown < 32 * MIB, f"the daemon grew by {regrown / MIB:.0f} MiB more after the subscribers closed"


def test_the_byte_caps_are_settings(tmp_path: Any) -> None:
    """A deployment can lower them: with a 1 MiB cap one subscriber is closed after a few changes."""
    env = ENV | {"DATAMGR_KV__SUBSCRIBER_BYTES": str(MIB), "DATAMGR_KV__APP_SUBSCRIBER_BYTES": str(8 * MIB)}
    d = Daemon(tmp_path / "data", env=env).start()
    try:
        token = d.add_app("com.example.small")
        with KvStoreClient.connect(d.address, token) as kv:
            store = kv.get_kv_store("s", security_level=SecurityLevel.S1)
            req = kv_pb.KvStoreServiceSubscribeRequest(store="s")
            idle = Idle(d, lambda ch: kv_grpc.KvStoreServiceStub(ch).Subscribe(req, metadata=metadata(token)))
            for i in range(40):
                store.put(f"k{i}", os.urandom(256 * 1024))
            code, details = idle.finish()
        assert code == "RESOURCE_EXHAUSTED"
        assert f"more than {MIB} bytes" in details and "kv.subscriber_bytes" in details
    finally:
        d.stop()

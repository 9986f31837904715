"""Per-app ingress pacing (issue 10, datamgr.ingress) against a real daemon: an app flooding 1 MiB
requests (accepted or refused) has only as many read as its byte rate allows, while another app's
calls go through; past its deadline a paced call is RESOURCE_EXHAUSTED naming the setting."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from harness import Daemon

from datamgr.client import KvStoreClient, SecurityLevel
from datamgr.connection import metadata
from datamgr.v1 import kv_pb2 as pb
from datamgr.v1 import kv_pb2_grpc as pb_grpc
from datamgr.v1 import types_pb2

pytestmark = pytest.mark.integration

MiB = 1 << 20
RATE = MiB  # bytes/s per app
BURST = 2 * MiB  # datashare.max_batch_bytes (1 MiB) + 1 MiB
ENV = {
    "DATAMGR_AI__ENABLED": "false",
    "DATAMGR_APP_INGRESS_BYTES_PER_S": str(RATE),
    "DATAMGR_DATASHARE__MAX_BATCH_BYTES": str(MiB),
}
STORE = "paced"
_apps = itertools.count()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ingress") / "data", env=ENV).start()
    try:
        yield d
    finally:
        d.stop()
    assert "bug in" not in d.log()  # no call ended as INTERNAL


def new_app(daemon: Daemon, name: str) -> tuple[pb_grpc.KvStoreServiceStub, object, grpc.Channel]:
    """A fresh app with its own KV store, and a raw stub to call it with deadlines of our choosing."""
    token = daemon.add_app(f"com.example.{name}{next(_apps)}")
    with KvStoreClient.connect(daemon.address, token) as client:
        client.get_kv_store(STORE, security_level=SecurityLevel.S1)
    channel = grpc.insecure_channel(daemon.address)
    return pb_grpc.KvStoreServiceStub(channel), metadata(token), channel


def put(store: str, key: str, size: int) -> pb.PutRequest:
    return pb.PutRequest(store=store, key=key, value=types_pb2.Value(string_value="x" * size))


def code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("store", "expected"),
    [(STORE, grpc.StatusCode.OK), ("no-such store!", grpc.StatusCode.INVALID_ARGUMENT)],
    ids=["accepted-puts", "refused-puts"],
)
def test_a_flooding_app_is_read_at_its_rate_while_another_app_is_served(
    daemon: Daemon, store: str, expected: grpc.StatusCode
) -> None:
    hostile, hostile_md, hostile_channel = new_app(daemon, "hostile")
    good, good_md, good_channel = new_app(daemon, "good")
    window = 4.0  # seconds
    received: Counter[grpc.StatusCode] = Counter()  # hostile calls the daemon read within the window
    good_codes: Counter[grpc.StatusCode] = Counter()
    lock = threading.Lock()
    start = time.monotonic()

    def flood(i: int) -> None:
        while time.monotonic() - start < window:
            status = code(lambda: hostile.Put(put(store, f"k{i}", MiB), metadata=hostile_md, timeout=30))
            if time.monotonic() - start < window:
                with lock:
                    received[status] += 1

    def ordinary() -> None:
        n = 0
        while time.monotonic() - start < window or n < 3:
            n += 1
            key = f"g{n}"
            good_codes[
                code(functools.partial(good.Put, put(STORE, key, 100), metadata=good_md, timeout=20))
            ] += 1
            get = pb.GetRequest(store=STORE, key=key)
            good_codes[code(functools.partial(good.Get, get, metadata=good_md, timeout=20))] += 1

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(4)] + [
        threading.Thread(target=ordinary)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    hostile_channel.close()
    good_channel.close()
    assert set(received) <= {expected}, received  # refusals are the method's own, never the pacing's
    # bytes read by the window's end: the burst + the rate over the window + one message per flooding
    # thread woken at once when the debt is paid (unpaced, 1 MiB puts on a socket go by the dozen a second)
    bound = (BURST + window * RATE) // MiB + 4 + 2
    assert 0 < received[expected] <= bound, received
    assert set(good_codes) == {grpc.StatusCode.OK}, good_codes
    assert good_codes[grpc.StatusCode.OK] >= 6


def test_a_paced_call_whose_wait_passes_its_deadline_is_refused_naming_the_setting(daemon: Daemon) -> None:
    hostile, hostile_md, hostile_channel = new_app(daemon, "hasty")
    good, good_md, good_channel = new_app(daemon, "patient")
    # pacing is work-conserving: it holds an app back only while another app sends too
    good.Put(put(STORE, "first", 10), metadata=good_md, timeout=5)
    for i in range(3):  # 3 MiB: the 2 MiB burst, then 1 MiB (1 s) of debt
        hostile.Put(put(STORE, f"k{i}", MiB), metadata=hostile_md, timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        hostile.Put(put(STORE, "late", 10), metadata=hostile_md, timeout=0.3)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "app_ingress_bytes_per_s" in (info.value.details() or "")
    good.Put(put(STORE, "now", 10), metadata=good_md, timeout=5)  # the other app is not in debt
    hostile.Put(put(STORE, "later", 10), metadata=hostile_md, timeout=30)  # waits out its debt, then read
    hostile_channel.close()
    good_channel.close()


def test_an_app_alone_on_the_daemon_is_not_paced(daemon: Daemon) -> None:
    lone, lone_md, lone_channel = new_app(daemon, "lone")
    window = 3.0
    start = time.monotonic()
    received = 0
    while time.monotonic() - start < window:
        lone.Put(put(STORE, "k", MiB), metadata=lone_md, timeout=30)
        received += 1
    lone_channel.close()
    # paced, it would get the burst and the rate over the window; alone, it takes what the daemon gives
    assert received > (BURST + window * RATE) // MiB + 6, received


def test_each_message_of_a_streamed_batch_is_paced(daemon: Daemon) -> None:
    """PutBatch is a client stream (batches past one message): an app that runs into debt inside its
    batch has the next message wait like a next call, and past the deadline the batch is refused whole."""
    hostile, hostile_md, hostile_channel = new_app(daemon, "streaming")
    good, good_md, good_channel = new_app(daemon, "neighbour")
    good.Put(put(STORE, "first", 10), metadata=good_md, timeout=5)  # contention: pacing applies
    for i in range(2):  # the 2 MiB burst, spent
        hostile.Put(put(STORE, f"k{i}", MiB), metadata=hostile_md, timeout=30)
    value = types_pb2.Value(string_value="x" * MiB)
    batch = [
        pb.PutBatchRequest(store=STORE, entries=[pb.KvEntry(key=f"s{i}", value=value)]) for i in range(2)
    ]
    with pytest.raises(grpc.RpcError) as info:  # the first message is read, the second owes 1 s
        hostile.PutBatch(iter(batch), metadata=hostile_md, timeout=0.3)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert "app_ingress_bytes_per_s" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as missing:
        hostile.Get(pb.GetRequest(store=STORE, key="s0"), metadata=hostile_md, timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing of the batch was written
    hostile_channel.close()
    good_channel.close()

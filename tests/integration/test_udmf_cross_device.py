"""UDMF CROSS_DEVICE data between two real daemons on loopback, paired, with automatic sync: DATA_HUB
data listed and read on the paired device (small data carried in its descriptor, large data fetched
from its device), CROSS_APP, IN_APP and OWN_PROCESS data staying home, a drag dropped on the paired
device once (the first consumer wins, on either device), a drop while the holder is down, a device
that is not paired refused at the peer port, and the CLI's drop side."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from harness import Daemon
from test_pairing import _owner, _pair
from test_sync_daemons import _side, _start
from test_udmf_service import CODE, DRAG, HUB, SOURCE, TARGET, THIRD, E, Read, Udmf, parts, status, text

from datamgr.device.identity import load_identity
from datamgr.device.peer_channel import open_peer_channel
from datamgr.sync.v1 import udmf_peer_pb2, udmf_peer_pb2_grpc
from datamgr.udmf_bridge.records import STORE_ID
from udmf import (
    NotFound,
    PlainText,
    ShareOptions,
    UdmfClient,
    UnifiedData,
    UnifiedDataProperties,
    UnifiedRecord,
)
from udmf.v1 import udmf_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CROSS = pb.SHARE_OPTIONS_CROSS_DEVICE
INLINE = 4096  # the inline limit both daemons run with: larger DATA_HUB data is fetched when read
T = TypeVar("T")


@dataclass
class Device:
    daemon: Daemon
    device_id: str
    source: Udmf  # the app that writes (and drags)
    target: Udmf  # the drop target
    third: Udmf
    admin: Udmf  # the system role
    tokens: dict[str, str]


@dataclass
class Pair:
    a: Device
    b: Device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _device(d: Daemon) -> Device:
    device_id = _side(d).device_id
    tokens = {bundle: d.add_app(bundle) for bundle in (SOURCE, TARGET, THIRD)}
    admin = (d.data_dir / "admin.token").read_text().strip()
    return Device(
        d,
        device_id,
        Udmf(d, tokens[SOURCE]),
        Udmf(d, tokens[TARGET]),
        Udmf(d, tokens[THIRD]),
        Udmf(d, admin),
        tokens,
    )


@contextlib.contextmanager
def paired(a: Daemon, b: Daemon, pair: Callable[[Daemon, Daemon], None] = _pair) -> Iterator[Pair]:
    """Started alpha `a` and bravo `b`, paired by `pair`, as a Pair of devices; stopped afterwards,
    with no bug in either log."""
    try:
        pair(a, b)
        p = Pair(_device(a), _device(b))
        yield p
        for dev in (p.a, p.b):
            for u in (dev.source, dev.target, dev.third, dev.admin):
                u.close()
    finally:
        for d in (a, b):
            if d.proc is not None:
                assert d.stop() == 0
            assert "bug in" not in d.log(), d.log()[-3000:]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Alpha and bravo, paired, syncing automatically; alpha's peer port is fixed so that it can be
    restarted where bravo knows it."""
    tmp = tmp_path_factory.mktemp("udmf-x")
    env = {"DATAMGR_SYNC__AUTO": "true", "DATAMGR_UDMF__SYNC_INLINE_BYTES": str(INLINE)}
    a = _start(tmp, "alpha", 4, DATAMGR_PEER__LISTEN=f"127.0.0.1:{_free_port()}", **env)
    with paired(a, _start(tmp, "bravo", 2, **env)) as p:
        yield p


def _eventually(fn: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    """fn()'s first truthy answer; a call failing with NOT_FOUND counts as none yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = fn()
        except grpc.RpcError as exc:
            if exc.code() != CODE.NOT_FOUND:  # type: ignore[attr-defined]
                raise
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def _listed(u: Udmf, *keys: str) -> dict[str, Read]:
    """The DATA_HUB data `u` sees, once every one of `keys` is among it."""

    def look() -> dict[str, Read] | None:
        found = {r.header.key: r for r in u.query(intention=HUB)}
        return found if set(keys) <= set(found) else None

    return _eventually(look, f"{keys} listed")


def _granted(dev: Device, key: str, bundle: str = TARGET) -> bool:
    """The system role of `dev` grants `bundle` the drag `key` once it has arrived there."""
    return _eventually(lambda: dev.admin.grant(key, bundle) or True, f"{key} arrived for a grant")


def _descriptors(dev: Device) -> dict[str, bool]:
    """The system store's keys on `dev`, each True if live (False: a tombstone)."""
    con = sqlite3.connect(f"file:{dev.daemon.data_dir / 'datamgr.db'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT key, value IS NOT NULL FROM kv_entries WHERE store_id = ?", (STORE_ID,))
        return {bytes(k).decode(): bool(live) for k, live in rows}
    finally:
        con.close()


def test_data_hub_data_is_listed_and_read_on_the_paired_device(pair: Pair) -> None:
    a, b = pair.a, pair.b
    local = a.source.insert(parts(text("stays on alpha")))  # CROSS_APP, the default
    in_app = a.source.insert(parts(text("stays in the app"), share_options=pb.SHARE_OPTIONS_IN_APP))
    hidden = a.source.insert(parts(text("for the writer only"), share_options=CROSS), visibility=2)
    small = a.source.insert(parts(text("hello from alpha"), tag="small", share_options=CROSS))
    blob = os.urandom(300_000)  # over the inline limit, and kept as a file on alpha
    big = a.source.insert(parts([E("general.octet-stream", blob=blob)], tag="big", share_options=CROSS))

    seen = _listed(b.target, small, big)
    assert local not in seen and in_app not in seen and hidden not in seen
    assert seen[small].values() == [(0, "general.plain-text", "hello from alpha")]
    assert seen[big].values() == [(0, "general.octet-stream", blob)]  # fetched from alpha as it streamed
    for key in (small, big):
        header = seen[key].header
        assert (header.device, header.writer, header.intention) == (a.device_id, SOURCE, HUB)
        assert seen[key].progress[-1] == 100
    assert b.target.get(big).values() == [(0, "general.octet-stream", blob)]  # DATA_HUB reads consume nothing
    summary = b.third.summary(small)
    assert dict(summary.summary.summary) == {"general.plain-text": seen[small].header.summary.total_size}
    assert summary.header.device == a.device_id and summary.header.properties.tag == "small"
    # OWN_PROCESS data never leaves alpha, not even for the writer's bundle on bravo (written before
    # small and big, it would be there by now)
    assert hidden not in {r.header.key for r in b.source.query(intention=HUB)}
    assert status(lambda: b.source.get(hidden))[0] == CODE.NOT_FOUND
    assert [r.header.key for r in a.source.query(intention=HUB)].count(small) == 1  # no echo back on alpha

    # read-only on bravo: the writer's bundle there neither updates nor deletes it
    code, msg = status(lambda: b.source.update(small, parts(text("changed"), share_options=CROSS)))
    assert code == CODE.PERMISSION_DENIED and a.device_id in msg
    assert b.source.delete(key=small) == []
    assert small in _listed(b.target, small)

    # only CROSS_DEVICE data has a descriptor; an update to CROSS_APP takes it away, a delete too
    assert {small, big} <= {k for k, live in _descriptors(a).items() if live}
    assert not {local, in_app, hidden} & set(_descriptors(a))
    a.source.update(small, parts(text("now cross-app")))
    a.source.delete(key=big)
    _eventually(
        lambda: not {small, big} & {r.header.key for r in b.target.query(intention=HUB)},
        "the update and the delete reach bravo",
    )
    assert status(lambda: b.target.get(big))[0] == CODE.NOT_FOUND
    assert not any(_descriptors(a)[k] for k in (small, big))


def test_a_drag_is_dropped_on_the_paired_device_once(pair: Pair) -> None:
    a, b = pair.a, pair.b
    kept_home = [
        a.source.drag(parts(text("cross-app drag"))),
        a.source.drag(parts(text("in-app drag"), share_options=pb.SHARE_OPTIONS_IN_APP)),
    ]
    key = a.source.drag(
        parts(text("dragged across"), [E("general.file", {"uri": "file:///a.txt"})], share_options=CROSS)
    )
    _granted(b, key)  # the system role on bravo grants its drop target, as for a local drag
    summary = b.target.summary(key)
    assert (summary.header.device, summary.header.writer, summary.header.intention) == (
        a.device_id,
        SOURCE,
        DRAG,
    )
    assert set(summary.summary.summary) == {"general.plain-text", "general.file"}
    assert status(lambda: b.third.get(key))[0] == CODE.PERMISSION_DENIED  # not granted there
    a.admin.grant(key, TARGET)  # a target on alpha is granted too: whoever reads first wins

    got = b.target.get(key)
    assert got.header.device == a.device_id
    assert got.values() == [
        (0, "general.plain-text", "dragged across"),
        (1, "general.file", {"uri": "file:///a.txt"}),
    ]
    for dev in (b, a):  # gone on both devices
        code, msg = status(lambda dev=dev: dev.target.get(key))  # type: ignore[misc]
        assert code == CODE.NOT_FOUND and "read once" in msg
    assert _descriptors(a)[key] is False  # consumed on alpha: a tombstone, which syncs to bravo
    _eventually(lambda: _descriptors(b).get(key) is False, "the tombstone reaches bravo")

    # CROSS_APP and IN_APP drags never left alpha: they were written before, so they would be here by now
    assert not set(kept_home) & set(_descriptors(b)) and not set(kept_home) & set(_descriptors(a))
    for other in kept_home:
        assert status(lambda other=other: b.admin.grant(other, TARGET))[0] == CODE.NOT_FOUND  # type: ignore[misc]


def test_the_first_consumer_wins_across_devices(pair: Pair) -> None:
    a, b = pair.a, pair.b
    payload = os.urandom(2_000_000)  # long enough a read that the two overlap
    key = a.source.drag(parts([E("general.octet-stream", blob=payload)], share_options=CROSS))
    _granted(b, key)
    a.admin.grant(key, TARGET)
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def read(dev: Device, name: str) -> None:
        start.wait()
        try:
            results[name] = dev.target.get(key).values()
        except grpc.RpcError as exc:
            results[name] = exc.code()  # type: ignore[attr-defined]

    threads = [threading.Thread(target=read, args=(dev, name)) for dev, name in ((a, "alpha"), (b, "bravo"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outcomes = sorted(results.values(), key=lambda r: isinstance(r, list))
    assert outcomes == [CODE.NOT_FOUND, [(0, "general.octet-stream", payload)]], results


def test_a_drop_while_the_holder_is_down_consumes_nothing(pair: Pair) -> None:
    a, b = pair.a, pair.b
    key = a.source.drag(parts(text("wait for me"), share_options=CROSS))
    blob = os.urandom(10_000)  # too large to ride along: read from alpha
    big = a.source.insert(parts([E("general.octet-stream", blob=blob)], share_options=CROSS))
    _granted(b, key)
    _listed(b.target, big)
    a.daemon.stop()
    try:
        code, msg = status(lambda: b.target.get(key))
        assert code == CODE.UNAVAILABLE, msg
        assert "alpha" in msg and "cannot be reached" in msg and "nothing was read or consumed" in msg
        assert b.target.summary(key).header.device == a.device_id  # still here, still droppable
        assert big not in {r.header.key for r in b.target.query(intention=HUB)}  # a listing goes on
        assert status(lambda: b.target.query(key=big))[0] == CODE.UNAVAILABLE
    finally:
        a.daemon.start()
    assert _listed(b.target, big)[big].values() == [(0, "general.octet-stream", blob)]
    a.source.delete(key=big)
    assert b.target.get(key).values() == [(0, "general.plain-text", "wait for me")]
    assert status(lambda: b.target.get(key))[0] == CODE.NOT_FOUND
    assert status(lambda: a.admin.grant(key, TARGET))[0] == CODE.NOT_FOUND


def test_a_device_that_is_not_paired_is_refused(pair: Pair, tmp_path: Path) -> None:
    a = pair.a
    key = a.source.drag(parts(text("not for strangers"), share_options=CROSS))
    with _owner(a.daemon) as owner:
        ident = owner.identity()
    stranger = load_identity(tmp_path / "stranger")  # a device with a certificate, never paired

    async def fetch() -> None:
        address = f"127.0.0.1:{ident.peer_port}"
        async with open_peer_channel(address, stranger, ident.certificate_pem) as channel:
            stub = udmf_peer_pb2_grpc.UdmfPeerServiceStub(channel)
            request = udmf_peer_pb2.FetchDataRequest(key=key, reader=TARGET)
            async for _ in stub.FetchData(request, timeout=10):
                pass

    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(fetch())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
    a.admin.grant(key, TARGET)
    assert a.target.get(key).values() == [(0, "general.plain-text", "not for strangers")]  # untouched


def test_a_lazy_drag_loads_when_the_paired_devices_target_reads(pair: Pair) -> None:
    a, b = pair.a, pair.b
    cross = UnifiedDataProperties(tag="lazy", share_options=ShareOptions.CROSS_DEVICE)
    calls: list[int] = []

    def loader() -> UnifiedData:
        calls.append(1)
        data = UnifiedData(UnifiedRecord(PlainText("made on demand")))
        data.properties = cross  # the data's own properties: it stays CROSS_DEVICE
        return data

    with (
        UdmfClient.connect(a.daemon.address, a.tokens[SOURCE]) as source,
        UdmfClient.connect(b.daemon.address, b.tokens[TARGET]) as target,
    ):
        with source.start_lazy_drag(cross, ["general.plain-text"], loader) as drag:
            _granted(b, drag.key)
            assert set(target.get_summary(drag.key)[0].summary) == {"general.plain-text"} and not calls
            got = target.get_data(drag.key)
            assert calls == [1] and drag.error is None
        assert got.get_records()[0].get_value() == PlainText("made on demand")
        assert got.runtime is not None and got.runtime.device == a.device_id
        with pytest.raises(NotFound):
            target.get_data(drag.key)

        with source.start_lazy_drag(cross, ["general.plain-text"], loader) as left:
            _granted(b, left.key)
        # the source left before any drop: its drag is gone here and, once the tombstone lands, there
        _eventually(lambda: _descriptors(b).get(left.key) is False, "the tombstone of a left drag")
        with pytest.raises(NotFound):
            target.get_summary(left.key)
    assert calls == [1]


def _cli(dev: Device, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "datamgr", "udmf", *args, "--address", dev.daemon.address]
    env = {**dev.daemon.env(), "COLUMNS": "200"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_cli_drags_on_one_device_and_drops_on_the_other(pair: Pair) -> None:
    a, b = pair.a, pair.b
    dragged = _cli(a, "drag", "across the desk", "--from-token", a.tokens[SOURCE], "--share", "cross-device")
    assert dragged.returncode == 0, dragged.stderr
    key = dragged.stdout.strip()
    assert key.startswith(f"udmf://drag/{SOURCE}/")
    dropped = _cli(b, "drop", key, "--to", TARGET, "--to-token", b.tokens[TARGET])
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout == "across the desk\n"
    assert f"dropped from device {a.device_id}" in dropped.stderr
    assert "a second read is refused: NOT_FOUND" in dropped.stderr
    again = _cli(b, "drop", key, "--to", TARGET, "--to-token", b.tokens[TARGET], "--wait", "0")
    assert again.returncode == 1 and "error: NOT_FOUND" in again.stderr

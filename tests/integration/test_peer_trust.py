"""A paired device is trusted to be paired, not to say who reads or what it deserves: two real daemons
on loopback, paired without the owners naming levels, and this test process calling alpha's
UdmfPeerService directly with bravo's key and certificate, as a compromised bravo would. Data that is
OWN_PROCESS, not CROSS_DEVICE or read by a named reader never leaves alpha, whatever bravo claims; a
remote fetch of a drag always consumes it; every cross-device read is in the audit log; bravo, which
asserts SL5, gets the level alpha's owner confirms, and an S4 store does not sync to it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from harness import Daemon
from test_pairing import _owner
from test_sync_daemons import DATASYNC, _start
from test_udmf_cross_device import CROSS, Device, Pair, _descriptors, _eventually, _granted, paired
from test_udmf_service import CODE, SHARE, SOURCE, TARGET, THIRD, E, Read, collect, parts, status, text

from datamgr.client.kv import KvStoreClient, KvStoreType, SecurityLevel, SyncMode
from datamgr.client.pairing import PairingClient
from datamgr.device.identity import load_identity
from datamgr.device.peer_channel import open_peer_channel
from datamgr.errors import Unauthenticated
from datamgr.sync.v1 import udmf_peer_pb2
from datamgr.udmf_bridge.peer import FETCH
from datamgr.v1 import pairing_pb2
from udmf.v1 import udmf_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

VAULT = "com.example.vault"  # an app syncing a KV store
KEEP = b"\x18\x01"  # FetchDataRequest field 3 (`keep`, true), as an older or lying peer sends it
SERVED, FETCHED = pairing_pb2.PEER_READ_DIRECTION_SERVED, pairing_pb2.PEER_READ_DIRECTION_FETCHED


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Alpha (SL4) and bravo (asserting SL5), paired with neither owner naming a level."""
    tmp = tmp_path_factory.mktemp("trust")
    env = {"DATAMGR_SYNC__AUTO": "true", "DATAMGR_UDMF__SYNC_INLINE_BYTES": "4096"}
    with paired(_start(tmp, "alpha", 4, **env), _start(tmp, "bravo", 5, **env), _pair_naming_no_level) as p:
        yield p


def _pair_naming_no_level(a: Daemon, b: Daemon) -> None:
    with _owner(b) as owner_b, _owner(a) as owner_a:
        events = owner_b.open_window()
        opened = next(events).opened
        owner_a.pair(opened.pairing_address, opened.code)
        assert next(events).WhichOneof("event") == "paired"
        events.close()


def _as_peer(holder: Device, caller: Device, key: str, reader: str, keep: bool = False) -> list[Read]:
    """FetchData on `holder`'s peer port, presenting `caller`'s device key and certificate, for the
    app `reader` it claims (and asking to keep the data, if `keep`)."""
    with _owner(holder.daemon) as owner:
        me = owner.identity()
    identity = load_identity(caller.daemon.data_dir)
    request = udmf_peer_pb2.FetchDataRequest(key=key, reader=reader).SerializeToString() + (
        KEEP if keep else b""
    )

    async def fetch() -> list[pb.ReadResponse]:
        async with open_peer_channel(f"127.0.0.1:{me.peer_port}", identity, me.certificate_pem) as channel:
            call = channel.unary_stream(
                FETCH, request_serializer=lambda r: r, response_deserializer=pb.ReadResponse.FromString
            )(request, timeout=30)
            return [m async for m in call]

    return collect(asyncio.run(fetch()))


def _refused(holder: Device, caller: Device, key: str, reader: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _as_peer(holder, caller, key, reader)
    return info.value.code(), info.value.details() or ""


def test_own_process_and_home_data_never_leave_whatever_the_peer_claims(pair: Pair) -> None:
    a, b = pair.a, pair.b
    hidden = a.source.insert(parts(text("PIN 1234"), share_options=CROSS), visibility=2)  # OWN_PROCESS
    cross_app = a.source.insert(parts(text("stays on alpha")))
    in_app = a.source.insert(parts(text("stays in the app"), share_options=pb.SHARE_OPTIONS_IN_APP))
    home_drag = a.source.drag(parts(text("a cross-app drag")))
    share = a.source.insert(parts(text("for its reader"), share_options=CROSS), intention=SHARE)
    a.admin.grant(share, TARGET)  # its reader, on alpha
    for key, claimed in (
        (hidden, SOURCE),  # the writer's bundle: OWN_PROCESS data is the writer's only, on its device
        (cross_app, SOURCE),
        (in_app, SOURCE),
        (home_drag, TARGET),
        (share, TARGET),  # the granted reader's bundle: no record here says bravo's app is that reader
        (share, SOURCE),
    ):
        code, msg = _refused(a, b, key, claimed)
        assert code == grpc.StatusCode.NOT_FOUND, (key, claimed, msg)
    # all still there, for whom they are meant
    assert a.source.get(hidden).values() == [(0, "general.plain-text", "PIN 1234")]
    assert a.target.get(share).values() == [(0, "general.plain-text", "for its reader")]  # its reader first
    a.admin.grant(home_drag, TARGET)
    assert a.target.get(home_drag).values() == [(0, "general.plain-text", "a cross-app drag")]
    assert not {hidden, share} & set(_descriptors(a))  # nor do they sync to bravo


def test_a_remote_fetch_of_a_drag_always_consumes_it(pair: Pair) -> None:
    a, b = pair.a, pair.b
    key = a.source.drag(parts(text("dragged"), share_options=CROSS))
    a.admin.grant(key, TARGET)  # a drop target on alpha is waiting too
    got = _as_peer(a, b, key, THIRD, keep=True)  # granted nowhere, and asking to keep it
    assert [r.values() for r in got] == [[(0, "general.plain-text", "dragged")]]
    code, msg = _refused(a, b, key, THIRD)  # consumed: the first read wins, as a local target's would
    assert code == grpc.StatusCode.NOT_FOUND and "read once" in msg
    assert status(lambda: a.target.get(key))[0] == CODE.NOT_FOUND
    assert _descriptors(a)[key] is False
    _eventually(lambda: _descriptors(b).get(key) is False, "the tombstone reaches bravo")


def test_every_cross_device_read_is_in_the_audit_log(pair: Pair) -> None:
    a, b = pair.a, pair.b
    blob = os.urandom(100_000)  # over the inline limit: bravo's read fetches it from alpha
    hub = a.source.insert(parts([E("general.octet-stream", blob=blob)], share_options=CROSS))
    drag = a.source.drag(parts(text("dropped on bravo"), share_options=CROSS))
    _granted(b, drag)
    assert b.target.get(drag).values() == [(0, "general.plain-text", "dropped on bravo")]
    _eventually(lambda: b.third.get(hub).values() == [(0, "general.octet-stream", blob)], "the data hub data")
    missing = drag[:-8] + "00000000"
    assert _refused(a, b, missing, "com.example.liar")[0] == grpc.StatusCode.NOT_FOUND

    def log(dev: Device, *keys: str) -> dict[tuple[int, str, str], pairing_pb2.PeerRead]:
        with _owner(dev.daemon) as owner:
            reads = {(r.direction, r.key, r.bundle): r for r in reversed(owner.peer_reads())}
        return reads if all(any(k == key for _, k, _ in reads) for key in keys) else {}

    served = _eventually(lambda: log(a, hub, drag, missing), "alpha's log")
    fetched = _eventually(lambda: log(b, hub, drag), "bravo's log")
    for key, reader, size in ((drag, TARGET, 1), (hub, THIRD, len(blob))):
        out, got = served[(SERVED, key, reader)], fetched[(FETCHED, key, reader)]
        assert (out.device_id, got.device_id) == (b.device_id, a.device_id)
        assert out.outcome == got.outcome == "OK" and out.bytes == got.bytes >= size
    liar = served[(SERVED, missing, "com.example.liar")]
    assert (liar.device_id, liar.outcome, liar.bytes) == (b.device_id, "NOT_FOUND", 0)
    assert all(r.direction == SERVED for r in served.values())  # alpha read nothing of bravo's

    cmd = [sys.executable, "-m", "datamgr", "devices", "audit", "--json", "--device", b.device_id]
    cmd += ["--address", a.daemon.address]
    done = subprocess.run(cmd, env=a.daemon.env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert {(r["direction"], r["key"], r["outcome"]) for r in listed} >= {
        ("served", drag, "OK"),
        ("served", missing, "NOT_FOUND"),
    }
    assert listed == sorted(listed, key=lambda r: -r["time"])  # newest first
    with PairingClient(a.daemon.address, token=a.tokens[SOURCE]) as app, pytest.raises(Unauthenticated):
        app.peer_reads()  # the log is the owner's


def test_a_device_gets_the_level_its_owner_confirms_not_the_one_it_asserts(pair: Pair) -> None:
    a, b = pair.a, pair.b
    with _owner(a.daemon) as owner:
        [bravo] = owner.trusted()
    assert (bravo.device_id, bravo.security_level, bravo.asserted_level) == (b.device_id, 1, 5)
    tokens = [dev.daemon.add_app(VAULT, DATASYNC) for dev in (a, b)]
    with (
        KvStoreClient.connect(a.daemon.address, tokens[0]) as ca,
        KvStoreClient.connect(b.daemon.address, tokens[1]) as cb,
    ):
        secrets = ca.get_kv_store("secrets", kind=KvStoreType.SINGLE_VERSION, security_level=SecurityLevel.S4)
        received = cb.get_kv_store(
            "secrets", kind=KvStoreType.SINGLE_VERSION, security_level=SecurityLevel.S4
        )
        secrets.put("pin", "1234")
        pushed = secrets.sync([b.device_id], SyncMode.PUSH_ONLY)[b.device_id]
        assert pushed.code == "SKIPPED" and "SL1" in pushed.message and pushed.pushed == 0, pushed
        assert received.get_result_size() == 0

        # the owner confirms SL4: from now on the store goes there
        with _owner(a.daemon) as owner:
            raised = owner.set_level(b.device_id, 4)
        assert (raised.security_level, raised.asserted_level) == (4, 5)
        assert secrets.sync([b.device_id], SyncMode.PUSH_ONLY)[b.device_id].code == "OK"
        assert received.get("pin") == "1234"

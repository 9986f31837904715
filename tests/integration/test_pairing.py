"""Pairing between real daemons on loopback: the shown code, Hello over mutual TLS both ways, refusal
of never-paired and unpaired devices, wrong codes, and identity and trust across a restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from harness import Daemon

from datamgr.client.pairing import PairingClient
from datamgr.device.identity import load_identity
from datamgr.device.peer_channel import open_peer_channel
from datamgr.errors import AlreadyExists, FailedPrecondition, NotFound, Unauthenticated
from datamgr.v1 import peer_pb2, peer_pb2_grpc

pytestmark = pytest.mark.integration

ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__ENABLED": "false"}


def _daemon(tmp_path: Path, name: str, level: int = 3) -> Daemon:
    env = {**ENV, "DATAMGR_DISCOVERY__DEVICE_NAME": name, "DATAMGR_DISCOVERY__SECURITY_LEVEL": str(level)}
    return Daemon(tmp_path / name, env=env).start()


def _owner(d: Daemon) -> PairingClient:
    return PairingClient(d.address, token_path=d.data_dir / "admin.token")


def _peer_address(d: Daemon) -> str:
    with _owner(d) as owner:
        return f"127.0.0.1:{owner.identity().peer_port}"


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    a, b = _daemon(tmp_path, "alpha", 4), _daemon(tmp_path, "bravo", 2)
    yield a, b
    a.stop()
    b.stop()


def _pair(a: Daemon, b: Daemon, level_a: int = 0, level_b: int = 0) -> None:
    """B shows a code, A types it. Each owner confirms the other's security level: `level_a` (at B)
    and `level_b` (at A), by default the level each device is configured with, as owners who know
    their devices would."""
    with _owner(b) as owner_b, _owner(a) as owner_a:
        level_a = level_a or owner_a.identity().security_level
        level_b = level_b or owner_b.identity().security_level
        events = owner_b.open_window(level_a)
        opened = next(events).opened
        assert (
            len(opened.code) == 6 and opened.pairing_address == f"127.0.0.1:{owner_b.identity().pairing_port}"
        )
        device = owner_a.pair(opened.pairing_address, opened.code, level_b)
        final = next(events)
        events.close()
    assert device.device_id == opened.device_id and device.fingerprint == opened.fingerprint
    assert final.WhichOneof("event") == "paired"


async def _hello_as(caller: Daemon, callee_address: str, callee_cert: bytes) -> peer_pb2.HelloResponse:
    """Hello from this test process, presenting `caller`'s device certificate."""
    async with open_peer_channel(callee_address, load_identity(caller.data_dir), callee_cert) as channel:
        return await peer_pb2_grpc.PeerServiceStub(channel).Hello(peer_pb2.HelloRequest(), timeout=10)


def _refused(caller: Daemon, callee_address: str, callee_cert: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(_hello_as(caller, callee_address, callee_cert))
    return info.value


def test_pair_hello_both_ways_then_unpair(tmp_path: Path, two: tuple[Daemon, Daemon]) -> None:
    a, b = two
    _pair(a, b)
    with _owner(a) as owner_a, _owner(b) as owner_b:
        id_a, id_b = owner_a.identity(), owner_b.identity()
        [b_at_a] = owner_a.trusted()
        [a_at_b] = owner_b.trusted()
        # both trust each other, with the names each declared and the levels each owner confirmed
        assert (b_at_a.device_id, b_at_a.name, b_at_a.security_level) == (id_b.device_id, "bravo", 2)
        assert (a_at_b.device_id, a_at_b.name, a_at_b.security_level) == (id_a.device_id, "alpha", 4)
        assert (b_at_a.asserted_level, a_at_b.asserted_level) == (2, 4)
        assert b_at_a.fingerprint == id_b.fingerprint and a_at_b.fingerprint == id_a.fingerprint
        assert b_at_a.address == _peer_address(b) and a_at_b.address == _peer_address(a)
        endpoint = a.endpoint()  # daemon.json names both ports
        assert (endpoint["peer_port"], endpoint["pairing_port"]) == (id_a.peer_port, id_a.pairing_port)

        # Hello over mutual TLS, daemon to daemon, both ways
        info, rtt = owner_a.ping(id_b.device_id)
        assert (info.device_id, info.name, info.peer_port) == (id_b.device_id, "bravo", id_b.peer_port)
        assert rtt > 0
        info, _ = owner_b.ping(id_a.device_id)
        assert info.device_id == id_a.device_id

        # a third daemon, never paired, that knows A's address and certificate: refused
        c = _daemon(tmp_path, "charlie")
        try:
            exc = _refused(c, _peer_address(a), id_a.certificate_pem)
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "not paired" in (exc.details() or "")
        finally:
            c.stop()

        # the pairing port answers only Pair: Hello there (no client certificate) is refused
        exc = _refused(b, f"127.0.0.1:{id_a.pairing_port}", id_a.certificate_pem)
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "mutual TLS" in (exc.details() or "")

        async def unpair_while_connected() -> tuple[grpc.aio.AioRpcError, grpc.aio.AioRpcError]:
            """B (as this process) holds a connection to A while A unpairs it."""
            ident_b = load_identity(b.data_dir)
            async with open_peer_channel(_peer_address(a), ident_b, id_a.certificate_pem) as channel:
                stub = peer_pb2_grpc.PeerServiceStub(channel)
                assert (
                    await stub.Hello(peer_pb2.HelloRequest(), timeout=10)
                ).device.device_id == id_a.device_id
                resp = await asyncio.to_thread(owner_a.unpair, id_b.device_id)
                assert resp.notified, resp.detail
                with pytest.raises(grpc.aio.AioRpcError) as same_connection:
                    await stub.Hello(peer_pb2.HelloRequest(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as new_connection:
                await _hello_as(b, _peer_address(a), id_a.certificate_pem)
            return same_connection.value, new_connection.value

        same, new = asyncio.run(unpair_while_connected())
        assert same.code() == grpc.StatusCode.UNAUTHENTICATED, same.details()  # the per-call check
        assert new.code() == grpc.StatusCode.UNAUTHENTICATED, new.details()  # the handshake is refused
        assert "refused this device's certificate" in (new.details() or "")

        # trust is gone on both sides: A unpaired B, and B was told
        assert owner_a.trusted() == [] and owner_b.trusted() == []
        with pytest.raises(NotFound):
            owner_a.ping(id_b.device_id)
        with pytest.raises(NotFound):
            owner_b.ping(id_a.device_id)


def test_wrong_codes_pair_nothing(two: tuple[Daemon, Daemon]) -> None:
    a, b = two
    with _owner(b) as owner_b, _owner(a) as owner_a:
        events = owner_b.open_window()
        opened = next(events).opened
        wrong = f"{(int(opened.code) + 1) % 1_000_000:06d}"
        with pytest.raises(Unauthenticated, match=r"wrong pairing code \(2 attempts left\)"):
            owner_a.pair(opened.pairing_address, wrong)
        with pytest.raises(Unauthenticated, match="1 attempts left"):
            owner_a.pair(opened.pairing_address, wrong)
        with pytest.raises(Unauthenticated, match="last attempt"):
            owner_a.pair(opened.pairing_address, wrong)
        final = next(events)
        assert final.WhichOneof("event") == "closed" and final.closed.reason == 2  # EXHAUSTED
        with pytest.raises(FailedPrecondition, match="has closed"):
            owner_a.pair(opened.pairing_address, opened.code)  # the right code, too late
        events.close()

        # the owner leaving (the stream ends) closes the window: another one can open then
        events = owner_b.open_window()
        next(events)
        with pytest.raises(AlreadyExists):
            next(owner_b.open_window())
        events.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                again = owner_b.open_window()
                next(again)
                again.close()
                break
            except AlreadyExists:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert owner_a.trusted() == [] and owner_b.trusted() == []
        # and nothing lets A through B's peer port
        id_b = owner_b.identity()
    exc = _refused(a, _peer_address(b), id_b.certificate_pem)
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED


def test_identity_and_trust_survive_a_restart(two: tuple[Daemon, Daemon]) -> None:
    a, b = two
    _pair(a, b)
    with _owner(a) as owner_a:
        before = owner_a.identity()
    a.stop()
    a.start()
    with _owner(a) as owner_a, _owner(b) as owner_b:
        after = owner_a.identity()
        assert (after.device_id, after.fingerprint, after.certificate_pem) == (
            before.device_id,
            before.fingerprint,
            before.certificate_pem,
        )
        assert [d.device_id for d in owner_a.trusted()] == [owner_b.identity().device_id]
        owner_a.ping(owner_b.identity().device_id)
        # A listens on a new port now (port 0): B reaches it at the new address
        info, _ = owner_b.ping(after.device_id, _peer_address(a))
        assert info.device_id == after.device_id


def _cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "datamgr", "devices", *args, "--address", d.address]
    return subprocess.run(cmd, env=d.env(), capture_output=True, text=True, timeout=60, check=False)


def test_pairing_through_the_cli(two: tuple[Daemon, Daemon]) -> None:
    a, b = two
    cmd = [
        sys.executable,
        "-m",
        "datamgr",
        "devices",
        "pair",
        "--show-code",
        "--json",
        "--address",
        b.address,
    ]
    shower = subprocess.Popen(cmd, env=b.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert shower.stdout is not None
        lines = []
        while not lines or not lines[-1].startswith("}"):
            line = shower.stdout.readline()
            assert line, shower.stderr.read() if shower.stderr else "no output"
            lines.append(line)
        opened = json.loads("".join(lines))
        paired = _cli(a, "pair", opened["pairing_address"], "--code", opened["code"], "--level", "2")
        assert paired.returncode == 0, paired.stderr
        assert "paired with bravo" in paired.stdout
        assert "security level: SL2 (it asserts SL2)" in paired.stdout
        rest, errors = shower.communicate(timeout=30)
        assert shower.returncode == 0, errors
        # B's owner named no level (and has no terminal to be asked on): alpha, asserting SL4, is SL1
        at_b = json.loads(rest)["paired"]
        assert (at_b["name"], at_b["security_level"], at_b["asserted_level"]) == ("alpha", "SL1", "SL4")
    finally:
        if shower.poll() is None:
            shower.kill()
            shower.wait()

    listed = _cli(a, "trusted", "--json")
    assert listed.returncode == 0, listed.stderr
    [device] = json.loads(listed.stdout)
    assert device["device_id"] == opened["device_id"] and device["security_level"] == "SL2"
    raised = _cli(b, "set-level", at_b["device_id"], "3")
    assert raised.returncode == 0 and "is SL3 (it asserts SL4)" in raised.stdout, raised.stderr
    [alpha] = json.loads(_cli(b, "trusted", "--json").stdout)
    assert (alpha["security_level"], alpha["asserted_level"]) == ("SL3", "SL4")
    bad = _cli(b, "set-level", at_b["device_id"], "6")
    assert bad.returncode == 2 and "1<=x<=5" in bad.stderr
    ping = _cli(a, "ping", device["device_id"])
    assert ping.returncode == 0 and "bravo" in ping.stdout, ping.stderr
    gone = _cli(a, "unpair", device["device_id"])
    assert gone.returncode == 0, gone.stderr
    assert json.loads(_cli(b, "trusted", "--json").stdout) == []
    again = _cli(a, "ping", device["device_id"])
    assert again.returncode == 1 and "NOT_FOUND" in again.stderr

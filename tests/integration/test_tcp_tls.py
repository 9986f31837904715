"""The TCP listener serves TLS with the device certificate, which clients pin by fingerprint (issue 10,
point 9): a relay on loopback sees no token, a wrong fingerprint is refused before anything is sent, a
plaintext client gets nowhere, and plaintext is only for loopback (with a warning), refused otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import CONTACTS, PEOPLE_URI, Daemon, contacts_manifest

from datamgr.cli import main
from datamgr.client import AdminClient, AsyncDataShareHelper, DataShareHelper, PairingClient
from datamgr.connection import SERVER_NAME
from datamgr.device.identity import PEER_HOSTNAME
from datamgr.errors import InvalidArgument, Unauthenticated
from udmf import UdmfClient

pytestmark = pytest.mark.integration

ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__ENABLED": "false"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("tls") / "data", env={**ENV, "DATAMGR_TCP": "127.0.0.1:0"}).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def provider(daemon: Daemon) -> str:
    token = daemon.add_app(CONTACTS)
    with daemon.helper(token) as h:
        h.register_provider(contacts_manifest())
    return token


def tcp(d: Daemon) -> str:
    return f"127.0.0.1:{d.endpoint()['tcp_port']}"


def fingerprint(d: Daemon) -> str:
    with PairingClient(d.address, token_path=d.data_dir / "admin.token") as owner:
        return f"sha256:{owner.identity().fingerprint}"


class Relay:
    """A TCP relay on loopback that forwards to `target` and keeps every byte the client sent."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.captured = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for args in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pipe, args=args)
                self._threads.append(thread)
                thread.start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if record:
                    self.captured += data
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)
        for s in self._sockets:
            s.close()


def test_the_sdks_pin_the_name_every_device_certificate_carries() -> None:
    assert SERVER_NAME == PEER_HOSTNAME


def test_daemon_json_and_identity_give_the_fingerprint(daemon: Daemon) -> None:
    assert daemon.endpoint()["tls_fingerprint"] == fingerprint(daemon)
    assert f"(TLS, certificate {fingerprint(daemon)})" in daemon.log()


def test_a_relay_on_loopback_sees_no_token(daemon: Daemon, provider: str) -> None:
    """The attack: a relay on loopback captured an app token and the admin token and replayed both.
    Over TLS it forwards the calls, but what it captures holds neither token."""
    admin_token = (daemon.data_dir / "admin.token").read_text().strip()
    relay = Relay(("127.0.0.1", daemon.endpoint()["tcp_port"]))
    try:
        fp = fingerprint(daemon)
        with DataShareHelper.connect(relay.address, provider, tls_fingerprint=fp) as h:
            row = h.insert(PEOPLE_URI, {"name": "through the relay"})
            assert row > 0
        with AdminClient(relay.address, token=admin_token, tls_fingerprint=fp) as admin:
            assert CONTACTS in [a.bundle for a in admin.list_apps()]
    finally:
        relay.close()
    assert len(relay.captured) > 1000  # the calls did go through it
    assert provider.encode() not in relay.captured
    assert admin_token.encode() not in relay.captured
    assert b"through the relay" not in relay.captured


def test_datashare_and_udmf_over_tls_with_the_environment(
    daemon: Daemon, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAMGR_TLS_FINGERPRINT", fingerprint(daemon))
    with DataShareHelper.connect(tcp(daemon), provider) as h, h.query(PEOPLE_URI) as rs:
        assert rs.row_count >= 0
    with UdmfClient.connect(tcp(daemon), provider) as udmf:
        assert udmf.query_types(type_id="general.text")


def test_the_asyncio_sdk_over_tls(daemon: Daemon, provider: str) -> None:
    fp = fingerprint(daemon)

    async def insert() -> int:
        async with AsyncDataShareHelper.connect(tcp(daemon), provider, tls_fingerprint=fp) as h:
            return await h.insert(PEOPLE_URI, {"name": "async over tls"})

    assert asyncio.run(insert()) > 0


def test_a_wrong_fingerprint_is_refused_before_any_call(daemon: Daemon, provider: str) -> None:
    wrong = "sha256:" + "ab" * 32
    relay = Relay(("127.0.0.1", daemon.endpoint()["tcp_port"]))
    try:
        with pytest.raises(Unauthenticated, match=f"presented certificate {fingerprint(daemon)}"):
            DataShareHelper.connect(relay.address, provider, tls_fingerprint=wrong)
    finally:
        relay.close()
    assert provider.encode() not in relay.captured  # only a TLS handshake happened


def test_a_malformed_fingerprint_is_invalid(daemon: Daemon, provider: str) -> None:
    with pytest.raises(InvalidArgument, match="not a certificate fingerprint"):
        DataShareHelper.connect(tcp(daemon), provider, tls_fingerprint="sha256:1234")


def test_a_plaintext_client_cannot_talk_to_it(daemon: Daemon) -> None:
    with grpc.insecure_channel(tcp(daemon)) as ch, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_sdk_sends_no_token_in_plaintext_off_loopback(provider: str) -> None:
    with pytest.raises(InvalidArgument, match="tls_fingerprint"):
        DataShareHelper.connect("192.0.2.1:50051", provider)  # TEST-NET-1: never dialed


def test_the_cli_pins_with_tls_fingerprint(daemon: Daemon) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["--tls-fingerprint", fingerprint(daemon), "health", "--address", tcp(daemon)])
    assert ok.exit_code == 0, ok.output
    assert "SERVING" in ok.output
    wrong = runner.invoke(main, ["--tls-fingerprint", "ab" * 32, "health", "--address", tcp(daemon)])
    assert wrong.exit_code == 1
    assert "UNAUTHENTICATED" in wrong.output and "presented certificate" in wrong.output


def test_plaintext_is_allowed_on_loopback_with_a_warning(tmp_path: Path) -> None:
    env = {**ENV, "DATAMGR_TCP": "127.0.0.1:0", "DATAMGR_TCP_PLAINTEXT": "true"}
    d = Daemon(tmp_path / "data", env=env).start()
    try:
        assert d.endpoint()["tls_fingerprint"] is None
        assert "WARNING" in d.log() and "is plaintext (tcp_plaintext)" in d.log()
        with grpc.insecure_channel(tcp(d)) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"])
def test_plaintext_off_loopback_is_refused_at_start(tmp_path: Path, listen: str) -> None:
    d = Daemon(tmp_path / "data", env={**ENV, "DATAMGR_TCP": listen, "DATAMGR_TCP_PLAINTEXT": "true"})
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) == 2
    d.proc = None
    log = d.log()
    assert "tcp_plaintext" in log and "not a loopback address" in log
    assert "Traceback" not in log
    assert not d.socket.exists()

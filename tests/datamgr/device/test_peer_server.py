"""The peer server in one process: every method but Pair needs a trusted client certificate, on
existing connections too, whatever kind of method it is; refused handshakes read as UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from datamgr.device.identity import Identity, load_identity
from datamgr.device.peer_channel import open_peer_channel, peer_channel
from datamgr.device.peer_server import PeerConfig, PeerServer, calling_device
from datamgr.device.trust import TrustedDevice, TrustStore
from datamgr.errors import Unauthenticated
from datamgr.storage import Database, create_engine
from datamgr.v1 import peer_pb2, peer_pb2_grpc

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def _device(ident: Identity) -> TrustedDevice:
    return TrustedDevice(ident.device_id, "client", ident.fingerprint, ident.cert_pem.decode(), 2)


class Scenario:
    """A server device and two client identities, `friend` trusted and `stranger` not."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.server_identity = load_identity(tmp_path / "server")
        self.friend = load_identity(tmp_path / "friend")
        self.stranger = load_identity(tmp_path / "stranger")
        self.db = Database(create_engine(f"sqlite:///{tmp_path / 'server.db'}"), 1)
        self.trust = TrustStore(self.db.engine)
        self.trust.add(_device(self.friend))
        settings = PeerConfig("127.0.0.1:0", "127.0.0.1:0", "server", 3, **config)
        self.peer = PeerServer(settings, self.server_identity, self.trust, self.db)
        self.callers: list[str] = []

        async def repeat(request: bytes, context: Any) -> AsyncIterator[bytes]:
            device = calling_device(context, self.trust)
            self.callers.append(device.device_id if device else "?")
            for _ in range(3):
                yield request

        async def echo_all(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            async for item in requests:
                yield item

        # a stand-in for the sync service to come: a server stream and a bidi stream
        self.peer.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "test.Stream",
                    {
                        "Repeat": grpc.unary_stream_rpc_method_handler(repeat),
                        "EchoAll": grpc.stream_stream_rpc_method_handler(echo_all),
                    },
                ),
            )
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.peer.port}"

    def channel(self, ident: Identity, address: str | None = None) -> grpc.aio.Channel:
        return open_peer_channel(address or self.address, ident, self.server_identity.cert_pem)


async def _repeat(channel: grpc.aio.Channel) -> list[bytes]:
    return [item async for item in channel.unary_stream("/test.Stream/Repeat")(b"hi", timeout=10)]


async def _echo_all(channel: grpc.aio.Channel) -> list[bytes]:
    async def requests() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    return [item async for item in channel.stream_stream("/test.Stream/EchoAll")(requests(), timeout=10)]


async def _hello(channel: grpc.aio.Channel) -> peer_pb2.HelloResponse:
    return await peer_pb2_grpc.PeerServiceStub(channel).Hello(peer_pb2.HelloRequest(), timeout=10)


async def _code(coro: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code()


def test_only_trusted_devices_get_through(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = Scenario(tmp_path)
        await s.peer.start()
        try:
            async with s.channel(s.friend) as friend:
                assert (await _hello(friend)).device.device_id == s.server_identity.device_id
                assert await _repeat(friend) == [b"hi"] * 3
                assert await _echo_all(friend) == [b"a", b"b"]
                assert s.callers == [s.friend.device_id]

                async with s.channel(s.stranger) as stranger:  # refused at the handshake
                    assert await _code(_hello(stranger)) == UNAUTHENTICATED
                    assert await _code(_repeat(stranger)) == UNAUTHENTICATED
                    assert await _code(_echo_all(stranger)) == UNAUTHENTICATED
                # the pairing port has no client certificates: only Pair may be called there (it is a
                # server of its own, serving PeerService alone)
                async with s.channel(s.friend, f"127.0.0.1:{s.peer.pairing_port}") as no_cert:
                    assert await _code(_hello(no_cert)) == UNAUTHENTICATED
                    assert await _code(_repeat(no_cert)) == grpc.StatusCode.UNIMPLEMENTED

                # unpaired while connected: the same connection is refused at its next call
                await s.db.write(s.trust.remove, s.friend.device_id)
                assert await _code(_hello(friend)) == UNAUTHENTICATED
                assert await _code(_repeat(friend)) == UNAUTHENTICATED
                assert await _code(_echo_all(friend)) == UNAUTHENTICATED
            async with s.channel(s.friend) as again:  # and a new connection at its handshake
                assert await _code(_hello(again)) == UNAUTHENTICATED

            # paired (again): a new connection is let through at once
            await s.db.write(s.trust.add, _device(s.stranger))
            async with s.channel(s.stranger) as now_friend:
                assert await _repeat(now_friend) == [b"hi"] * 3
        finally:
            await s.peer.stop(0)
            s.db.close()

    asyncio.run(scenario())


def test_client_side_errors_name_the_cause(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = Scenario(tmp_path)
        await s.peer.start()
        try:
            async with s.channel(s.stranger) as stranger:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await _hello(stranger)
            assert "refused this device's certificate" in (info.value.details() or "")

            # pinned to another certificate than the one the server presents
            wrong_pin = open_peer_channel(s.address, s.friend, s.stranger.cert_pem)
            async with wrong_pin:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await _hello(wrong_pin)
            assert info.value.code() == UNAUTHENTICATED
            assert "another certificate than the paired one" in (info.value.details() or "")
        finally:
            await s.peer.stop(0)

        # nobody listening: that stays UNAVAILABLE
        async with s.channel(s.friend) as down:
            assert await _code(_hello(down)) == grpc.StatusCode.UNAVAILABLE
        s.db.close()

    asyncio.run(scenario())


def test_peer_channel_needs_a_trusted_fingerprint(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = Scenario(tmp_path)
        try:
            with pytest.raises(Unauthenticated, match="no paired device"):
                peer_channel("127.0.0.1:1", s.server_identity, s.stranger.fingerprint, s.trust)
            async with peer_channel("127.0.0.1:1", s.server_identity, s.friend.fingerprint, s.trust):
                pass
        finally:
            s.db.close()

    asyncio.run(scenario())

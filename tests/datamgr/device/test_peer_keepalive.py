"""A peer that goes silent mid-call (its packets dropped, no FIN or RST: out of range, a dead link) is
noticed by keepalive pings on both ends: the caller's stream fails UNAVAILABLE and the server's handler
ends, in seconds rather than when TCP gives up. A proxy between them stops forwarding to play the link."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from test_peer_server import Scenario

from datamgr.device.peer_channel import open_peer_channel

FAST = (500, 500)  # ping every 0.5 s, dead after 0.5 s without an answer


class SilentLink:
    """Forwards TCP to `target` until `cut()`; then it drops every byte and closes nothing."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut_at: float | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        self.cut_at = time.monotonic()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self.cut_at is None:
                    writer.write(data)
                    await writer.drain()

    async def close(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()


def test_a_peer_gone_silent_mid_stream_is_noticed_on_both_ends(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = Scenario(tmp_path, keepalive=FAST)
        handler_ended = asyncio.Event()

        async def forever(request: bytes, context: Any) -> AsyncIterator[bytes]:
            try:
                while True:
                    yield request
                    await asyncio.sleep(0.05)
            finally:
                handler_ended.set()

        s.peer.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "test.Forever", {"Ticks": grpc.unary_stream_rpc_method_handler(forever)}
                ),
            )
        )
        await s.peer.start()
        link = SilentLink(("127.0.0.1", s.peer.port))
        address = await link.start()
        try:
            async with open_peer_channel(address, s.friend, s.server_identity.cert_pem, keepalive=FAST) as ch:
                call = ch.unary_stream("/test.Forever/Ticks")(b"tick")  # no deadline, as a long fetch
                got = 0
                code = None
                try:
                    async with asyncio.timeout(20):
                        async for _ in call:
                            got += 1
                            if got == 5:
                                link.cut()
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                assert link.cut_at is not None
                noticed = time.monotonic() - link.cut_at
                assert code == grpc.StatusCode.UNAVAILABLE, code
                assert noticed < 20, noticed  # TCP alone would wait for many minutes
                async with asyncio.timeout(30):
                    await handler_ended.wait()  # the server stopped pushing into the dead link too
        finally:
            await link.close()
            await s.peer.stop(0)
            s.db.close()

    asyncio.run(scenario())

"""peer_channel's refusal mapping on streams: only a stream that failed before any message may have
been refused at the TLS layer, so only then is the peer probed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from datamgr.device.peer_channel import _mapped_stream


def _unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="draining"
    )


async def _stream(items: int) -> AsyncIterator[int]:
    for i in range(items):
        yield i
    raise _unavailable()


def _run(items: int) -> tuple[list[int], grpc.StatusCode, int]:
    probes = 0

    async def refusal() -> str | None:
        nonlocal probes
        probes += 1
        return "refused this device's certificate"

    async def main() -> tuple[list[int], grpc.StatusCode]:
        got: list[int] = []
        try:
            async for item in _mapped_stream(_stream(items), refusal):
                got.append(item)
        except grpc.aio.AioRpcError as exc:
            return got, exc.code()
        raise AssertionError("the stream's failure was lost")

    got, code = asyncio.run(main())
    return got, code, probes


def test_a_stream_failing_after_a_message_is_not_probed_and_keeps_its_status() -> None:
    assert _run(3) == ([0, 1, 2], grpc.StatusCode.UNAVAILABLE, 0)


def test_a_stream_failing_before_any_message_is_probed_and_may_be_a_refusal() -> None:
    assert _run(0) == ([], grpc.StatusCode.UNAUTHENTICATED, 1)

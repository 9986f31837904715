"""The server edge (datamgr._edge) on a real grpc.aio server: every status code an error carries reaches
the caller with its message, whatever the method's kind; anything else is INTERNAL with a generic
message and one logged traceback; a servicer's own abort and the decode guard pass through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from aicap import errors as aicap_errors
from datamgr import errors as datamgr_errors
from datamgr._edge import Edge, status_of
from udmf import errors as udmf_errors

SERVICE = "test.Edge"
S = grpc.StatusCode
ANSWERS = [
    S.INVALID_ARGUMENT, S.UNAUTHENTICATED, S.PERMISSION_DENIED, S.NOT_FOUND, S.ALREADY_EXISTS,
    S.RESOURCE_EXHAUSTED, S.UNAVAILABLE, S.DEADLINE_EXCEEDED, S.FAILED_PRECONDITION, S.CANCELLED,
    S.UNIMPLEMENTED,
]  # fmt: skip


class Coded(Exception):
    """An error of no package: what the edge recognises is its shape (`code`, `message`)."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(f"str of {message}")
        self.code = code
        self.message = message


class Behaviour:
    """What the methods do next: raise `error` after `before` messages (None: answer normally)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.before = 0
        self.abort: tuple[grpc.StatusCode, str] | None = None

    async def fail(self, context: grpc.aio.ServicerContext) -> None:
        if self.abort is not None:
            await context.abort(*self.abort)
        if self.error is not None:
            raise self.error


def _handlers(b: Behaviour) -> dict[str, grpc.RpcMethodHandler]:
    async def unary_unary(request: bytes, context: Any) -> bytes:
        await b.fail(context)
        return request

    async def unary_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(b.before):
            yield b"%d" % i
        await b.fail(context)
        yield request

    async def unary_stream_writes(request: bytes, context: Any) -> None:
        for i in range(b.before):
            await context.write(b"%d" % i)
        await b.fail(context)
        await context.write(request)

    async def stream_unary(requests: AsyncIterator[bytes], context: Any) -> bytes:
        got = [r async for r in requests]
        await b.fail(context)
        return b"".join(got)

    async def stream_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for r in requests:
            yield r
        await b.fail(context)
        yield b"end"

    async def decoded(request: Any, context: Any) -> bytes:
        return b"decoded"

    async def decoded_stream(requests: AsyncIterator[Any], context: Any) -> bytes:
        return b"%d" % len([r async for r in requests])

    decode = health_pb2.HealthCheckRequest.FromString
    return {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(unary_unary),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream),
        "UnaryStreamWrites": grpc.unary_stream_rpc_method_handler(unary_stream_writes),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary),
        "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream),
        "Decoded": grpc.unary_unary_rpc_method_handler(decoded, request_deserializer=decode),
        "DecodedStream": grpc.stream_unary_rpc_method_handler(decoded_stream, request_deserializer=decode),
    }


Scenario = Callable[[grpc.aio.Channel, Behaviour], Awaitable[None]]


def serve(tmp_path: Path, scenario: Scenario) -> None:
    """Runs `scenario(channel, behaviour)` against a server with the edge and the test methods."""

    async def main() -> None:
        b = Behaviour()
        server = grpc.aio.server(interceptors=[Edge()])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, _handlers(b)),))
        address = f"unix:{tmp_path / 'edge.sock'}"
        server.add_insecure_port(address)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                await scenario(channel, b)
        finally:
            await server.stop(None)

    asyncio.run(asyncio.wait_for(main(), 60))


async def call(channel: grpc.aio.Channel, method: str) -> tuple[list[bytes], grpc.StatusCode, str]:
    """Calls `method` with two request messages where it takes a stream; what came back, and the status."""
    path = f"/{SERVICE}/{method}"
    got: list[bytes] = []
    try:
        if method == "UnaryUnary":
            got.append(await channel.unary_unary(path)(b"x"))
        elif method.startswith("UnaryStream"):
            async for item in channel.unary_stream(path)(b"x"):
                got.append(item)
        elif method == "StreamUnary":
            got.append(await channel.stream_unary(path)(iter([b"a", b"b"])))
        else:
            async for item in channel.stream_stream(path)(iter([b"a", b"b"])):
                got.append(item)
    except grpc.aio.AioRpcError as exc:
        return got, exc.code(), exc.details() or ""
    return got, S.OK, ""


METHODS = ["UnaryUnary", "UnaryStream", "UnaryStreamWrites", "StreamUnary", "StreamStream"]


def test_every_status_code_an_error_carries_reaches_the_caller_with_its_message(tmp_path: Path) -> None:
    """The statuses errors answer with are theirs; any other status named (a peer's INTERNAL relayed,
    OK) is UNKNOWN, with the message: INTERNAL from the daemon means a bug of its own."""

    async def scenario(channel: grpc.aio.Channel, b: Behaviour) -> None:
        for code in S:
            b.error = Coded(code.name, f"because {code.name}")
            want = code if code in ANSWERS else S.UNKNOWN
            assert await call(channel, "UnaryUnary") == ([], want, f"because {code.name}")

    serve(tmp_path, scenario)


@pytest.mark.parametrize(
    "error",
    [
        datamgr_errors.NotFound("no such table"),
        datamgr_errors.TooLarge("over the limit"),
        udmf_errors.PermissionDenied("not granted"),
        aicap_errors.FailedPrecondition("no chat template"),
    ],
)
def test_each_packages_errors_map_by_their_code(tmp_path: Path, error: Exception) -> None:
    async def scenario(channel: grpc.aio.Channel, b: Behaviour) -> None:
        b.error = error
        code = grpc.StatusCode[error.code]  # type: ignore[attr-defined]
        assert await call(channel, "UnaryUnary") == ([], code, error.message)  # type: ignore[attr-defined]

    serve(tmp_path, scenario)


@pytest.mark.parametrize("method", METHODS)
def test_streams_of_each_kind_end_with_the_status_after_what_was_sent(tmp_path: Path, method: str) -> None:
    async def scenario(channel: grpc.aio.Channel, b: Behaviour) -> None:
        b.before = 2
        b.error = Coded("RESOURCE_EXHAUSTED", "too many")
        got, code, details = await call(channel, method)
        assert (code, details) == (S.RESOURCE_EXHAUSTED, "too many")
        if method.startswith("UnaryStream"):
            assert got == [b"0", b"1"]
        elif method == "StreamStream":
            assert got == [b"a", b"b"]
        b.error = None
        assert (await call(channel, method))[1] == S.OK

    serve(tmp_path, scenario)


@pytest.mark.parametrize("method", METHODS)
def test_anything_else_is_internal_with_a_generic_message_and_one_logged_traceback(
    tmp_path: Path, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(channel: grpc.aio.Channel, b: Behaviour) -> None:
        b.error = KeyError("secret detail")
        _, code, details = await call(channel, method)
        assert code == S.INTERNAL
        assert details == f"internal error in {method} (details in the daemon log)"

    with caplog.at_level(logging.ERROR, logger="datamgr.rpc"):
        serve(tmp_path, scenario)
    bugs = [r for r in caplog.records if r.name == "datamgr.rpc"]
    assert len(bugs) == 1 and bugs[0].getMessage() == f"bug in {method}"
    assert bugs[0].exc_info is not None and isinstance(bugs[0].exc_info[1], KeyError)


@pytest.mark.parametrize("code", [1, "e3q8", "not_found", None])
def test_a_code_that_names_no_error_status_is_a_bug(tmp_path: Path, code: Any) -> None:
    """An errno, SQLAlchemy's error codes, llama_decode's return code: none is a status to send."""

    async def scenario(channel: grpc.aio.Channel, b: Behaviour) -> None:
        b.error = Coded(code, "detail")
        assert (await call(channel, "UnaryUnary"))[1] == S.INTERNAL

    serve(tmp_path, scenario)


def test_a_servicers_own_abort_passes_untouched_and_is_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(channel: grpc.aio.Channel, b: Behaviour) -> None:
        b.abort = (S.NOT_FOUND, "aborted here")
        for method in METHODS:
            assert (await call(channel, method))[1:] == (S.NOT_FOUND, "aborted here")

    with caplog.at_level(logging.DEBUG, logger="datamgr.rpc"):
        serve(tmp_path, scenario)
    assert not [r for r in caplog.records if r.name == "datamgr.rpc"]


def test_undecodable_requests_are_still_invalid_argument(tmp_path: Path) -> None:
    async def scenario(channel: grpc.aio.Channel, b: Behaviour) -> None:
        garbage = b"\xff\xff\xff"
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await channel.unary_unary(f"/{SERVICE}/Decoded")(garbage)
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            await channel.stream_unary(f"/{SERVICE}/DecodedStream")(iter([b"", garbage]))
        for info in (unary, stream):
            assert info.value.code() == S.INVALID_ARGUMENT
            assert "malformed request" in (info.value.details() or "")
        assert await channel.unary_unary(f"/{SERVICE}/Decoded")(b"") == b"decoded"

    serve(tmp_path, scenario)


def test_status_of_reads_the_code_by_shape() -> None:
    assert status_of(Coded("NOT_FOUND", "x")) == S.NOT_FOUND
    assert status_of(datamgr_errors.DatamgrError("root")) == S.UNKNOWN
    assert status_of(Coded("DATA_LOSS", "a peer's")) == S.UNKNOWN
    assert status_of(ValueError("plain")) is None


@pytest.mark.parametrize("method", ["UnaryUnary", "UnaryStream"])
@pytest.mark.parametrize("how", ["error", "abort", "bug"])
def test_a_refused_request_is_freed_with_its_call_not_by_the_garbage_collector(
    tmp_path: Path, method: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """grpc keeps a call's AbortError in the call's state, which the error's traceback frames refer to:
    a cycle that held each refused request until a full collection (+150 MiB under a flood of refused
    1 MiB writes). With the collector off, 20 refused 1 MiB requests must leave (almost) nothing."""
    import gc
    import tracemalloc

    path = f"/{SERVICE}/{method}"

    async def scenario(channel: grpc.aio.Channel, b: Behaviour) -> None:
        if how == "abort":
            b.abort = (S.NOT_FOUND, "gone")
        else:
            b.error = Coded("NOT_FOUND", "gone") if how == "error" else KeyError("a bug")
        payload = bytes(1 << 20)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            with pytest.raises(grpc.aio.AioRpcError):
                if method == "UnaryUnary":
                    await channel.unary_unary(path)(payload)
                else:
                    async for _item in channel.unary_stream(path)(payload):
                        pass
        await asyncio.sleep(0.1)  # the server's call objects go after the client's
        held = tracemalloc.get_traced_memory()[0] - base
        assert held < 8 << 20, f"{held >> 20} MiB held after 20 refused 1 MiB requests"

    gc.disable()
    tracemalloc.start()
    try:
        with caplog.at_level(logging.CRITICAL, logger="datamgr.rpc"):
            serve(tmp_path, scenario)
    finally:
        tracemalloc.stop()
        gc.enable()

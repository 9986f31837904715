"""The server edge's per-call cost, side by side with what it replaced, in one process on the same calls.

Run: .venv/bin/python benchmarks/edge_bench.py [--calls 200000] [--rounds 7]

Baseline (before issue 11, copied here): a `DecodeGuard` interceptor (one wrapper per method) plus the
per-method `@rpc` decorator that mapped errors (a second). Ours: the one `Edge` interceptor, whose one
wrapper maps errors and refuses undecodable requests, methods undecorated.
Each call is what grpc does per RPC once the method is found: the interceptor's `intercept_service`,
then the handler's behaviour, for a unary method and for a server stream of 3 messages (an async
generator), plus a unary call that fails with a coded error. Prints ns per call (best round of each)
and ours/baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine  # noqa: E402

from datamgr._decode import UndecodableRequest, decoder, refuse  # noqa: E402
from datamgr._edge import Edge  # noqa: E402
from datamgr.errors import DatamgrError, NotFound  # noqa: E402

# ---- the baseline: the per-method decorator and the decode-only interceptor, as they were ----

STATUS = {c.name: c for c in grpc.StatusCode}


async def _old_abort(context: Any, exc: BaseException, name: str) -> None:
    if isinstance(exc, DatamgrError):
        await context.abort(STATUS.get(exc.code, grpc.StatusCode.UNKNOWN), exc.message)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name} (details in the daemon log)")


def rpc(fn: Callable[..., Any]) -> Callable[..., Any]:
    name = fn.__name__
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: Any, request: Any, context: Any) -> Any:
            try:
                async for item in fn(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:
                await _old_abort(context, exc, name)

        return stream

    @functools.wraps(fn)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _old_abort(context, exc, name)

    return unary


def guard(method: str, handler: Any) -> Any:
    """The old decode guard of a unary-request method: its own wrapper frame around the behaviour."""
    inner = handler.unary_stream if handler.response_streaming else handler.unary_unary
    if inspect.isasyncgenfunction(inner):

        async def stream(request: Any, context: Any) -> Any:
            if type(request) is UndecodableRequest:
                await refuse(context, request)
            async for item in inner(request, context):
                yield item

        behaviour: Any = stream
        make = grpc.unary_stream_rpc_method_handler
    else:

        async def unary(request: Any, context: Any) -> Any:
            if type(request) is UndecodableRequest:
                await refuse(context, request)
            return await inner(request, context)

        behaviour = unary
        make = grpc.unary_unary_rpc_method_handler
    decode = decoder(method, handler.request_deserializer, False, None)
    return make(behaviour, request_deserializer=decode, response_serializer=handler.response_serializer)


class DecodeGuard(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._guarded: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        cached = self._guarded.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._guarded[method] = (handler, guard(method, handler))
        return cached[1]


# ---- one servicer, decorated and not ----


class Aborted(Exception):
    pass


class Context:
    async def abort(self, code: Any, details: str) -> None:
        raise Aborted(code)


class Plain:
    async def Get(self, request: Any, context: Any) -> Any:
        return request

    async def Fail(self, request: Any, context: Any) -> Any:
        raise NotFound("no such row")

    async def Stream(self, request: Any, context: Any) -> Any:
        for _ in range(3):
            yield request


class Decorated:
    Get = rpc(Plain.Get)
    Fail = rpc(Plain.Fail)
    Stream = rpc(Plain.Stream)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def handlers(servicer: Any) -> dict[str, Any]:
    decode = health_pb2.HealthCheckRequest.FromString
    return {
        "/b.S/Get": grpc.unary_unary_rpc_method_handler(servicer.Get, request_deserializer=decode),
        "/b.S/Fail": grpc.unary_unary_rpc_method_handler(servicer.Fail, request_deserializer=decode),
        "/b.S/Stream": grpc.unary_stream_rpc_method_handler(servicer.Stream, request_deserializer=decode),
    }


async def run(interceptor: Any, servicer: Any, method: str, calls: int) -> float:
    """ns per call: the interceptor, then the behaviour (its messages taken, or its status)."""
    table = handlers(servicer)

    async def continuation(details: Details) -> Any:
        return table[details.method]

    details, context, request = Details(method), Context(), health_pb2.HealthCheckRequest()
    started = time.perf_counter_ns()
    for _ in range(calls):
        handler = await interceptor.intercept_service(continuation, details)
        if handler.response_streaming:
            async for _item in handler.unary_stream(request, context):
                pass
        else:
            with contextlib.suppress(Aborted):
                await handler.unary_unary(request, context)
    return (time.perf_counter_ns() - started) / calls


async def main(calls: int, rounds: int) -> None:
    print(machine())
    print(f"{calls} calls per round, best of {rounds} rounds\n")
    print(f"{'call':<28}{'baseline ns':>14}{'edge ns':>10}{'ratio':>8}")
    for method, label in (
        ("/b.S/Get", "unary"),
        ("/b.S/Stream", "server stream (3 messages)"),
        ("/b.S/Fail", "unary, NOT_FOUND"),
    ):
        base, ours = [], []
        for _ in range(rounds):  # interleaved, so that drift affects both alike
            base.append(await run(DecodeGuard(), Decorated(), method, calls))
            ours.append(await run(Edge(), Plain(), method, calls))
        b, o = min(base), min(ours)
        print(f"{label:<28}{b:>14.0f}{o:>10.0f}{o / b:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))

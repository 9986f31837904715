"""Requests that do not decode are INVALID_ARGUMENT, for every method of a server, in one place.

grpc decodes a unary request before the servicer runs, so a failure there is UNKNOWN with a traceback
in grpc's log; a streamed request decodes inside the servicer's loop over its requests, where the
servicer's error mapping takes it for a bug (INTERNAL, traceback). `DecodeGuard`, a server
interceptor, rewraps each method's request deserializer: a unary request that does not decode (garbage,
a length that lies, nesting past protobuf's recursion limit) reaches the behaviour as a marker the
wrapper aborts on; in a stream the failure is raised as an `AbortError` (the servicers' mappings let
those through untouched) and noted on the call, so the wrapper aborts with INVALID_ARGUMENT even when a
servicer's reader task swallowed it and the call ended as if the stream had closed. Registered after
the interceptors that refuse unknown callers (daemon: CallerGate; peer server: the trust check), so
those answer first and every handler they pass on is guarded. `meter`, if given, is told each request's
size in bytes as it is decoded (the daemon's per-app ingress pacing, `datamgr.ingress`).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

log = logging.getLogger("datamgr.rpc")

_FACTORIES = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}
# The undecodable messages of the current streaming call (a list the wrapper puts in the call's context;
# the servicer's tasks inherit it, so a reader task's failure is seen too).
_failures: contextvars.ContextVar[list[UndecodableRequest]] = contextvars.ContextVar("undecodable")


class UndecodableRequest(grpc.aio.AbortError):
    """A request message that does not decode; an AbortError, so servicers' mappings re-raise it."""

    def __init__(self, method: str, error: Exception) -> None:
        self.message = (
            f"malformed request to {method}: not a valid protobuf message, or nested deeper than "
            f"protobuf's recursion limit ({error})"
        )
        super().__init__(self.message)


def _deserializer(
    method: str, decode: Callable[[bytes], Any], streaming: bool, meter: Callable[[int], None] | None
) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        if meter is not None:
            meter(len(raw))
        try:
            return decode(raw)
        except (DecodeError, RecursionError) as exc:
            failure = UndecodableRequest(method, exc)
            if not streaming:
                return failure  # the behaviour aborts on it: raising here would be grpc's UNKNOWN
            failures = _failures.get(None)
            if failures is not None:
                failures.append(failure)
            raise failure from None

    return deserialize


async def _refuse(context: Any, failure: UndecodableRequest) -> None:
    log.debug("refused: %s (peer %s)", failure.message, context.peer())
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, failure.message)


def _unary_behaviour(inner: Callable[..., Any]) -> Callable[..., Any]:
    """The behaviour of a unary-request method: a request that did not decode is refused."""
    if inspect.isasyncgenfunction(inner):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if type(request) is UndecodableRequest:
                await _refuse(context, request)
            async for item in inner(request, context):
                yield item

        return stream

    async def unary(request: Any, context: Any) -> Any:
        if type(request) is UndecodableRequest:
            await _refuse(context, request)
        return await inner(request, context)

    return unary


def _stream_behaviour(inner: Callable[..., Any]) -> Callable[..., Any]:
    """The behaviour of a request-streaming method: a message that did not decode ends the call."""
    if inspect.isasyncgenfunction(inner):

        async def stream(requests: Any, context: Any) -> AsyncIterator[Any]:
            failures: list[UndecodableRequest] = []
            _failures.set(failures)
            try:
                async for item in inner(requests, context):
                    yield item
            except UndecodableRequest as exc:
                failures.insert(0, exc)
            if failures and not context.done():
                await _refuse(context, failures[0])

        return stream

    async def call(requests: Any, context: Any) -> Any:
        failures: list[UndecodableRequest] = []
        _failures.set(failures)
        result = None
        try:
            result = await inner(requests, context)
        except UndecodableRequest as exc:
            failures.insert(0, exc)
        if failures and not context.done():
            await _refuse(context, failures[0])
        return result

    return call


def guard(method: str, handler: Any, meter: Callable[[int], None] | None = None) -> Any:
    """`handler` with its request deserializer and behaviour wrapped as the module docstring says;
    unchanged if it is synchronous or takes raw bytes."""
    attr, make = _FACTORIES[bool(handler.request_streaming), bool(handler.response_streaming)]
    inner = getattr(handler, attr)
    is_async = inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)
    if handler.request_deserializer is None or not is_async:
        return handler
    streaming = bool(handler.request_streaming)
    wrap = _stream_behaviour if streaming else _unary_behaviour
    return make(
        wrap(inner),
        request_deserializer=_deserializer(method, handler.request_deserializer, streaming, meter),
        response_serializer=handler.response_serializer,
    )


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Applies `guard` to every method of the server (each handler wrapped once, then reused)."""

    def __init__(self, meter: Callable[[int], None] | None = None) -> None:
        self._guarded: dict[str, tuple[Any, Any]] = {}
        self._meter = meter

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method  # type: ignore[attr-defined]
        cached = self._guarded.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._guarded[method] = (handler, guard(method, handler, self._meter))
        return cached[1]

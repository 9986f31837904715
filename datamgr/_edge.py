"""The server edge: where every call of every server the daemon runs turns an error into its status.

`Edge`, a server interceptor placed last on the app-facing server and on the peer and pairing ports,
wraps each method's handler once (then reuses it), whatever its kind (unary or streaming requests,
a coroutine or an async generator answering). An exception that carries a status code ends the call
with it: `code`, the name of a grpc.StatusCode, and `message` (a status outside `_ANSWERS` is
UNKNOWN). DatamgrError, UdmfError and AicapError all have that shape, so udmf and aicap raise their
own errors and import nothing of datamgr. Any other exception is a bug: logged once with its
traceback, INTERNAL to the caller without one. A call the servicer aborted itself passes untouched.
The same wrapper decodes requests (`datamgr._decode`): one that does not decode is INVALID_ARGUMENT,
and each one's size is charged to the app (`meter`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from datamgr._decode import UndecodableRequest, decoder, refuse, stream_guard

log = logging.getLogger("datamgr.rpc")

_FACTORIES = {  # a handler's (request_streaming, response_streaming): its attribute, its factory
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}

S = grpc.StatusCode
# What an error may answer with. Another status it names (a peer's INTERNAL relayed, say) is UNKNOWN:
# INTERNAL from this daemon means a bug of its own.
_ANSWERS = {
    code.name: code
    for code in (
        S.INVALID_ARGUMENT, S.UNAUTHENTICATED, S.PERMISSION_DENIED, S.NOT_FOUND, S.ALREADY_EXISTS,
        S.RESOURCE_EXHAUSTED, S.UNAVAILABLE, S.DEADLINE_EXCEEDED, S.FAILED_PRECONDITION, S.CANCELLED,
        S.UNIMPLEMENTED,
    )
}  # fmt: skip
_NAMES = frozenset(code.name for code in S)


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    """The status an error carries (`code`, the name of a grpc.StatusCode), None if it carries none:
    a `code` that names no status (an errno, SQLAlchemy's "e3q8") is not one."""
    code = getattr(exc, "code", None)
    if not isinstance(code, str) or code not in _NAMES:
        return None
    return _ANSWERS.get(code, S.UNKNOWN)


async def abort(context: grpc.aio.ServicerContext, exc: Exception, name: str) -> None:
    """Ends the call of method `name` for `exc`: its own status and message, or INTERNAL for a bug."""
    code = status_of(exc)
    if code is not None:
        message = getattr(exc, "message", None)
        exc.__traceback__ = None  # see _ended
        await context.abort(code, message if isinstance(message, str) else str(exc))
    log.error("bug in %s", name, exc_info=exc)
    exc.__traceback__ = None
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name} (details in the daemon log)")


async def _ended(context: grpc.aio.ServicerContext, exc: Exception, name: str) -> grpc.aio.AbortError:
    """The AbortError that ends the call for `exc` (see `abort`), holding no frame.

    grpc keeps the AbortError in the call's state, which its traceback's frames reference (through
    `context`): a reference cycle, freed only by the garbage collector, that held every frame the error
    passed through and so the call's request. Under a flood of refused 1 MiB writes the daemon grew by
    150 MiB between full collections; with no frames in it the request goes when the call does."""
    try:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        await abort(context, exc, name)
    except grpc.aio.AbortError as aborted:
        aborted.__traceback__ = aborted.__context__ = aborted.__cause__ = None
        return aborted
    raise AssertionError("abort returned")


def _answering(inner: Callable[..., AsyncIterator[Any]], name: str, decoded: bool) -> Any:
    """An async-generator behaviour with errors mapped (`decoded`: a unary request that did not decode
    is refused first, in the same frame)."""

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            if decoded and type(request) is UndecodableRequest:
                await refuse(context, request)
            async for item in inner(request, context):
                yield item
            return
        except Exception as exc:  # AbortError included
            ended = await _ended(context, exc, name)
        del request  # this frame is in the error's traceback
        raise ended

    return stream


def _returning(inner: Callable[..., Awaitable[Any]], name: str, decoded: bool) -> Any:
    """A coroutine behaviour with errors mapped (`decoded`: as `_answering`)."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if decoded and type(request) is UndecodableRequest:
                await refuse(context, request)
            return await inner(request, context)
        except Exception as exc:  # AbortError included
            ended = await _ended(context, exc, name)
        del request  # this frame is in the error's traceback
        raise ended

    return call


def wrap(method: str, handler: Any, meter: Callable[[int], None] | None = None) -> Any:
    """`handler` with its errors mapped and its requests decoded as the module docstring says; one
    wrapper frame for a unary request, two for a request stream (`datamgr._decode.stream_guard`);
    unchanged if its behaviour is synchronous."""
    streaming = bool(handler.request_streaming)
    attr, make = _FACTORIES[streaming, bool(handler.response_streaming)]
    inner = getattr(handler, attr)
    name = method.rpartition("/")[2]
    mapped: Callable[..., Any]
    if inspect.isasyncgenfunction(inner):
        mapped = _answering
    elif inspect.iscoroutinefunction(inner):
        mapped = _returning
    else:
        return handler
    decode = handler.request_deserializer
    if decode is None:  # raw bytes: nothing to decode
        behaviour = mapped(inner, name, False)
    elif streaming:
        behaviour = stream_guard(mapped(inner, name, False))
        decode = decoder(method, decode, True, meter)
    else:
        behaviour = mapped(inner, name, True)
        decode = decoder(method, decode, False, meter)
    return make(behaviour, request_deserializer=decode, response_serializer=handler.response_serializer)


class Edge(grpc.aio.ServerInterceptor):
    """Maps errors to statuses and guards decoding for every method of the server (each handler
    wrapped once, then reused). Last among a server's interceptors, so it wraps the servicers' own
    behaviour, and gates before it (unknown callers, untrusted devices) answer first."""

    def __init__(self, meter: Callable[[int], None] | None = None) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}
        self._meter = meter

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method  # type: ignore[attr-defined]
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, wrap(method, handler, self._meter))
        return cached[1]

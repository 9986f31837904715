"""Requests that do not decode are INVALID_ARGUMENT, for every method of a server, in one place.

grpc decodes a unary request before the servicer runs, so a failure there is UNKNOWN with a traceback
in grpc's log; a streamed request decodes inside the servicer's loop over its requests, where the
error mapping would take it for a bug (INTERNAL, traceback). The server edge (`datamgr._edge.Edge`)
gives every method the request deserializer `decoder` makes: a unary request that does not decode
(garbage, a length that lies, nesting past protobuf's recursion limit) reaches the behaviour as an
`UndecodableRequest` marker, which the edge's wrapper refuses (`refuse`); in a stream the failure is
raised as an `AbortError` (the edge's error mapping lets those through untouched) and noted on the
call, so `stream_guard` aborts with INVALID_ARGUMENT even when a servicer's reader task swallowed it
and the call ended as if the stream had closed. `meter`, if given, is told each request's size in
bytes as it is decoded (the daemon's per-app ingress pacing, `datamgr.ingress`).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

log = logging.getLogger("datamgr.rpc")

# The undecodable messages of the current streaming call (a list the wrapper puts in the call's context;
# the servicer's tasks inherit it, so a reader task's failure is seen too).
_failures: contextvars.ContextVar[list[UndecodableRequest]] = contextvars.ContextVar("undecodable")


class UndecodableRequest(grpc.aio.AbortError):
    """A request message that does not decode; an AbortError, so the error mapping re-raises it."""

    def __init__(self, method: str, error: Exception) -> None:
        self.message = (
            f"malformed request to {method}: not a valid protobuf message, or nested deeper than "
            f"protobuf's recursion limit ({error})"
        )
        super().__init__(self.message)


def decoder(
    method: str, decode: Callable[[bytes], Any], streaming: bool, meter: Callable[[int], None] | None
) -> Callable[[bytes], Any]:
    """`decode` for `method`, as the module docstring says (`streaming`: the method's requests are)."""

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


async def refuse(context: Any, failure: UndecodableRequest) -> None:
    """Ends the call with INVALID_ARGUMENT for the request that did not decode."""
    log.debug("refused: %s (peer %s)", failure.message, context.peer())
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, failure.message)


def stream_guard(inner: Callable[..., Any]) -> Callable[..., Any]:
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
                await refuse(context, failures[0])

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
            await refuse(context, failures[0])
        return result

    return call

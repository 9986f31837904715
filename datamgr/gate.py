"""The app-facing server's front gate: what a caller may make the daemon read before it is known.

Every method needs a token the daemon knows (an app's or the admin's) except the open ones (health
checking, reflection). `CallerGate`, a server interceptor, sees the method and the metadata before grpc
reads the request: a call without a known token gets UNAUTHENTICATED from a request-streaming handler
that never reads, so of however large a message the daemon holds no more than HTTP/2 flow control lets
in. Known callers get the method's own handler, untouched, under the server's limits; what that costs
per call is this interceptor and one more token lookup (SHA-256 and a dict lookup): about 3 us.

grpc has one receive limit per server, not per method: the open methods accept a message as large as
anyone's, and grpc reads all of it once asked for it. Unknown callers' requests to them are therefore
read one at a time (one slot, each read given `read_timeout_s`), as bytes, and refused past
`open_max_bytes` before they are decoded: between them they hold at most one message at a time
(grpc's reading of a 100 MB one peaks at about 4x its size). The slot is held while a read waits, so
an open stream left idle by an unknown caller ends after `read_timeout_s`.

Known apps' requests are paced by bytes (`datamgr.ingress`): an app in debt has its next unary request
read by the gate after a wait (bounded by the call's deadline; RESOURCE_EXHAUSTED naming
`app_ingress_bytes_per_s` if the wait would pass it), and each message of a request stream waits the same
way before it is read. An app not in debt gets its unary handler untouched (one dict lookup more).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from datamgr import tenant
from datamgr.apps import App
from datamgr.caller import NO_TOKEN, UNKNOWN_TOKEN, token_in
from datamgr.ingress import SETTING, IngressPacer

log = logging.getLogger("datamgr.gate")


def refusal(code: grpc.StatusCode, message: str, read_first_s: float | None = None) -> grpc.RpcMethodHandler:
    """A handler that refuses the call without reading its request (a stream handler reads only when
    asked), whatever the method's kind: on the wire every call is a stream.

    With `read_first_s`, it first waits that long for the first request message (as bytes, under the
    server's receive limit), for callers that stream: an asyncio client whose first `write` meets a call
    the server already ended gets INTERNAL ("Internal error from Core") instead of the refusal."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        if read_first_s is not None:
            with contextlib.suppress(Exception):  # none sent, too large, the caller left: refuse anyway
                await asyncio.wait_for(anext(aiter(requests)), read_first_s)
        await context.abort(code, message)

    return grpc.stream_unary_rpc_method_handler(refuse)


class CallerGate(grpc.aio.ServerInterceptor):
    """Refuses unknown callers before their request is read; reads unknown callers' requests to the
    open methods one at a time, and refuses those over `open_max_bytes`."""

    def __init__(
        self,
        caller: Callable[[str], App | None],
        open_services: Iterable[str],
        open_max_bytes: int,
        read_timeout_s: float = 5.0,
        pacer: IngressPacer | None = None,
    ) -> None:
        self._caller = caller  # a token's caller (an app, or the owner), None if unknown: Identify.lookup
        self._pacer = pacer
        self._open = frozenset(open_services)
        self._open_max_bytes = open_max_bytes
        self._read_timeout_s = read_timeout_s
        self._slot = asyncio.Semaphore(1)
        self._refusals = {
            False: refusal(grpc.StatusCode.UNAUTHENTICATED, NO_TOKEN),
            True: refusal(grpc.StatusCode.UNAUTHENTICATED, UNKNOWN_TOKEN),
        }
        self._paced: dict[str, tuple[Any, Any]] = {}  # open methods, read for unknown callers
        self._waiting: dict[str, tuple[Any, Any]] = {}  # any method, read for apps in debt

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        token = token_in(details.invocation_metadata)  # type: ignore[attr-defined]
        method: str = details.method  # type: ignore[attr-defined]
        caller = self._caller(token) if token is not None else None
        if caller is not None:
            app, pacer = caller.bundle, self._pacer
            if not app or pacer is None or not (handler.request_streaming or pacer.delay(app)):
                return handler
            cached = self._waiting.get(method)
            if cached is None or cached[0] is not handler:
                cached = self._waiting[method] = (handler, self._paced_handler(handler, self._read_paced))
            return cached[1]
        if method.split("/", 2)[1] in self._open:
            cached = self._paced.get(method)
            if cached is None or cached[0] is not handler:
                cached = self._paced[method] = (handler, self._paced_handler(handler, self._read))
            return cached[1]
        log.debug("refused %s before reading it: %s token", method, "unknown" if token else "no")
        return self._refusals[token is not None]

    async def _read(self, context: grpc.aio.ServicerContext, deserialize: Callable[[bytes], Any]) -> Any:
        """The call's next request (EOF at the end), read as bytes while holding the one slot of unknown
        callers, then checked against `open_max_bytes` and decoded."""
        raw: Any = None
        async with self._slot:
            with contextlib.suppress(TimeoutError):
                raw = await asyncio.wait_for(context.read(), self._read_timeout_s)
        if raw is None:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"a request without a token must arrive within {self._read_timeout_s:g} s",
            )
        if raw is grpc.aio.EOF:
            return raw
        if (size := len(raw)) > self._open_max_bytes:
            del raw  # not kept alive by the abort's traceback
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a request without a token is at most {self._open_max_bytes} bytes "
                f"(open_max_message_bytes); this one has {size}",
            )
        return deserialize(raw)

    async def _read_paced(
        self, context: grpc.aio.ServicerContext, deserialize: Callable[[bytes], Any]
    ) -> Any:
        """The call's next request, read once its app is out of debt (`datamgr.ingress`): the wait is
        bounded by the call's deadline, and refused at once if it would pass it."""
        assert self._pacer is not None
        app = tenant.current()  # the gate's caller lookup entered the call's tenant
        while (wait := self._pacer.delay(app)) > 0:
            remaining = context.time_remaining()
            if remaining is not None and wait > remaining:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{app} sends requests faster than {self._pacer.rate:.0f} bytes/s "
                    f"({SETTING}): the next may be read in {wait:.2f} s, past this call's deadline",
                )
            await asyncio.sleep(wait)
        raw = await context.read()
        return raw if raw is grpc.aio.EOF else deserialize(raw)

    async def _messages(
        self, context: Any, deserialize: Callable[[bytes], Any], read: Any
    ) -> AsyncIterator[Any]:
        while (message := await read(context, deserialize)) is not grpc.aio.EOF:
            yield message

    async def _request(self, context: Any, deserialize: Callable[[bytes], Any], read: Any) -> Any:
        message = await read(context, deserialize)
        if message is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
        return message

    def _paced_handler(self, handler: Any, read: Any) -> Any:
        """`handler` as a request-streaming handler whose messages are read by `read` (`_read` or
        `_read_paced`; the daemon's methods are all async)."""
        streaming = bool(handler.request_streaming)
        deserialize = handler.request_deserializer or (lambda raw: raw)
        if handler.response_streaming:
            inner = handler.stream_stream if streaming else handler.unary_stream
            make: Any = grpc.stream_stream_rpc_method_handler
        else:
            inner = handler.stream_unary if streaming else handler.unary_unary
            make = grpc.stream_unary_rpc_method_handler

        async def request(context: Any) -> Any:
            if streaming:
                return self._messages(context, deserialize, read)
            return await self._request(context, deserialize, read)

        if inspect.isasyncgenfunction(inner):

            async def generate(requests: Any, context: Any) -> AsyncIterator[Any]:
                async for item in inner(await request(context), context):
                    yield item

            behaviour: Any = generate
        else:

            async def call(requests: Any, context: Any) -> Any:
                return await inner(await request(context), context)

            behaviour = call
        return make(behaviour, request_deserializer=None, response_serializer=handler.response_serializer)

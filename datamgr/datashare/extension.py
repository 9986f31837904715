"""Extension mode: live provider handlers attached over a bidirectional stream, and calls routed to them.

A provider process calls AttachProvider; the daemon keeps one connection per bundle, sends consumers'
calls down it with a call id, and resolves each waiting consumer when the matching reply comes back.
A provider that does not answer in time gives DEADLINE_EXCEEDED; one that is gone gives UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from datamgr.errors import AlreadyExists, DatamgrError, DeadlineExceeded, Unavailable
from datamgr.v1 import datashare_pb2 as pb

log = logging.getLogger("datamgr.datashare.extension")
_GONE = object()


@dataclass(eq=False)
class _Connection:
    bundle: str
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: dict[int, asyncio.Future] = field(default_factory=dict)


class ExtensionRouter:
    """The attached providers; all methods run on the event loop."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._conns: dict[str, _Connection] = {}
        self._ids = itertools.count(1)

    def attached(self, bundle: str) -> bool:
        return bundle in self._conns

    async def call(self, bundle: str, caller: str, op: str, request: Any) -> pb.ProviderReply:
        """Sends `request` (an InsertRequest, QueryRequest, ...) as operation `op` and awaits the reply."""
        conn = self._conns.get(bundle)
        if conn is None:
            raise Unavailable(f"provider {bundle} is not attached: its extension process is not running")
        call_id = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        conn.pending[call_id] = fut
        call = pb.ProviderCall(call_id=call_id, caller=caller)
        getattr(call, op).CopyFrom(request)
        conn.outbox.put_nowait(call)
        try:
            return await asyncio.wait_for(fut, self._timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"provider {bundle} did not answer within {self._timeout:g} s") from None
        finally:
            conn.pending.pop(call_id, None)

    async def attach(
        self,
        bundle: str,
        incoming: AsyncIterator[pb.ProviderMessage],
        allowed: Callable[[], None] = lambda: None,
    ) -> AsyncIterator[pb.ProviderCall]:
        """Serves one provider connection: yields calls for it until it goes away, `allowed()` raises
        before a call (its app was removed) or `end` ends it."""
        if bundle in self._conns:
            raise AlreadyExists(f"a handler for {bundle} is already attached")
        conn = _Connection(bundle)
        self._conns[bundle] = conn
        log.info("provider %s attached", bundle)
        reader = asyncio.create_task(self._read(conn, incoming))
        try:
            yield pb.ProviderCall(attached=pb.ProviderAttached(bundle=bundle))
            while True:
                call = await conn.outbox.get()
                if call is _GONE:
                    return
                if isinstance(call, DatamgrError):
                    raise call
                allowed()
                yield call
        finally:
            reader.cancel()
            self._detach(conn)

    async def _read(self, conn: _Connection, incoming: AsyncIterator[pb.ProviderMessage]) -> None:
        try:
            async for msg in incoming:
                if msg.WhichOneof("msg") != "reply":
                    continue
                fut = conn.pending.get(msg.reply.call_id)
                if fut is not None and not fut.done():
                    fut.set_result(msg.reply)
        except Exception as exc:  # the stream broke: same as the provider going away
            log.info("provider %s stream ended: %s", conn.bundle, exc)
        finally:
            conn.outbox.put_nowait(_GONE)
            self._detach(conn)

    def _detach(self, conn: _Connection) -> None:
        if self._conns.get(conn.bundle) is conn:
            del self._conns[conn.bundle]
            log.info("provider %s detached", conn.bundle)
        for fut in conn.pending.values():
            if not fut.done():
                fut.set_exception(Unavailable(f"provider {conn.bundle} went away before answering"))
        conn.pending.clear()

    def end(self, bundle: str, error: DatamgrError) -> None:
        """Detaches `bundle`'s provider: its stream ends with `error`, calls waiting on it get UNAVAILABLE."""
        conn = self._conns.get(bundle)
        if conn is not None:
            conn.outbox.put_nowait(error)
            self._detach(conn)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            conn.outbox.put_nowait(_GONE)

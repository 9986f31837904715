"""Lazy drag sources: attached over StartLazyDrag, asked for their data when the drop target reads.

Each source stream is one drag with one key. When a reader needs the data, `load` sends the source a
LoadRequest and hands the parts it answers with (until LoadDone) to the service's `fill`, which checks
and stores them exactly like SetDragData. Concurrent readers share one load; a reader that goes away
does not cancel it. A source that leaves fails the load with UNAVAILABLE; one that does not deliver
within the timeout gets DEADLINE_EXCEEDED, on its stream and at the reader, and the drag ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from udmf.errors import DeadlineExceeded, InvalidArgument, UdmfError, Unavailable
from udmf.v1 import udmf_pb2 as pb

log = logging.getLogger("udmf.lazy")
Fill = Callable[[str, AsyncIterator[pb.DataPart]], Awaitable[None]]
_PARTS_BUFFERED = 8  # parts waiting for the store; beyond, the source's stream waits (flow control)


class _Gone:
    """The source left (or broke its protocol) before LoadDone."""


@dataclass(eq=False)
class _Source:
    bundle: str
    key: str
    outbox: asyncio.Queue[pb.LazySourceEvent | BaseException | None] = field(default_factory=asyncio.Queue)
    parts: asyncio.Queue[pb.DataPart | _Gone | None] = field(
        default_factory=lambda: asyncio.Queue(_PARTS_BUFFERED)
    )
    loading: asyncio.Task[None] | None = None
    expecting: bool = False  # a LoadRequest was sent and its LoadDone has not come yet
    gone: bool = False


class LazyDrags:
    """The attached lazy drag sources by key; all methods run on the event loop."""

    def __init__(self, timeout_s: float, fill: Fill) -> None:
        self._timeout = timeout_s
        self._fill = fill
        self._sources: dict[str, _Source] = {}

    async def serve(
        self, bundle: str, key: str, incoming: AsyncIterator[pb.LazySourceMessage]
    ) -> AsyncIterator[pb.LazySourceEvent]:
        """One source's stream: the key first, then a LoadRequest when a reader needs the data."""
        source = _Source(bundle, key)
        self._sources[key] = source
        reader = asyncio.create_task(self._read(source, incoming))
        try:
            yield pb.LazySourceEvent(key=key)
            while (event := await source.outbox.get()) is not None:
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            reader.cancel()
            self._leave(source)
            if source.loading is not None and not source.loading.done():
                # a source may leave right after LoadDone: its data is being stored, let that finish
                with contextlib.suppress(Exception):
                    await asyncio.shield(source.loading)

    async def load(self, key: str, target: str) -> None:
        """Has the source deliver and the service store the data under `key`."""
        source = self._sources.get(key)
        if source is None or source.gone:
            raise Unavailable(f"the drag source of {key} has gone: its data can no longer be loaded")
        if source.loading is None:
            source.loading = asyncio.create_task(self._load(source, target))
        await asyncio.shield(source.loading)

    def close(self) -> None:
        for source in list(self._sources.values()):
            source.outbox.put_nowait(Unavailable("the daemon is stopping"))

    def end(self, bundle: str, error: UdmfError) -> int:
        """Ends the streams of `bundle`'s sources with `error` (its app was removed); how many."""
        sources = [s for s in self._sources.values() if s.bundle == bundle]
        for source in sources:
            source.outbox.put_nowait(error)
        return len(sources)

    async def _load(self, source: _Source, target: str) -> None:
        source.expecting = True
        source.outbox.put_nowait(pb.LazySourceEvent(load=pb.LoadRequest(key=source.key, target=target)))
        try:
            async with asyncio.timeout(self._timeout):
                await self._fill(source.key, self._parts(source))
        except TimeoutError:
            source.outbox.put_nowait(
                DeadlineExceeded(f"the data of {source.key} did not arrive within {self._timeout:g} s")
            )
            raise DeadlineExceeded(
                f"the drag source did not deliver {source.key} within {self._timeout:g} s"
            ) from None
        except Unavailable:
            raise
        except UdmfError as exc:  # the source's data was refused: its fault, not the reader's
            source.outbox.put_nowait(exc)
            raise Unavailable(f"the drag source sent data that was refused: {exc.message}") from None

    async def _parts(self, source: _Source) -> AsyncIterator[pb.DataPart]:
        while True:
            # gone with nothing left: also when the queue was too full to take the _Gone marker
            part = _Gone() if source.gone and source.parts.empty() else await source.parts.get()
            if part is None:
                return
            if isinstance(part, _Gone):
                raise Unavailable(f"the drag source of {source.key} went away before LoadDone")
            yield part

    async def _read(self, source: _Source, incoming: AsyncIterator[pb.LazySourceMessage]) -> None:
        try:
            async for msg in incoming:
                which = msg.WhichOneof("msg")
                if which is None:
                    raise InvalidArgument("an empty LazySourceMessage")
                if which == "start":
                    raise InvalidArgument("LazyDragStart comes once, first")
                if not source.expecting:
                    raise InvalidArgument(f"a {which} message without a LoadRequest to answer")
                if which == "done":
                    source.expecting = False
                await source.parts.put(msg.part if which == "part" else None)
        except UdmfError as exc:
            source.outbox.put_nowait(exc)
        except Exception as exc:  # the stream broke: the same as the source leaving
            log.info("lazy drag source %s of %s ended: %s", source.bundle, source.key, exc)
        finally:
            source.gone = True
            source.outbox.put_nowait(None)
            with contextlib.suppress(asyncio.QueueFull):
                source.parts.put_nowait(_Gone())  # a load waiting for parts fails at once

    def _leave(self, source: _Source) -> None:
        source.gone = True
        if self._sources.get(source.key) is source:
            del self._sources[source.key]
        if source.loading is not None and not source.loading.done():
            with contextlib.suppress(asyncio.QueueFull):
                source.parts.put_nowait(_Gone())

"""The SDK's lazy drag source (ArkUI's `DragEvent.setDataLoadParams`): data made only when a target reads.

The source opens StartLazyDrag with the properties and summary and stays attached; the daemon answers
with the key, and each time a drop target reads it sends a LoadRequest, which the source answers by
calling its loader and streaming the data's parts and LoadDone. The drag ends when the source leaves
(`close()`). `LazyDrag` serves the stream on a background thread; `AsyncLazyDrag` on a task.

The proto has no "load failed" message: if the loader raises, the source leaves (the drag ends, the
reader gets the daemon's error) and the exception is kept in `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import grpc

from udmf._rpc import error_from_rpc
from udmf._wire import encode, properties_to_proto, summary_to_proto
from udmf.data import Summary, UnifiedData, UnifiedDataProperties
from udmf.errors import UdmfError
from udmf.v1 import udmf_pb2 as pb

Loader = Callable[[], UnifiedData]
AsyncLoader = Callable[[], UnifiedData | Awaitable[UnifiedData]]


def start_message(
    properties: UnifiedDataProperties, summary: Summary | Iterable[str], record_count: int
) -> pb.LazySourceMessage:
    if not isinstance(summary, Summary):
        summary = Summary.of_types(summary)
    start = pb.LazyDragStart(
        properties=properties_to_proto(properties),
        record_count=record_count,
        summary=summary_to_proto(summary),
    )
    return pb.LazySourceMessage(start=start)


def _answer(data: UnifiedData, encoding: dict[str, int]) -> Iterator[pb.LazySourceMessage]:
    for part in encode(data, **encoding):
        yield pb.LazySourceMessage(part=part)
    yield pb.LazySourceMessage(done=pb.LoadDone())


class LazyDrag:
    """An attached lazy drag source; `key` is the drag's, `loads` counts the loads answered."""

    def __init__(
        self,
        stub: Any,
        md: Any,
        start: pb.LazySourceMessage,
        loader: Loader,
        encoding: dict[str, int],
        timeout: float | None,
    ) -> None:
        self.key = ""
        self.loads = 0
        self.error: BaseException | None = None
        self._loader = loader
        self._encoding = encoding
        self._outbox: queue.Queue[Iterable[pb.LazySourceMessage] | None] = queue.Queue()
        self._outbox.put([start])
        self._closing = False
        self._started = threading.Event()
        self._call = stub.StartLazyDrag(self._requests(), metadata=md)
        self._thread = threading.Thread(target=self._serve, name="udmf-lazy-drag", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            self.close()
            raise UdmfError("the daemon did not answer the lazy drag with a key in time")
        if not self.key:
            self.close()
            raise self.error or UdmfError("the lazy drag ended before it had a key")

    def _requests(self) -> Iterator[pb.LazySourceMessage]:
        """The request stream, consumed by grpc's thread: an answer is encoded only as it is sent."""
        while True:
            batch = self._outbox.get()
            if batch is None:
                return
            yield from batch

    def _serve(self) -> None:
        try:
            for event in self._call:
                which = event.WhichOneof("event")
                if which == "key":
                    self.key = event.key
                    self._started.set()
                elif which == "load":
                    self._outbox.put(_answer(self._loader(), self._encoding))
                    self.loads += 1
        except grpc.RpcError as exc:
            if not self._closing:
                self.error = error_from_rpc(exc)
        except Exception as exc:  # the loader's: leave the drag, keep the reason
            self.error = exc
            self._call.cancel()
        finally:
            self._outbox.put(None)
            self._started.set()

    def close(self) -> None:
        """Leaves the drag: the daemon drops data no target has read."""
        self._closing = True
        self._outbox.put(None)
        self._call.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    def __enter__(self) -> LazyDrag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncLazyDrag:
    """An attached lazy drag source on the event loop; the loader may be a coroutine function (a slow
    loader should be: a plain function runs on the loop)."""

    def __init__(self, call: Any, loader: AsyncLoader, encoding: dict[str, int]) -> None:
        self.key = ""
        self.loads = 0
        self.error: BaseException | None = None
        self._call = call
        self._loader = loader
        self._encoding = encoding
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def _begin(self, start: pb.LazySourceMessage) -> None:
        try:
            await self._call.write(start)
            event = await self._call.read()
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        if event is grpc.aio.EOF or event.WhichOneof("event") != "key":
            self._call.cancel()
            raise UdmfError("the lazy drag ended before it had a key")
        self.key = event.key
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while True:
                event = await self._call.read()
                if event is grpc.aio.EOF:
                    return
                if event.WhichOneof("event") != "load":
                    continue
                data = self._loader()
                if inspect.isawaitable(data):
                    data = await data
                for message in _answer(data, self._encoding):
                    await self._call.write(message)
                self.loads += 1
        except grpc.RpcError as exc:
            if not self._closing:
                self.error = error_from_rpc(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loader's
            self.error = exc
            self._call.cancel()

    async def close(self) -> None:
        """Leaves the drag: the daemon drops data no target has read."""
        self._closing = True
        self._call.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> AsyncLazyDrag:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

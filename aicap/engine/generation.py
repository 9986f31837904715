"""One request's queue between the inference thread and its reader on the event loop.

The inference thread puts the request's TokenEvents (and an error: a refusal, the engine's stop) on
it; the reader takes them with `next()`. `kill` puts an error in front of whatever is queued, so the
request ends at once wherever its reader waits: when its model is removed, its app loses the
permission or the daemon stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aicap.engine.llm_engine import TokenEvent
from aicap.engine.sampler import SamplingParams

if TYPE_CHECKING:
    from llguidance import LLMatcher

    from aicap.engine.async_engine import LatencyHistogram
    from aicap.kv_state import KvState

_WAKE = object()  # wakes a reader to read the error `kill` left
_END = object()  # the request went to another engine: its events queued before this, then the end


@dataclass(slots=True)
class Request:
    """A request on its way to the inference thread, and the queue its events come back on."""

    seq_id: int
    prompt: list[int]
    params: SamplingParams
    app: str
    shared: tuple[str, int]
    loop: asyncio.AbstractEventLoop | None
    out: asyncio.Queue[Any]
    imported: KvState | None = None  # the KV of the prompt's first tokens (LLMEngine.add)
    prefill_only: bool = False  # LLMEngine.prefill: one event, carrying the prompt's KV state
    may_leave: bool = False  # its KV may go to the remote store when preempted (LLMEngine.add)
    matcher: LLMatcher | None = None  # structured output (LLMEngine.add)
    probe: bool = False  # the service's own speed probe: not counted among requests (LLMEngine.add)


class Generation:
    """One request's queue: its samples' TokenEvents and any error, in the order they happened.

    It is submitted at the first `next()` (or `__anext__`); `next()` returns None once every sample
    has finished or was stopped, and raises an error the engine sends (ValueError: the request does
    not fit the context; EngineClosed) or one `kill` sends. `stop(index)` ends one sample early;
    `kill(error)` ends the request with `error` wherever its reader waits (its model's removal, a
    revoked permission); `aclose()` (or leaving `contextlib.aclosing`) aborts the request, freeing
    its KV within one engine step, and sets `closed`. Used on its event loop only."""

    def __init__(
        self, req: Request, send: Callable[[Any], None], ttft: LatencyHistogram, itl: LatencyHistogram
    ) -> None:
        self._req = req
        self._send = send  # to the engine's side of the inference thread's queue
        self._ttft = ttft
        self._itl = itl
        self._started = False
        self._done = False  # nothing more will be returned
        self._error: BaseException | None = None  # from kill(), for the next read
        self._ended: set[int] = set()  # samples finished or stopped
        self._last: dict[int, float] = {}
        self._start = 0.0
        self.closed = asyncio.Event()  # its reader is finished with it (aclose)

    @property
    def request_id(self) -> int:
        return self._req.seq_id

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> TokenEvent:
        ev = await self.next()
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def next(self) -> TokenEvent | None:
        """The next event; None when every sample has finished."""
        req = self._req
        if not self._started and not self._done:
            self._started = True
            req.loop = asyncio.get_running_loop()
            self._start = time.perf_counter()
            self._send(req)
        while True:
            if self._error is not None:
                exc, self._error = self._error, None
                raise exc
            if self._done:
                return None
            item = await req.out.get()
            if item is _WAKE:
                continue
            if item is _END:
                self._done = True
                return None
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if item.index in self._ended:
                continue  # a token of a sample stopped meanwhile
            now = time.perf_counter()
            prev = self._last.get(item.index)
            if prev is None:
                self._ttft.observe(now - self._start)
            else:
                self._itl.observe(now - prev)
            self._last[item.index] = now
            if item.finished:
                self._ended.add(item.index)
                self._done = len(self._ended) >= max(1, req.params.n)
            return item

    def stop(self, index: int) -> None:
        """Ends sample `index` now (its caller found a stop string); its KV is freed."""
        if index in self._ended or self._done:
            return
        self._ended.add(index)
        if len(self._ended) >= max(1, self._req.params.n):
            self._done = True
            self._send(("abort", self._req.seq_id))
        else:
            self._send(("stop", self._req.seq_id, index))

    def kill(self, error: BaseException) -> None:
        """Ends the request: its reader gets `error` next (at once if it waits); its KV is freed."""
        self._abort()
        self._error = error
        self._req.out.put_nowait(_WAKE)

    def end(self) -> None:
        """Ends the stream without an error once its reader has read the events already queued: its
        request went to another engine (AsyncEngine.export, whose tokens are those events' and
        before); the reader's next() then returns None."""
        self._req.out.put_nowait(_END)

    async def aclose(self) -> None:
        self._abort()
        self.closed.set()

    def _abort(self) -> None:
        if self._started and not self._done:
            self._send(("abort", self._req.seq_id))
        self._done = True

"""The asyncio front end: one inference thread owns the runner and the engine; callers on the event
loop send requests through a queue and get their tokens back thread-safely.

Leaving a `generate()` stream early (the caller's RPC was cancelled or its deadline passed) aborts
the sequence; the inference thread frees its KV before its next step.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aicap.engine.llm_engine import EngineStats, LLMEngine, SamplingParams, TokenEvent

_STOP = object()
log = logging.getLogger("aicap.engine")


def _deliver(items: list[tuple[asyncio.Queue[Any], TokenEvent]]) -> None:
    for out, ev in items:
        out.put_nowait(ev)


def _dispatch(engine: LLMEngine, requests: dict[int, _Request], events: list[TokenEvent]) -> None:
    """Hands a step's events to their callers: one wake-up of each caller's loop, not one per token."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], TokenEvent]]] = {}
    for ev in events:
        target = requests.get(ev.seq_id)
        if target is None:
            continue
        if ev.finished and not engine.has_request(ev.seq_id):
            del requests[ev.seq_id]
        assert target.loop is not None
        by_loop.setdefault(target.loop, []).append((target.out, ev))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_deliver, items)


class EngineClosed(RuntimeError):
    """The engine stopped (its model was unloaded or the daemon is shutting down)."""


BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LatencyHistogram:
    """Prometheus-style cumulative buckets plus the last `keep` samples for percentiles.
    Observed on the event loop thread only."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS, keep: int = 10_000) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=keep)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.bounds):
            self.counts[i] += 1
        self.count += 1
        self.sum += value
        self._recent.append(value)

    def cumulative(self) -> list[int]:
        return list(itertools.accumulate(self.counts))

    def quantile(self, q: float) -> float:
        """The q-quantile of the recent samples (0 when there are none)."""
        if not self._recent:
            return 0.0
        data = sorted(self._recent)
        return data[min(len(data) - 1, int(q * len(data)))]


@dataclass(slots=True)
class _Request:
    seq_id: int
    prompt: list[int]
    params: SamplingParams
    app: str
    loop: asyncio.AbstractEventLoop | None
    out: asyncio.Queue[Any]


class Generation:
    """An async iterator of one request's TokenEvents; it is submitted at the first `__anext__`.

    Iteration ends when every sample has finished or was stopped. `stop(index)` ends one sample
    early; `aclose()` (or leaving `contextlib.aclosing`) aborts the request and frees its KV.
    A request the engine refuses (too long for the context) raises ValueError."""

    def __init__(self, engine: AsyncEngine, req: _Request) -> None:
        self._engine = engine
        self._req = req
        self._started = False
        self._closed = False
        self._ended: set[int] = set()  # samples finished or stopped
        self._last: dict[int, float] = {}
        self._start = 0.0

    @property
    def request_id(self) -> int:
        return self._req.seq_id

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> TokenEvent:
        req = self._req
        if not self._started:
            self._started = True
            req.loop = asyncio.get_running_loop()
            self._start = time.perf_counter()
            self._engine._inbox.put(req)
        while not self._closed:
            item = await req.out.get()
            if isinstance(item, BaseException):
                self._closed = True
                raise item
            if item.index in self._ended:
                continue  # a token of a sample stopped meanwhile
            now = time.perf_counter()
            prev = self._last.get(item.index)
            if prev is None:
                self._engine.ttft.observe(now - self._start)
            else:
                self._engine.itl.observe(now - prev)
            self._last[item.index] = now
            if item.finished:
                self._ended.add(item.index)
                self._closed = len(self._ended) >= max(1, req.params.n)
            return item
        raise StopAsyncIteration

    def stop(self, index: int) -> None:
        """Ends sample `index` now (its caller found a stop string); its KV is freed."""
        if index in self._ended or self._closed:
            return
        self._ended.add(index)
        if len(self._ended) >= max(1, self._req.params.n):
            self._closed = True
            self._engine._inbox.put(("abort", self._req.seq_id))
        else:
            self._engine._inbox.put(("stop", self._req.seq_id, index))

    async def aclose(self) -> None:
        if self._started and not self._closed:
            self._engine._inbox.put(("abort", self._req.seq_id))
        self._closed = True


class AsyncEngine:
    def __init__(self, make_engine: Callable[[], LLMEngine]) -> None:
        """`make_engine` runs on the inference thread, so the llama.cpp context is created there."""
        self._make_engine = make_engine
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.engine: LLMEngine | None = None
        self._stats = EngineStats()
        self.ttft = LatencyHistogram()  # seconds from generate() to a sample's first token
        self.itl = LatencyHistogram()  # seconds between a sample's consecutive tokens
        self._thread = threading.Thread(target=self._run, name="aicap-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def generate(self, prompt: list[int], params: SamplingParams, app: str = "") -> Generation:
        """The sampled tokens of all `params.n` samples, as they come (see Generation)."""
        return Generation(self, _Request(next(self._ids), list(prompt), params, app, None, asyncio.Queue()))

    def stats(self) -> EngineStats:
        """The engine's figures after its last step (safe from any thread)."""
        return self._stats

    def close(self) -> None:
        """Stops the inference thread; callers still iterating get EngineClosed."""
        self._inbox.put(_STOP)
        self._thread.join()

    # ---- the inference thread ----

    def _run(self) -> None:
        try:
            engine = self.engine = self._make_engine()
            self._stats = engine.stats()
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        requests: dict[int, _Request] = {}

        def fail(req: _Request, exc: BaseException) -> None:
            assert req.loop is not None
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
                req.loop.call_soon_threadsafe(req.out.put_nowait, exc)

        while True:
            # block for work only when idle; otherwise take what arrived and step
            item = self._inbox.get() if not engine.has_work() else self._next_nowait()
            while item is not None:
                if item is _STOP:
                    for rid, req in requests.items():
                        engine.abort(rid)
                        fail(req, EngineClosed("the model was unloaded"))
                    return
                if isinstance(item, _Request):
                    try:
                        engine.add(item.seq_id, item.prompt, item.params, item.app)
                        requests[item.seq_id] = item
                    except ValueError as exc:
                        fail(item, exc)
                elif item[0] == "stop":  # ("stop", request id, sample index)
                    engine.stop(item[1], item[2])
                    if not engine.has_request(item[1]):
                        requests.pop(item[1], None)
                else:  # ("abort", request id)
                    engine.abort(item[1])
                    requests.pop(item[1], None)
                item = self._next_nowait()
            if engine.has_work():
                try:
                    events = engine.step()
                except Exception as exc:  # a bug or a llama.cpp failure: fail the requests, not the thread
                    log.exception("engine step failed; failing %d requests", len(requests))
                    for rid, req in requests.items():
                        engine.abort(rid)
                        fail(req, exc)
                    requests.clear()
                    events = []
                _dispatch(engine, requests, events)
            self._stats = engine.stats()

    def _next_nowait(self) -> Any:
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

"""The asyncio front end: one inference thread owns the runner and the engine; callers on the event
loop send requests through a queue and get their tokens back thread-safely.

Leaving a `generate()` stream early (the caller's RPC was cancelled or its deadline passed) aborts
the sequence; the inference thread frees its KV before its next step.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aicap.engine.llm_engine import EngineStats, LLMEngine, SamplingParams, TokenEvent

_STOP = object()
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
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]


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

    async def generate(
        self, prompt: list[int], params: SamplingParams, app: str = ""
    ) -> AsyncIterator[TokenEvent]:
        """The sampled tokens of all `params.n` samples, as they come; stop iterating to cancel.

        A request the engine refuses (too long for the context) raises ValueError here."""
        req = _Request(
            next(self._ids), list(prompt), params, app, asyncio.get_running_loop(), asyncio.Queue()
        )
        start = time.perf_counter()
        self._inbox.put(req)
        done = 0
        finished = False
        last: dict[int, float] = {}
        try:
            while True:
                item = await req.out.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                now = time.perf_counter()
                prev = last.get(item.index)
                if prev is None:
                    self.ttft.observe(now - start)
                else:
                    self.itl.observe(now - prev)
                last[item.index] = now
                done += item.finished
                finished = done >= max(1, params.n)
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._inbox.put(("abort", req.seq_id))

    def stats(self) -> EngineStats:
        """The engine's figures after its last step (safe from any thread)."""
        return self._stats

    def close(self) -> None:
        self._inbox.put(_STOP)
        self._thread.join()

    # ---- the inference thread ----

    def _run(self) -> None:
        try:
            engine = self.engine = self._make_engine()
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        requests: dict[int, _Request] = {}
        while True:
            # block for work only when idle; otherwise take what arrived and step
            item = self._inbox.get() if not engine.has_work() else self._next_nowait()
            while item is not None:
                if item is _STOP:
                    for seq_id in list(requests):
                        engine.abort(seq_id)
                    return
                if isinstance(item, _Request):
                    try:
                        engine.add(item.seq_id, item.prompt, item.params, item.app)
                        requests[item.seq_id] = item
                    except ValueError as exc:
                        item.loop.call_soon_threadsafe(item.out.put_nowait, exc)
                else:  # ("abort", seq_id)
                    engine.abort(item[1])
                    requests.pop(item[1], None)
                item = self._next_nowait()
            if not engine.has_work():
                continue
            for ev in engine.step():
                req = requests.get(ev.seq_id)
                if req is None:
                    continue
                if ev.finished and not engine.has_request(ev.seq_id):
                    del requests[ev.seq_id]
                req.loop.call_soon_threadsafe(req.out.put_nowait, ev)
            self._stats = engine.stats()

    def _next_nowait(self) -> Any:
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

"""The asyncio front end: one inference thread owns the runner and the engine; callers on the event
loop send requests through a queue and get their tokens back thread-safely.

Leaving a `generate()` stream early (the caller's RPC was cancelled or its deadline passed) aborts
the sequence; the inference thread frees its KV before its next step.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aicap.engine.llm_engine import LLMEngine, SamplingParams

_STOP = object()


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
        self._thread = threading.Thread(target=self._run, name="aicap-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    async def generate(self, prompt: list[int], params: SamplingParams, app: str = "") -> AsyncIterator[int]:
        """The sampled tokens, as they come; stop iterating to cancel."""
        req = _Request(
            next(self._ids), list(prompt), params, app, asyncio.get_running_loop(), asyncio.Queue()
        )
        self._inbox.put(req)
        finished = False
        try:
            while True:
                item = await req.out.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                token, finished = item
                yield token
                if finished:
                    return
        finally:
            if not finished:
                self._inbox.put(("abort", req.seq_id))

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
                if ev.finished:
                    del requests[ev.seq_id]
                req.loop.call_soon_threadsafe(req.out.put_nowait, (ev.token, ev.finished))

    def _next_nowait(self) -> Any:
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

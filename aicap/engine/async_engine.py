"""The asyncio front end: one inference thread owns the runners and the engines (every model's, in
turn); callers on the event loop send requests through a queue and get their tokens back thread-safely.

Leaving a `generate()` stream early (the caller's RPC was cancelled or its deadline passed) aborts
the sequence; the inference thread frees its KV before its next step.

With a remote KV store (`keeper`, remote_swap.py) the inference thread hands the engine's moves to the
event loop after each step; each runs there as a task (hashing and chunking off the loop) and its
answer comes back through the inbox. A move that fails in any way answers None: its sequence is
recomputed, never lost or stuck.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import hashlib
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from aicap.engine.generation import Generation, Request
from aicap.engine.llm_engine import EngineStats, LLMEngine, TokenEvent
from aicap.engine.remote_swap import Drop, KvKeeper, Move, Put
from aicap.engine.sampler import SamplingParams
from aicap.engine.speed import Speed
from aicap.errors import AicapError
from aicap.kv_state import KvState

if TYPE_CHECKING:
    from llguidance import LLMatcher

_STOP = object()
_START = object()
log = logging.getLogger("aicap.engine")


def _deliver(items: list[tuple[asyncio.Queue[Any], TokenEvent]]) -> None:
    for out, ev in items:
        out.put_nowait(ev)


def _dispatch(engine: LLMEngine, requests: dict[int, Request], events: list[TokenEvent]) -> None:
    """Hands a step's events to their callers: one wake-up of each caller's loop, not one per token.
    A request whose samples all ended is forgotten after the step's events: several of its samples
    may end in one step (constrained samples keep in step), and each one's last event must arrive."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], TokenEvent]]] = {}
    ended = set()
    for ev in events:
        target = requests.get(ev.seq_id)
        if target is None:
            continue
        if ev.finished and not engine.has_request(ev.seq_id):
            ended.add(ev.seq_id)
        assert target.loop is not None
        by_loop.setdefault(target.loop, []).append((target.out, ev))
    for rid in ended:
        del requests[rid]
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_deliver, items)


def _settle(
    done: asyncio.Future[tuple[KvState, list[int]]],
    gen: Generation,
    result: tuple[KvState, list[int]] | None,
    exc: BaseException | None,
) -> None:
    """An export's outcome, on its caller's loop: the generation ends if its request was handed over,
    even when the caller has stopped waiting."""
    if exc is None:
        gen.end()
    if done.done():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)  # type: ignore[arg-type]


def _resolve(done: asyncio.Future[Any], result: Any) -> None:
    if not done.done():
        done.set_result(result)


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


class _Inbox:
    """An engine's side of the inference thread's queue: what `put` sends is for that engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def put(self, item: Any) -> None:
        self._engine._worker.queue.put((self._engine, item))


class Stepped(Protocol):
    """What the inference thread runs: an engine that starts there, takes its inbox's messages and
    steps in turn with the others (AsyncEngine; AsyncEmbedder for embedding models)."""

    _ready: threading.Event  # set once `_start` ran
    _stopped: threading.Event
    _error: BaseException | None  # why `_start` failed

    def _start(self) -> bool: ...

    def _take(self, item: Any) -> bool: ...

    def _turn(self) -> None: ...

    def has_work(self) -> bool: ...


class _InferenceThread:
    """The one thread of the process that runs llama.cpp, for every engine in turn (a step each).

    One thread, not one per model: each thread that runs llama_decode gets an OpenMP team of
    n_threads, and once a process has more team threads than cores libgomp cuts the spin-wait at
    barriers to a hundred spins. A second model used once made every decode of the first about
    2.5x slower, for good (84 -> 33 tok/s measured here). The thread ends with its last engine."""

    _lock = threading.Lock()
    _current: _InferenceThread | None = None

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[Stepped, Any]] = queue.SimpleQueue()
        self.engines: list[Stepped] = []
        self.thread = threading.Thread(target=self._run, name="aicap-engine", daemon=True)

    @classmethod
    def attach(cls, engine: Stepped) -> _InferenceThread:
        """The running thread (started if there is none), with `engine`'s start queued on it."""
        with cls._lock:
            worker = cls._current
            if worker is None:
                worker = cls._current = cls()
                worker.thread.start()
            worker.queue.put((engine, _START))
            return worker

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # normally with no engine left; after a bug, nobody may wait for it forever
            with self._lock:
                if _InferenceThread._current is self:
                    _InferenceThread._current = None
            left = list(self.engines)
            while (item := self._next(block=False)) is not None:
                if item[1] is _START:
                    item[0]._error = EngineClosed("the inference thread stopped")
                    item[0]._ready.set()
                left.append(item[0])
            for engine in left:
                engine._stopped.set()

    def _loop(self) -> None:
        while True:
            busy = any(e.has_work() for e in self.engines)
            item = self._next(block=not busy)
            while item is not None:
                target, what = item
                if what is _START:
                    if target._start():
                        self.engines.append(target)
                elif target not in self.engines:  # it stopped (or never started): nothing to do
                    if isinstance(what, tuple) and what[0] == "hold":  # but answer a waiting hold
                        with contextlib.suppress(RuntimeError):  # its loop is closed
                            what[4].call_soon_threadsafe(_resolve, what[5], 0)
                elif not target._take(what):
                    self.engines.remove(target)
                    target._stopped.set()
                item = self._next(block=False)
            for engine in self.engines:
                engine._turn()
            with self._lock:
                if not self.engines and self.queue.empty():
                    _InferenceThread._current = None
                    return

    def _next(self, block: bool) -> tuple[Stepped, Any] | None:
        try:
            return self.queue.get() if block else self.queue.get_nowait()
        except queue.Empty:
            return None


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class AsyncEngine:
    def __init__(
        self,
        make_engine: Callable[[], LLMEngine],
        keeper: Callable[[], KvKeeper | None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """`make_engine` runs on the inference thread, so the llama.cpp context is created there
        (meanwhile the other engines wait: one thread runs them all, see _InferenceThread).
        `keeper`: the remote KV store where it is now (None while there is none: its moves fail),
        called on `loop`; without it, sequences preempted beyond the swap budget are recomputed."""
        assert keeper is None or loop is not None
        self._make_engine = make_engine
        self._keeper, self._loop = keeper, loop
        self._moving: set[asyncio.Task[None]] = set()  # moves under way, on the loop
        self._inbox = _Inbox(self)
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self.engine: LLMEngine | None = None
        self._requests: dict[int, Request] = {}
        self._stats = EngineStats()
        self.ttft = LatencyHistogram()  # seconds from generate() to a sample's first token
        self.itl = LatencyHistogram()  # seconds between a sample's consecutive tokens
        self.prefill_time = LatencyHistogram()  # seconds from prefill() to its KV state
        self._worker = _InferenceThread.attach(self)
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        app: str = "",
        shared: tuple[str, int] = ("", 0),
        imported: KvState | None = None,
        may_leave: bool = False,
        matcher: LLMatcher | None = None,
        probe: bool = False,
    ) -> Generation:
        """The sampled tokens of all `params.n` samples, as they come (see Generation); `shared`,
        `imported` (the KV of the prompt's first tokens, from `prefill`), `may_leave`, `matcher`
        (structured output) and `probe` as LLMEngine.add takes them: a state that does not fit this
        model or prompt is the stream's first error. A probe's latencies are not in the histograms."""
        req = Request(
            next(self._ids),
            list(prompt),
            params,
            app,
            shared,
            None,
            asyncio.Queue(),
            imported,
            may_leave=may_leave,
            matcher=matcher,
            probe=probe,
        )
        if probe:
            return Generation(req, self._inbox.put, LatencyHistogram(), LatencyHistogram())
        return Generation(req, self._inbox.put, self.ttft, self.itl)

    async def prefill(self, tokens: list[int], app: str = "", shared: tuple[str, int] = ("", 0)) -> KvState:
        """The KV state of `tokens` but the last, computed on the inference thread beside the running
        requests (LLMEngine.prefill); cancelling the call aborts the prefill and frees its KV."""
        params = SamplingParams(max_tokens=0)
        req = Request(
            next(self._ids), list(tokens), params, app, shared, None, asyncio.Queue(), prefill_only=True
        )
        gen = Generation(req, self._inbox.put, self.prefill_time, self.prefill_time)
        async with contextlib.aclosing(gen):
            ev = await gen.next()
        assert ev is not None and ev.state is not None
        return ev.state

    async def export(self, generation: Generation) -> tuple[KvState, list[int]]:
        """Hands a running generation's request over (LLMEngine.export, on the inference thread): its
        KV state and all its tokens; the generation then ends (its reader's next() returns None)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[KvState, list[int]]] = loop.create_future()
        self._inbox.put(("export", generation.request_id, generation, loop, done))
        return await done

    async def hold(self, key: object, tokens: list[int], app: str = "") -> int:
        """Keeps the cached blocks of `tokens` held under `key` (LLMEngine.hold, on the inference
        thread) and returns how many tokens that covers."""
        if self._stopped.is_set():
            return 0
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        self._inbox.put(("hold", key, list(tokens), app, loop, done))
        return await done

    def release(self, key: object) -> None:
        """Drops the hold under `key` (LLMEngine.release), without waiting for it."""
        self._inbox.put(("release", key))

    def stats(self) -> EngineStats:
        """The engine's figures after its last step (safe from any thread)."""
        return self._stats

    def speed(self) -> Speed:
        """This device's prefill speed and decode step, measured from recent steps (any thread)."""
        return self.engine.speed.figures if self.engine is not None else Speed()

    def restart_speed(self) -> None:
        """The next steps alone decide the speed figures (SpeedMeter.restart; any thread)."""
        if self.engine is not None:
            self.engine.speed.restart()

    def close(self) -> None:
        """Stops this engine on the inference thread; callers still iterating get EngineClosed."""
        self._inbox.put(_STOP)
        self._stopped.wait()

    # ---- on the inference thread ----

    def _start(self) -> bool:
        """Makes the engine; False (the error kept for the constructor) if that failed."""
        try:
            self.engine = self._make_engine()
            if self._keeper is not None:
                self.engine.use_remote_store()
            self._stats = self.engine.stats()
            return True
        except BaseException as exc:
            self._error = exc
            self._stopped.set()
            return False
        finally:
            self._ready.set()

    def has_work(self) -> bool:
        return self.engine is not None and self.engine.has_work()

    def _fail(self, req: Request, exc: BaseException) -> None:
        assert req.loop is not None
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
            req.loop.call_soon_threadsafe(req.out.put_nowait, exc)

    def _take(self, item: Any) -> bool:
        """One message of the inbox; False once it was the stop."""
        engine, requests = self.engine, self._requests
        assert engine is not None
        if item is _STOP:
            for rid, req in requests.items():
                engine.abort(rid)
                self._fail(req, EngineClosed("the model was unloaded"))
            requests.clear()
            self._send_moves()  # the states its sequences kept away are dropped there
            return False
        if isinstance(item, Request):
            try:
                if item.prefill_only:
                    engine.prefill(item.seq_id, item.prompt, item.app, item.shared)
                else:
                    engine.add(
                        item.seq_id,
                        item.prompt,
                        item.params,
                        item.app,
                        item.shared,
                        item.imported,
                        may_leave=item.may_leave,
                        matcher=item.matcher,
                        probe=item.probe,
                    )
                requests[item.seq_id] = item
            except (ValueError, AicapError) as exc:  # a refusal: nothing was queued
                self._fail(item, exc)
        elif item[0] == "export":  # ("export", request id, generation, its loop, future)
            _, rid, gen, loop, done = item
            result, error = None, None
            try:
                result = engine.export(rid)
                requests.pop(rid, None)
            except AicapError as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, done, gen, result, error)
        elif item[0] == "kept":  # ("kept", ticket, handle or None): a Put's answer
            engine.kept(item[1], item[2])
        elif item[0] == "returned":  # ("returned", ticket, KvState or None): a Get's answer
            engine.returned(item[1], item[2])
        elif item[0] == "hold":  # ("hold", key, tokens, app, its loop, future)
            _, key, tokens, app, loop, done = item
            held = engine.hold(key, tokens, app)
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, done, held)
        elif item[0] == "release":  # ("release", key)
            engine.release(item[1])
        elif item[0] == "stop":  # ("stop", request id, sample index)
            engine.stop(item[1], item[2])
            if not engine.has_request(item[1]):
                requests.pop(item[1], None)
        else:  # ("abort", request id)
            engine.abort(item[1])
            requests.pop(item[1], None)
        return True

    def _turn(self) -> None:
        """One step, if there is work, and its events to their callers."""
        engine, requests = self.engine, self._requests
        assert engine is not None
        if engine.has_work():
            try:
                events = engine.step()
            except Exception as exc:  # a bug or a llama.cpp failure: fail the requests, not the thread
                log.exception("engine step failed; failing %d requests", len(requests))
                for rid, req in requests.items():
                    engine.abort(rid)
                    self._fail(req, exc)
                requests.clear()
                events = []
            _dispatch(engine, requests, events)
        self._send_moves()
        self._stats = engine.stats()

    def _send_moves(self) -> None:
        """Hands the engine's moves to the event loop; if it is closed, they all fail at once."""
        assert self.engine is not None
        moves = self.engine.take_moves()
        if not moves:
            return
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._start_moves, moves)
        except RuntimeError:  # the loop is closed: nothing can move
            for move in moves:
                self._answer(move, None)

    def _answer(self, move: Move, result: Any) -> None:
        """A Put's or Get's outcome, to the engine (on the inference thread, or queued for it)."""
        if isinstance(move, Drop):
            return
        kind = "kept" if isinstance(move, Put) else "returned"
        if threading.current_thread() is self._worker.thread:
            assert self.engine is not None
            (self.engine.kept if kind == "kept" else self.engine.returned)(move.ticket, result)
        else:
            self._inbox.put((kind, move.ticket, result))

    # ---- on the event loop ----

    def _start_moves(self, moves: list[Move]) -> None:
        for move in moves:
            task = asyncio.ensure_future(self._move(move))
            self._moving.add(task)
            task.add_done_callback(self._moving.discard)

    async def _move(self, move: Move) -> None:
        """Makes one move with the keeper; a Put's handle is (the keeper's handle, the state's
        sha256), so a state that comes back other than it left is refused."""
        keeper = self._keeper() if self._keeper is not None else None
        if isinstance(move, Drop):
            if keeper is not None:
                with contextlib.suppress(Exception):  # the keeper forgets it in time anyway
                    await keeper.drop_kv(move.handle[0])
            return
        result: Any = None
        try:
            if keeper is None:
                raise AicapError("no remote KV store now")
            if isinstance(move, Put):
                digest = await asyncio.to_thread(_sha256, move.state.data)
                result = (await keeper.keep_kv(move.state, move.app), digest)
                if self._stopped.is_set():  # nobody will ask for it
                    handle, result = result[0], None
                    await keeper.drop_kv(handle)
            else:
                state = await keeper.return_kv(move.handle[0])
                if await asyncio.to_thread(_sha256, state.data) != move.handle[1]:
                    raise AicapError("the KV state came back changed (sha256 mismatch)")
                result = state
        except AicapError as exc:
            log.info("remote KV store: %s; the sequence is recomputed", exc)
            result = None
        except Exception:
            log.exception("remote KV store failed; the sequence is recomputed")
            result = None
        finally:  # cancelled too: the sequence must not wait forever
            self._answer(move, result)

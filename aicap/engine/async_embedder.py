"""An embedding model's engine: every caller's texts batched into one llama_encode per turn of the
inference thread, between the chat models' steps.

The thread that decodes for the chat models runs this too (a second thread calling llama.cpp slowed
every decode 2.7x: see _InferenceThread), one bounded batch per turn (aicap.engine.embed_queue: at
most `batch_tokens` tokens, the apps' texts in turn, background work after them), so a running
generation waits for one small batch per token, not for a whole request. Vectors come back unit
length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aicap.engine.async_engine import _STOP, EngineClosed, _InferenceThread
from aicap.engine.embed_queue import EmbedJob, EmbedQueue
from aicap.engine.embed_runner import MAX_SEQS, EmbedRunner

log = logging.getLogger("aicap.engine")


@dataclass(eq=False, slots=True)
class _Job(EmbedJob):
    """A call's texts, and where their vectors go (on its loop)."""

    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[np.ndarray] | None = None
    out: np.ndarray | None = None
    done: int = 0  # texts with their vector
    left: bool = False  # its caller stopped waiting


@dataclass(slots=True)
class EmbedStats:
    texts: int = 0  # embedded since start
    tokens: int = 0
    batches: int = 0  # llama_encode calls
    texts_waiting: int = 0  # queued, not yet in a batch (after the last turn)


def _settle(job: _Job, result: np.ndarray | None, error: BaseException | None) -> None:
    """On the caller's loop; nothing for a caller that left."""
    fut = job.future
    assert fut is not None
    if fut.done():
        return
    if job.left:
        fut.cancel()
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)  # type: ignore[arg-type]


class AsyncEmbedder:
    def __init__(self, make_runner: Callable[[], EmbedRunner], batch_tokens: int = 128) -> None:
        """`make_runner` runs on the inference thread (the llama.cpp context is made there)."""
        self._make_runner = make_runner
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self.runner: EmbedRunner | None = None
        self.dim = 0
        self.n_ctx = 0  # the longest text, in tokens
        self._queue: EmbedQueue[_Job] = EmbedQueue(batch_tokens, MAX_SEQS)
        self._stats = EmbedStats()
        self._worker = _InferenceThread.attach(self)
        self._ready.wait()
        if self._error is not None:
            raise self._error

    async def embed(self, texts: list[list[int]], tenant: str, background: bool = False) -> np.ndarray:
        """The unit vectors (float32, one row per text) of tokenized texts, each at most `n_ctx` tokens
        (ValueError otherwise). `background` work waits for the apps' (aicap.engine.embed_queue).
        Leaving early (a cancelled call) drops the texts not yet embedded."""
        for i, t in enumerate(texts):
            if not 0 < len(t) <= self.n_ctx:
                raise ValueError(f"text {i} has {len(t)} tokens: 1 to {self.n_ctx} fit the model's context")
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        job = _Job(tenant, texts, background, loop=loop, future=loop.create_future())
        self._worker.queue.put((self, job))
        try:
            return await asyncio.shield(job.future)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            job.left = job.cancelled = True
            raise

    def stats(self) -> EmbedStats:
        """The figures after the last turn (any thread)."""
        return self._stats

    def close(self) -> None:
        """Stops the engine on the inference thread; waiting callers get EngineClosed."""
        self._worker.queue.put((self, _STOP))
        self._stopped.wait()

    # ---- on the inference thread ----

    def _start(self) -> bool:
        try:
            self.runner = self._make_runner()
            self.dim, self.n_ctx = self.runner.dim, self.runner.n_ctx
            return True
        except BaseException as exc:
            self._error = exc
            self._stopped.set()
            return False
        finally:
            self._ready.set()

    def has_work(self) -> bool:
        return bool(self._queue)

    def _take(self, item: Any) -> bool:
        if item is _STOP:
            for job in list(self._queue.jobs()):
                self._answer(job, None, EngineClosed("the model was unloaded"))
            self._queue.clear()
            if self.runner is not None:
                self.runner.close()
                self.runner = None
            return False
        assert isinstance(item, _Job)
        self._queue.add(item)
        return True

    def _turn(self) -> None:
        batch = self._queue.next_batch()
        if batch:
            self._run(batch)
        self._stats.texts_waiting = self._queue.waiting()

    def _run(self, batch: list[tuple[_Job, int]]) -> None:
        assert self.runner is not None
        try:
            vectors = self.runner.embed([job.texts[i] for job, i in batch])
        except Exception as exc:  # a bug or a llama.cpp failure: fail the calls, not the thread
            log.exception("embedding batch of %d texts failed", len(batch))
            for job in {job for job, _ in batch}:
                job.cancelled = True
                self._answer(job, None, exc)
            return
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms > 0, norms, 1.0)
        stats = self._stats  # counted before anyone is answered: a caller may read them at once
        stats.tokens += sum(len(job.texts[i]) for job, i in batch)
        stats.texts += len(batch)
        stats.batches += 1
        for (job, i), row in zip(batch, vectors, strict=True):
            if job.out is None:
                job.out = np.empty((len(job.texts), self.dim), dtype=np.float32)
            job.out[i] = row
            job.done += 1
            if job.done == len(job.texts):
                self._answer(job, job.out, None)

    def _answer(self, job: _Job, result: np.ndarray | None, error: BaseException | None) -> None:
        assert job.loop is not None
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
            job.loop.call_soon_threadsafe(_settle, job, result, error)

"""Per-app admission: how many requests of one app may be in the engine, and how many may wait.

An app has at most `max_concurrent` requests in the engine; further ones wait in the app's own FIFO
queue (at most `max_queued` of them), and all apps together have at most `max_waiting` waiting.
Beyond either bound a request is refused at once, so memory stays bounded however many arrive.
A slot an app frees goes to that app's oldest waiter: one app's flood never takes another's slots.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aicap.errors import ResourceExhausted


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrent: int = 8  # per app, in the engine at once
    max_queued: int = 32  # per app, waiting for one of its slots
    max_waiting: int = 128  # all apps together, waiting


class AppLimiter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._running: dict[str, int] = {}
        self._queues: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self.waiting = 0  # futures queued, all apps
        self.rejected: collections.Counter[str] = collections.Counter()  # by limit name

    def running(self, app: str) -> int:
        return self._running.get(app, 0)

    def queued(self, app: str) -> int:
        return len(self._queues.get(app, ()))

    @contextlib.asynccontextmanager
    async def slot(self, app: str) -> AsyncIterator[None]:
        """Holds one of the app's engine slots for the body, waiting for one first if need be."""
        await self.acquire(app)
        try:
            yield
        finally:
            self.release(app)

    async def acquire(self, app: str) -> None:
        lim = self.limits
        if self.running(app) < lim.max_concurrent and not self.queued(app):
            self._running[app] = self.running(app) + 1
            return
        if self.queued(app) >= lim.max_queued:
            self.rejected["max_queued_per_app"] += 1
            raise ResourceExhausted(
                f"app {app} has {lim.max_concurrent} requests running and {lim.max_queued} waiting "
                f"(max_concurrent_per_app={lim.max_concurrent}, max_queued_per_app={lim.max_queued}); "
                "retry when one finishes"
            )
        if self.waiting >= lim.max_waiting:
            self.rejected["max_waiting"] += 1
            raise ResourceExhausted(
                f"the AI service has {self.waiting} requests waiting (max_waiting={lim.max_waiting}); "
                "retry later"
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(app, collections.deque())
        queue.append(fut)
        self.waiting += 1
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(app)  # granted just as the waiter was cancelled: pass the slot on
            else:
                queue.remove(fut)
                self.waiting -= 1
                self._drop_empty(app)
            raise

    def release(self, app: str) -> None:
        queue = self._queues.get(app)
        if queue:  # the slot passes straight to the app's oldest waiter
            queue.popleft().set_result(None)
            self.waiting -= 1
            self._drop_empty(app)
            return
        left = self.running(app) - 1
        assert left >= 0, f"release without acquire for {app}"
        if left:
            self._running[app] = left
        else:
            del self._running[app]

    def _drop_empty(self, app: str) -> None:
        if not self._queues.get(app, True):
            del self._queues[app]

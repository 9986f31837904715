"""The change feed: committed changes, in commit order, to the apps subscribed to their URIs.

Writers call `publish` on the database writer thread right after their commit; the feed hops to the
event loop and puts each change on the matching subscribers' queues, so every subscriber sees changes
in commit order and never before commit. A subscriber that falls too far behind is closed rather than
letting its queue grow without bound.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from datamgr.errors import ResourceExhausted

E = TypeVar("E")
CLOSED = object()  # queue sentinel: the subscription ended


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of one URI: INSERT, UPDATE or DELETE, with the rows it touched; `device` is
    the paired device it was synced from ('': this device's own write)."""

    type: str
    uri: str
    rows: tuple[dict[str, Any], ...]
    device: str = ""


@dataclass(eq=False, slots=True)
class Subscription(Generic[E]):
    app: str
    key: str
    queue: asyncio.Queue = field(repr=False)
    overflowed: bool = False

    async def next(self) -> E | None:
        """The next event, or None once the subscription was closed."""
        item = await self.queue.get()
        return None if item is CLOSED else item


class Feed(Generic[E]):
    """Fan-out of events keyed by a string (a URI) to per-app bounded subscriptions."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_per_app: int, queue_size: int) -> None:
        self._loop = loop
        self._max_per_app = max_per_app
        self._queue_size = queue_size
        self._by_key: dict[str, set[Subscription[E]]] = defaultdict(set)
        self._per_app: dict[str, int] = defaultdict(int)

    def subscribe(self, app: str, key: str) -> Subscription[E]:
        """Registers a subscription; must run on the event loop."""
        if self._per_app[app] >= self._max_per_app:
            raise ResourceExhausted(
                f"{app} already holds {self._max_per_app} subscriptions, the per-app limit"
            )
        sub: Subscription[E] = Subscription(app, key, asyncio.Queue(self._queue_size + 1))
        self._by_key[key].add(sub)
        self._per_app[app] += 1
        return sub

    def unsubscribe(self, sub: Subscription[E]) -> None:
        subs = self._by_key.get(sub.key)
        if subs is not None and sub in subs:
            subs.discard(sub)
            if not subs:
                del self._by_key[sub.key]
            self._per_app[sub.app] -= 1

    def has_subscribers(self, key: str) -> bool:
        """Whether anyone listens to `key` (safe from any thread; a hint to skip building events)."""
        return bool(self._by_key.get(key))

    def publish(self, key: str, events: list[E]) -> None:
        """Queues events for `key`'s subscribers; callable from any thread, order preserved.

        With no subscriber the loop is not woken at all: a subscription registered after this check
        acknowledges its client only after registration, so it can only expect later commits."""
        if self._loop.is_closed() or not self._by_key.get(key):
            return
        self._loop.call_soon_threadsafe(self._dispatch, key, events)

    def _dispatch(self, key: str, events: list[E]) -> None:
        for sub in list(self._by_key.get(key, ())):
            for event in events:
                if sub.queue.qsize() >= self._queue_size:
                    sub.overflowed = True
                    self.unsubscribe(sub)
                    sub.queue.put_nowait(CLOSED)
                    break
                sub.queue.put_nowait(event)

    def close(self) -> None:
        """Ends every subscription (daemon shutdown)."""
        for subs in list(self._by_key.values()):
            for sub in list(subs):
                self.unsubscribe(sub)
                sub.queue.put_nowait(CLOSED)

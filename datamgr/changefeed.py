"""The change feed: committed changes, in commit order, to the apps subscribed to their URIs.

Writers call `publish` on the database writer thread right after their commit; the feed sizes each
event there (once, off the loop), hops to the event loop and puts it on the matching subscribers'
queues, so every subscriber sees changes in commit order and never before commit. What a subscriber
has not read is bounded in events and in bytes, per subscriber and per app: one that falls further
behind is closed with RESOURCE_EXHAUSTED and its queued events are dropped at once. A subscription
may carry a `check` (the app's permission, re-read per event and on `recheck`): once it fails, the
subscription ends with that error and nothing more reaches it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from datamgr.errors import DatamgrError, ResourceExhausted

CLOSED = object()  # queue sentinel: the subscription ended
_UNLIMITED = 1 << 62
_ROW_BYTES = 64  # a row's own overhead, so that floods of tiny rows count too
_NUMBER_BYTES = 8


class Event(Protocol):
    def nbytes(self) -> int:
        """About how many bytes the event holds (its values' lengths), for the subscriber caps."""
        ...


E = TypeVar("E", bound=Event)


def row_bytes(row: dict[str, Any]) -> int:
    """The lengths of a row's text and blob values, 8 bytes per other value, plus a row overhead."""
    return _ROW_BYTES + sum(
        len(v) if isinstance(v, (str, bytes, bytearray, memoryview)) else _NUMBER_BYTES for v in row.values()
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of one URI: INSERT, UPDATE or DELETE, with the rows it touched; `device` is
    the paired device it was synced from ('': this device's own write)."""

    type: str
    uri: str
    rows: tuple[dict[str, Any], ...]
    device: str = ""

    def nbytes(self) -> int:
        return sum(row_bytes(row) for row in self.rows)


@dataclass(eq=False, slots=True)
class Subscription(Generic[E]):
    """One subscriber's queue of (event, its size). `check` raises once the app may no longer read."""

    app: str
    key: str
    feed: Feed[E] = field(repr=False)
    queue: asyncio.Queue = field(repr=False)
    check: Callable[[], None] | None = field(default=None, repr=False)
    nbytes: int = 0  # bytes queued, not read yet
    ended: bool = False
    error: DatamgrError | None = None

    @property
    def overflowed(self) -> bool:
        return isinstance(self.error, ResourceExhausted)

    async def next(self) -> E | None:
        """The next event; None once the subscription ended, its error if it ended with one (a cap
        overflowed: ResourceExhausted; the app lost its permission or was removed)."""
        item = await self.queue.get()
        if item is CLOSED:
            if self.error is not None:
                raise self.error
            return None
        event, size = item
        self.nbytes -= size
        self.feed._read(self.app, size)
        if self.check is not None:
            try:
                self.check()
            except DatamgrError as exc:
                self.feed.end(self, exc)
                raise
        return event  # type: ignore[no-any-return]


class Feed(Generic[E]):
    """Fan-out of events keyed by a string (a URI) to per-app bounded subscriptions; `section` is the
    settings section whose limits the feed enforces (named in its messages). Feeds given one `ledger`
    share the per-app byte cap (DataShare's table changes and published data)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_per_app: int,
        queue_size: int,
        max_bytes: int = _UNLIMITED,
        max_app_bytes: int = _UNLIMITED,
        section: str = "datashare",
        ledger: defaultdict[str, int] | None = None,
    ) -> None:
        self._loop = loop
        self._max_per_app = max_per_app
        self._queue_size = queue_size
        self._max_bytes = max_bytes
        self._max_app_bytes = max_app_bytes
        self._section = section
        self._by_key: dict[str, set[Subscription[E]]] = defaultdict(set)
        self._by_app: dict[str, set[Subscription[E]]] = defaultdict(set)
        # bytes queued for each app's subscriptions
        self._app_bytes: defaultdict[str, int] = defaultdict(int) if ledger is None else ledger

    def subscribe(self, app: str, key: str, check: Callable[[], None] | None = None) -> Subscription[E]:
        """Registers a subscription; must run on the event loop."""
        if len(self._by_app.get(app, ())) >= self._max_per_app:
            raise ResourceExhausted(
                f"{app} already holds {self._max_per_app} subscriptions, the per-app limit"
            )
        sub: Subscription[E] = Subscription(app, key, self, asyncio.Queue(), check)
        self._by_key[key].add(sub)
        self._by_app[app].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription[E]) -> None:
        subs = self._by_key.get(sub.key)
        if subs is not None and sub in subs:
            subs.discard(sub)
            if not subs:
                del self._by_key[sub.key]
            held = self._by_app[sub.app]
            held.discard(sub)
            if not held:
                del self._by_app[sub.app]

    def end(self, sub: Subscription[E], error: DatamgrError | None = None) -> None:
        """Ends a subscription: its queued events are dropped now (their memory freed), and its stream
        finishes once it has read what it holds (with `error` if given). On the event loop."""
        self.unsubscribe(sub)
        if sub.ended:
            return
        sub.ended, sub.error = True, error
        while not sub.queue.empty():
            _, size = sub.queue.get_nowait()
            self._read(sub.app, size)
        sub.nbytes = 0
        sub.queue.put_nowait(CLOSED)

    def recheck(self, app: str) -> int:
        """Re-runs the checks of `app`'s subscriptions (its permissions changed); ends the ones that fail
        with their error at once, even with no event coming. Returns how many ended."""
        ended = 0
        for sub in list(self._by_app.get(app, ())):
            if sub.check is None:
                continue
            try:
                sub.check()
            except DatamgrError as exc:
                self.end(sub, exc)
                ended += 1
        return ended

    def has_subscribers(self, key: str) -> bool:
        """Whether anyone listens to `key` (safe from any thread; a hint to skip building events)."""
        return bool(self._by_key.get(key))

    def publish(self, key: str, events: list[E]) -> None:
        """Queues events for `key`'s subscribers; callable from any thread, order preserved.

        With no subscriber the loop is not woken at all: a subscription registered after this check
        acknowledges its client only after registration, so it can only expect later commits. Events
        are sized here, once each, on the caller's thread (the writer's, not the loop)."""
        if self._loop.is_closed() or not self._by_key.get(key):
            return
        sized = [(event, event.nbytes()) for event in events]
        self._loop.call_soon_threadsafe(self._dispatch, key, sized)

    def _dispatch(self, key: str, events: list[tuple[E, int]]) -> None:
        for sub in list(self._by_key.get(key, ())):
            for item in events:
                size = item[1]
                if sub.queue.qsize() and (problem := self._over(sub, size)) is not None:
                    self.end(sub, ResourceExhausted(problem))
                    break
                sub.queue.put_nowait(item)
                sub.nbytes += size
                self._app_bytes[sub.app] += size

    def _over(self, sub: Subscription[E], size: int) -> str | None:
        """Why `sub` may not queue one more event of `size` bytes, if it may not. A subscriber with
        nothing queued always takes the next event, however large: it is keeping up."""
        s = self._section
        if sub.queue.qsize() >= self._queue_size:
            return f"the subscriber fell more than {self._queue_size} changes behind ({s}.subscriber_queue)"
        if sub.nbytes + size > self._max_bytes:
            return (
                f"the subscriber fell more than {self._max_bytes} bytes of changes behind "
                f"({s}.subscriber_bytes)"
            )
        if self._app_bytes[sub.app] + size > self._max_app_bytes:
            return (
                f"the subscriptions of {sub.app} hold more than {self._max_app_bytes} bytes of unread "
                f"changes ({s}.app_subscriber_bytes)"
            )
        return None

    def _read(self, app: str, size: int) -> None:
        left = self._app_bytes[app] - size
        if left:
            self._app_bytes[app] = left
        else:
            del self._app_bytes[app]

    def close(self) -> None:
        """Ends every subscription (daemon shutdown)."""
        for subs in list(self._by_key.values()):
            for sub in list(subs):
                self.end(sub)

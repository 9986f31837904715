"""The table of peers discovered on the network and the feed of its changes. Pure logic: the mDNS shell
passes the time (`now`, monotonic seconds) into every call, so tests drive it with a fake clock.

A peer is ONLINE from its first valid advert until its service is removed (an mDNS goodbye) or nothing
of it was heard for `offline_after_s`; to stay online without announcing again, it is asked for its
records at 80, 85, 90 and 95% of that time (RFC 6762 §5.2 cache maintenance; any answer, to whoever
asked, counts). An offline peer stays listed (online false) until a new one needs its place.

A peer that went offline by that timeout (no goodbye: a killed daemon, or the network between us cut)
is still asked for its records, so that a healed partition is noticed without waiting for the peer to
announce again: every second for its first two minutes away, then at intervals doubling up to a
minute (RFC 6762 §5.2 asks for growing intervals; a second at first is what lets sync converge within
about two seconds of a heal). A goodbye ends the asking.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from datamgr.device.advert import Advert
from datamgr.errors import ResourceExhausted

log = logging.getLogger("datamgr.discovery")

_QUERY_AT = 0.80  # of offline_after_s since last heard: the first refresh query
_QUERY_STEP = 0.05  # then every 5% more, until 95%
_QUERY_JITTER = 0.02  # RFC 6762 §5.2: 2% random variation, so peers do not all ask at once
_LOST_EVERY_S = 1.0  # a peer gone offline by timeout is asked for every second...
_LOST_FAST_S = 120.0  # ...for this long, then at doubling intervals...
_LOST_MAX_EVERY_S = 60.0  # ...up to this


class EventKind(enum.Enum):
    ONLINE = "online"
    OFFLINE = "offline"
    UPDATED = "updated"  # an online peer's address, port or advert changed


@dataclass(frozen=True, slots=True)
class Peer:
    """What is known about a device on the network. `last_seen` is in the caller's (monotonic) time."""

    advert: Advert
    addresses: tuple[str, ...]
    port: int
    last_seen: float
    online: bool

    @property
    def device_id(self) -> str:
        return self.advert.device_id


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    kind: EventKind
    peer: Peer


@dataclass(slots=True)
class _Entry:
    name: str  # the mDNS instance name, lower case
    peer: Peer
    next_query: float
    queries_left: int
    lost_since: float | None = None  # offline by timeout at this time: still asked for (not a goodbye)
    lost_every: float = _LOST_EVERY_S


class PeerTable:
    """Peers by device id; every method returns the events it caused."""

    def __init__(
        self,
        own_id: str,
        offline_after_s: float,
        max_peers: int,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._own_id = own_id
        self._ttl = offline_after_s
        self._max = max_peers
        self._jitter = jitter
        self._entries: dict[str, _Entry] = {}
        self._by_name: dict[str, str] = {}
        self._full_logged = False

    def peers(self) -> list[Peer]:
        return sorted((e.peer for e in self._entries.values()), key=lambda p: (p.advert.name, p.device_id))

    def get(self, device_id: str) -> Peer | None:
        entry = self._entries.get(device_id)
        return entry.peer if entry is not None else None

    def seen(
        self, name: str, advert: Advert, addresses: tuple[str, ...], port: int, now: float
    ) -> list[DeviceEvent]:
        """A peer resolved from its records: ONLINE if new or offline, UPDATED if something changed."""
        device_id = advert.device_id
        if device_id == self._own_id:
            return []
        entry = self._entries.get(device_id)
        if entry is None and not self._make_room():
            return []
        peer = Peer(advert, addresses, port, now, online=True)
        key = name.lower()
        if entry is not None and entry.name != key:
            self._by_name.pop(entry.name, None)  # the device now advertises under another name
        self._entries[device_id] = _Entry(key, peer, *self._schedule(now))
        self._by_name[key] = device_id
        if entry is None or not entry.peer.online:
            return [DeviceEvent(EventKind.ONLINE, peer)]
        old = entry.peer
        if (old.advert, old.addresses, old.port) != (advert, addresses, port):
            return [DeviceEvent(EventKind.UPDATED, peer)]
        return []

    def heard(self, name: str, now: float) -> bool:
        """Records of `name` arrived: an online peer stays online. False when the caller should resolve
        it (unknown, or offline and now back)."""
        entry = self._entry(name)
        if entry is None or not entry.peer.online:
            return False
        entry.peer = replace(entry.peer, last_seen=now)
        entry.next_query, entry.queries_left = self._schedule(now)
        return True

    def removed(self, name: str, now: float) -> list[DeviceEvent]:
        """The peer said goodbye (or its PTR record expired): not asked for any more."""
        entry = self._entry(name)
        if entry is None:
            return []
        entry.lost_since = None
        if not entry.peer.online:
            return []
        return [self._offline(entry)]

    def expire(self, now: float) -> list[DeviceEvent]:
        """OFFLINE for every online peer not heard of for offline_after_s (then still asked for)."""
        events = []
        for e in list(self._entries.values()):
            if e.peer.online and now - e.peer.last_seen > self._ttl:
                events.append(self._offline(e))
                e.lost_since, e.lost_every, e.next_query = now, _LOST_EVERY_S, now + _LOST_EVERY_S
        return events

    def due_queries(self, now: float) -> list[str]:
        """Instance names to ask for their records now: each online peer at 80/85/90/95%, each peer
        offline by timeout at its growing interval."""
        due = []
        for e in self._entries.values():
            if e.peer.online:
                if e.queries_left > 0 and now >= e.next_query:
                    due.append(e.name)
                    e.queries_left -= 1
                    e.next_query += _QUERY_STEP * self._ttl
            elif e.lost_since is not None and now >= e.next_query:
                due.append(e.name)
                if now - e.lost_since >= _LOST_FAST_S:
                    e.lost_every = min(2 * e.lost_every, _LOST_MAX_EVERY_S)
                e.next_query = now + e.lost_every
        return due

    def _entry(self, name: str) -> _Entry | None:
        device_id = self._by_name.get(name.lower())
        return self._entries.get(device_id) if device_id is not None else None

    def _schedule(self, now: float) -> tuple[float, int]:
        return now + (_QUERY_AT + _QUERY_JITTER * self._jitter()) * self._ttl, 4

    def _offline(self, entry: _Entry) -> DeviceEvent:
        entry.peer = replace(entry.peer, online=False)
        return DeviceEvent(EventKind.OFFLINE, entry.peer)

    def _make_room(self) -> bool:
        if len(self._entries) < self._max:
            self._full_logged = False
            return True
        offline = [e for e in self._entries.values() if not e.peer.online]
        if not offline:
            if not self._full_logged:
                log.warning("peer table full (%d online devices): ignoring new devices", self._max)
                self._full_logged = True
            return False
        oldest = min(offline, key=lambda e: e.peer.last_seen)
        del self._entries[oldest.peer.device_id]
        self._by_name.pop(oldest.name, None)
        return True


_CLOSED = None


class DeviceWatch:
    """One subscriber's view: the table when it subscribed (`peers`), then every later event."""

    def __init__(self, peers: list[Peer], queue_size: int) -> None:
        self.peers = peers
        self.overflowed = False
        self._queue: asyncio.Queue[DeviceEvent | None] = asyncio.Queue(queue_size + 1)
        self._size = queue_size

    def _put(self, event: DeviceEvent | None) -> bool:
        if event is not None and self._queue.qsize() >= self._size:
            self.overflowed = True
            self._queue.put_nowait(_CLOSED)
            return False
        self._queue.put_nowait(event)
        return True

    async def __aiter__(self) -> AsyncIterator[DeviceEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    def end(self) -> None:
        """Ends the iteration after the events already queued (the watcher lost its permission)."""
        self._queue.put_nowait(_CLOSED)


class DeviceEvents:
    """The feed of peer table changes; on the event loop only. A watcher that falls `queue_size`
    events behind is dropped (`overflowed`)."""

    def __init__(self, table: PeerTable, max_watchers: int = 64, queue_size: int = 1024) -> None:
        self._table = table
        self._max = max_watchers
        self._queue_size = queue_size
        self._watches: set[DeviceWatch] = set()
        self.closed = False

    def watch(self) -> DeviceWatch:
        """Subscribes; the snapshot and the subscription are taken at the same point of the loop."""
        if len(self._watches) >= self._max:
            raise ResourceExhausted(f"{self._max} device watches are open already, the limit")
        w = DeviceWatch(self._table.peers(), self._queue_size)
        if self.closed:
            w._put(_CLOSED)
        else:
            self._watches.add(w)
        return w

    def unwatch(self, w: DeviceWatch) -> None:
        self._watches.discard(w)

    def publish(self, events: list[DeviceEvent]) -> None:
        for event in events:
            for w in list(self._watches):
                if not w._put(event):
                    self._watches.discard(w)

    def close(self) -> None:
        """Ends every watch (daemon shutdown)."""
        self.closed = True
        for w in self._watches:
            w._put(_CLOSED)
        self._watches.clear()

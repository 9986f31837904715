"""Data-change notification of KV stores: committed writes, local or applied by sync, to subscribers.

Local writes publish from the database writer thread right after their commit, remote ones from the
sync engine's callback; both go through DataShare's Feed, so a subscriber sees every write in commit
order, never before it commits. An app holds at most `max_per_store` subscriptions per store
(OpenHarmony: 8 data-change listeners per store).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datamgr.changefeed import Feed, Subscription
from datamgr.errors import DatamgrError, ResourceExhausted

Entry = tuple[bytes, Any]  # key, storage Value (None: unknown)
_ENTRY_BYTES = 64  # an entry's own overhead, so that floods of tiny writes count too


@dataclass(frozen=True, slots=True)
class KvChange:
    """One committed write of one device's key space. `remote`: applied by sync from a peer."""

    store_id: str
    device: str
    remote: bool
    inserted: tuple[Entry, ...] = ()
    updated: tuple[Entry, ...] = ()
    deleted: tuple[Entry, ...] = ()

    def nbytes(self) -> int:
        """About the bytes the change holds (keys and values), for the feed's subscriber caps."""
        return sum(
            _ENTRY_BYTES + len(key) + _value_bytes(value)
            for entries in (self.inserted, self.updated, self.deleted)
            for key, value in entries
        )


def _value_bytes(value: Any) -> int:
    """A storage Value's data; text twice (it is kept with its UTF-8 encoding)."""
    data = getattr(value, "data", None)
    if isinstance(data, bytes):
        return len(data)
    return 2 * len(data) if isinstance(data, str) else 8


def classify(
    store_id: str, device: str, remote: bool, changes: Sequence[Any], before: Mapping[bytes, Any] | None
) -> KvChange | None:
    """Sorts a write's changes by what they did, given each key's value before it (None: it had none).

    With `before` None (not known: changes a peer sent), puts count as updates and deletes carry no old
    value. None when nothing changed."""
    inserted, updated, deleted = [], [], []
    for change in changes:
        old = None if before is None else before.get(change.key)
        if change.value is None:
            deleted.append((change.key, old))
        elif before is not None and old is None:
            inserted.append((change.key, change.value))
        else:
            updated.append((change.key, change.value))
    if not (inserted or updated or deleted):
        return None
    return KvChange(store_id, device, remote, tuple(inserted), tuple(updated), tuple(deleted))


def remote_changes(store_id: str, peer: str, changes: Sequence[Any]) -> list[KvChange]:
    """A batch sync applied from `peer`, as one change per device key space it touched.

    In SINGLE_VERSION stores, which have no per-device key spaces, the device is the change's origin.
    What the keys held before is not known, so puts are updates (see `classify`)."""
    by_device: dict[str, list[Any]] = {}
    for change in changes:
        by_device.setdefault(change.device or change.origin or peer, []).append(change)
    out = [classify(store_id, device, True, group, None) for device, group in by_device.items()]
    return [c for c in out if c is not None]


class KvNotifier:
    """Subscriptions per (app, store) and the feed that fills them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_per_store: int,
        queue_size: int,
        max_bytes: int = 1 << 62,
        max_app_bytes: int = 1 << 62,
    ) -> None:
        self._feed: Feed[KvChange] = Feed(loop, 1 << 62, queue_size, max_bytes, max_app_bytes, section="kv")
        self._max_per_store = max_per_store
        self._held: dict[tuple[str, str], set[Subscription[KvChange]]] = defaultdict(set)

    def subscribe(
        self, app: str, store_id: str, check: Callable[[], None] | None = None
    ) -> Subscription[KvChange]:
        """Registers a subscription (on the event loop); ResourceExhausted over the per-store limit.
        `check` raises once the app may no longer read (see `Feed`)."""
        held = self._held[(app, store_id)]
        if len(held) >= self._max_per_store:
            raise ResourceExhausted(
                f"{app} already holds {len(held)} subscriptions of store {store_id.split('/', 1)[-1]}, "
                "the limit per store"
            )
        sub = self._feed.subscribe(app, store_id, check)
        held.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription[KvChange]) -> None:
        self._feed.unsubscribe(sub)
        held = self._held.get((sub.app, sub.key))
        if held is not None:
            held.discard(sub)
            if not held:
                del self._held[(sub.app, sub.key)]

    def end(self, store_id: str, app: str | None = None, error: DatamgrError | None = None) -> int:
        """Ends the subscriptions of a store (of one app, or of all): their streams finish, with `error`
        if given."""
        ended = 0
        for (owner, key), held in list(self._held.items()):
            if key != store_id or app not in (None, owner):
                continue
            for sub in list(held):
                self.unsubscribe(sub)
                if not sub.ended:
                    self._feed.end(sub, error)
                    ended += 1
        return ended

    def recheck(self, app: str) -> int:
        """Ends `app`'s subscriptions whose check fails now (its permissions changed, it was removed)."""
        return self._feed.recheck(app)

    def watched(self, store_id: str) -> bool:
        """Whether anyone subscribes to the store (any thread; a hint to skip building changes)."""
        return self._feed.has_subscribers(store_id)

    def publish(self, change: KvChange | None) -> None:
        """Delivers a committed change (callable from any thread)."""
        if change is not None:
            self._feed.publish(change.store_id, [change])

    def close(self) -> None:
        self._feed.close()
        self._held.clear()

"""When the daemon syncs: on request (the KV service's Sync), after local writes and when a peer
comes online. One session per store at a time (a manual sync waits for an automatic one).

Automatic sync, when on: a local write marks its store; `coalesce_s` later one PUSH goes to every
reachable trusted peer with everything written meanwhile (at most one push per store per window). A
trusted peer coming ONLINE (discovery) gets a PUSH_PULL of every store. Failures of automatic syncs
are logged, never raised: the next one resumes from the last ack. One that failed on the network is
tried again shortly while the peer is still reachable (`datamgr.sync.retries`), so a partition
shorter than discovery's offline timeout heals without waiting for the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from datamgr.device.peer_table import DeviceEvents, EventKind
from datamgr.device.trust import TrustStore
from datamgr.errors import InvalidArgument, NotFound
from datamgr.kv.storage import KvStorage
from datamgr.kv.sync_api import SyncCode, SyncMode, SyncStatus
from datamgr.storage import Database
from datamgr.sync.engine import SyncEngine
from datamgr.sync.retries import Retries, RetryPolicy, transient
from datamgr.sync.transport import PeerLinks

log = logging.getLogger("datamgr.sync")


@dataclass(frozen=True, slots=True)
class AutoSync:
    enabled: bool = True
    coalesce_s: float = 0.1
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class SyncScheduler:
    """Runs `engine` sessions for the daemon; `written` may be called from any thread."""

    def __init__(
        self,
        engine: SyncEngine,
        storage: KvStorage,
        db: Database,
        trust: TrustStore,
        links: PeerLinks,
        auto: AutoSync,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.engine, self._storage, self._db = engine, storage, db
        self._trust, self._links, self._auto, self._loop = trust, links, auto, loop
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._due: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._said: dict[tuple[str, str], str] = {}  # the last failure logged per (store, peer)
        self._retries = Retries(auto.retry)
        self._retrying: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._closed = False

    @property
    def links(self) -> PeerLinks:
        """How this device reaches its trusted peers (their addresses, levels and channels)."""
        return self._links

    async def sync(
        self, store_id: str, devices: Sequence[str], mode: SyncMode = SyncMode.PUSH_PULL
    ) -> dict[str, SyncStatus]:
        """One status per device (every trusted device if none is given); a device that is not
        trusted gets an ERROR status saying so."""
        targets = list(dict.fromkeys(devices)) or [d.device_id for d in self._trust.all()]
        if not targets:
            raise InvalidArgument("no device to sync with: this device is paired with none")
        statuses = {
            d: SyncStatus(
                SyncCode.ERROR,
                f"UNAUTHENTICATED: device {d} is not paired with this device (datamgr devices trusted)",
            )
            for d in targets
            if self._links.level(d) is None
        }
        known = [d for d in targets if d not in statuses]
        if known:
            async with self._locks[store_id]:
                statuses |= await self.engine.sync(store_id, known, mode)
        return {d: statuses[d] for d in targets}

    # ---- automatic sync ----

    def written(self, store_id: str) -> None:
        """A local write to `store_id` committed (any thread)."""
        if self._auto.enabled and not self._closed:
            self._loop.call_soon_threadsafe(self._mark, store_id)

    def _mark(self, store_id: str) -> None:
        if store_id not in self._due and not self._closed:
            self._due[store_id] = self._loop.call_later(self._auto.coalesce_s, self._push, store_id)

    def _push(self, store_id: str) -> None:
        del self._due[store_id]
        self._spawn(self._auto_sync(store_id, self._links.reachable(), SyncMode.PUSH_ONLY))

    def peer_online(self, device_id: str) -> None:
        if self._auto.enabled and self._links.level(device_id) is not None:
            self._spawn(self._catch_up(device_id))

    async def _catch_up(self, device_id: str) -> None:
        try:
            address = self._links.address(device_id)
            if address and address != self._trust.get(device_id).address:
                await self._db.write(self._trust.set_address, device_id, address)
        except NotFound:
            return  # unpaired meanwhile
        for store in await self._db.read(self._storage.list_stores):
            await self._auto_sync(store.store_id, [device_id], SyncMode.PUSH_PULL)

    async def _auto_sync(self, store_id: str, peers: list[str], mode: SyncMode) -> None:
        if not peers:
            return
        for peer, status in (await self.sync(store_id, peers, mode)).items():
            failed = status.code not in (SyncCode.OK, SyncCode.SKIPPED)
            said = self._said.pop((store_id, peer), None)
            if failed:
                self._said[store_id, peer] = status.message
            # a failure is logged when it starts or changes, not on every write window
            level = logging.INFO if failed and status.message != said else logging.DEBUG
            log.log(level, "auto %s of %s with %s: %s", mode.name, store_id, peer, status)
            self._retry_later(store_id, peer, mode, status)

    def _retry_later(self, store_id: str, peer: str, mode: SyncMode, status: SyncStatus) -> None:
        if not transient(status):
            self._retries.settled(store_id, peer, mode)
            return
        delay = self._retries.failed(store_id, peer, mode, self._loop.time())
        if delay is None:
            give_up_s = self._auto.retry.give_up_s
            log.info("auto sync of %s with %s: failing for %.0f s, not retried", store_id, peer, give_up_s)
        elif (store_id, peer) not in self._retrying and not self._closed:
            self._retrying[store_id, peer] = self._loop.call_later(delay, self._retry, store_id, peer)

    def _retry(self, store_id: str, peer: str) -> None:
        del self._retrying[store_id, peer]
        mode = self._retries.owed(store_id, peer)
        if mode is None:
            return
        if peer not in self._links.reachable():
            self._retries.settled(store_id, peer)  # offline: its next ONLINE catches up
            return
        self._spawn(self._auto_sync(store_id, [peer], mode))

    async def watch(self, events: DeviceEvents) -> None:
        """Catches up with every trusted peer that comes online, until discovery closes."""
        w = events.watch()
        try:
            for peer in w.peers:
                if peer.online:
                    self.peer_online(peer.device_id)
            async for event in w:
                if event.kind is EventKind.ONLINE:
                    self.peer_online(event.peer.device_id)
        finally:
            events.unwatch(w)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("automatic sync failed", exc_info=task.exception())

    async def close(self) -> None:
        """Stops automatic syncs (the running ones are cancelled: they resume next time) and closes
        the links."""
        self._closed = True
        for handle in [*self._due.values(), *self._retrying.values()]:
            handle.cancel()
        self._due.clear()
        self._retrying.clear()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._links.close()

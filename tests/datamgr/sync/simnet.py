"""An in-process network of replicas for sync tests (the shape of OpenHarmony's
VirtualCommunicatorAggregator and Yjs's TestConnector).

Each replica is a real KvStorage on its own SQLite file behind a real Database (writer thread +
reader), with a SyncEngine whose links are `SimLink`s. Links lose requests, lose replies, duplicate
and hold back requests (delivered later, out of order, after their sender gave up) from one seeded
RNG; partitions cut links until healed. Errors cross a link the way gRPC carries them: only the code
and the message survive. Time is a shared fake clock, each replica reading it with its own skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from datamgr.errors import BY_CODE, DatamgrError, DeadlineExceeded, Unavailable
from datamgr.hlc import HLC
from datamgr.kv.storage import Change, KvStorage
from datamgr.storage import Database, create_engine
from datamgr.sync.engine import SyncEngine, SyncOptions
from datamgr.sync.messages import Reply, Request


@dataclass(slots=True)
class Faults:
    drop: float = 0.0  # the request is lost: the handler never runs
    drop_reply: float = 0.0  # the handler runs, the reply is lost
    duplicate: float = 0.0  # the request also arrives once more, later
    hold: float = 0.0  # the request arrives only later (the sender times out first)
    late: float = 0.0  # chance, per request anywhere, that one held-back message arrives now


@dataclass(slots=True)
class Stats:
    requests: int = 0
    dropped: int = 0
    replies_dropped: int = 0
    late_delivered: int = 0
    refused: int = 0  # requests the cut network refused


class FakeTime:
    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.ms = start_ms

    def advance(self, ms: int) -> None:
        self.ms += ms


@dataclass
class Replica:
    name: str
    level: int
    storage: KvStorage
    db: Database
    engine: SyncEngine
    clock: HLC
    remote: list[tuple[str, str, Change]] = field(default_factory=list)  # (store, peer, change) applied


class SimNet:
    def __init__(self, root: Path, seed: int = 0, faults: Faults | None = None) -> None:
        self.root, self.rng = root, random.Random(seed)
        self.faults = faults or Faults()
        self.time = FakeTime()
        self.replicas: dict[str, Replica] = {}
        self.levels: dict[str, int] = {}  # what every device's pairing recorded about the others
        self.cuts: set[frozenset[str]] = set()
        self.held: list[tuple[str, str, Request]] = []
        self.stats = Stats()
        # Test hooks, called around each delivery; they may raise (the link dies) or return a
        # changed message or reply (a tampering or misbehaving peer).
        self.before: Callable[[str, str, Request], Request] | None = None
        self.after: Callable[[str, str, Request, Reply], Reply] | None = None

    def add(self, name: str, level: int = 4, skew_ms: int = 0, options: SyncOptions | None = None) -> Replica:
        engine = create_engine(f"sqlite:///{self.root / name}.db")
        clock = HLC(lambda: self.time.ms + skew_ms)
        storage = KvStorage(engine, name, clock)
        db = Database(engine, read_threads=1)
        replica: Replica

        def heard(store_id: str, peer: str, changes: list[Change]) -> None:
            replica.remote.extend((store_id, peer, c) for c in changes)

        sync = SyncEngine(
            storage, db, lambda peer: SimLink(self, name, peer), self.levels.get, options, heard
        )
        replica = Replica(name, level, storage, db, sync, clock)
        self.replicas[name] = replica
        self.levels[name] = level
        return replica

    def __getitem__(self, name: str) -> Replica:
        return self.replicas[name]

    def close(self) -> None:
        for r in self.replicas.values():
            r.db.close()

    # ---- partitions ----

    def partition(self, *groups: Iterable[str]) -> None:
        """Cuts every link between devices of different groups (devices in no group: cut from all)."""
        sides = [set(g) for g in groups]
        names = list(self.replicas)
        self.cuts = {
            frozenset((a, b))
            for i, a in enumerate(names)
            for b in names[i + 1 :]
            if not any(a in g and b in g for g in sides)
        }

    def heal(self) -> None:
        self.cuts = set()

    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cuts

    # ---- delivery ----

    async def deliver(self, src: str, dst: str, msg: Request) -> Reply:
        try:
            return await self.replicas[dst].engine.handle(src, msg)
        except DatamgrError as exc:  # what survives the wire: the code and the message
            raise BY_CODE.get(exc.code, DatamgrError)(exc.message) from None

    async def deliver_held(self, count: int | None = None) -> None:
        """Delivers held-back messages now, in random order; the replies go nowhere."""
        self.rng.shuffle(self.held)
        n = len(self.held) if count is None else min(count, len(self.held))
        batch, self.held = self.held[:n], self.held[n:]
        for src, dst, msg in batch:
            if self.is_cut(src, dst):
                continue
            self.stats.late_delivered += 1
            with contextlib.suppress(DatamgrError):  # stale messages get refused: as they should
                await self.deliver(src, dst, msg)


class SimLink:
    """One device's link to one peer; implements datamgr.sync.messages.PeerLink."""

    def __init__(self, net: SimNet, src: str, dst: str) -> None:
        self.net, self.src, self.dst = net, src, dst

    async def request(self, msg: Request) -> Reply:
        net, f, rng = self.net, self.net.faults, self.net.rng
        net.stats.requests += 1
        for _ in range(rng.randrange(3)):  # let concurrent sessions interleave differently
            await asyncio.sleep(0)
        if net.held and rng.random() < f.late:
            await net.deliver_held(1)
        if net.is_cut(self.src, self.dst):
            net.stats.refused += 1
            raise Unavailable(f"{self.dst} is unreachable from {self.src} (partition)")
        if rng.random() < f.drop:
            net.stats.dropped += 1
            raise DeadlineExceeded(f"no reply from {self.dst} in time (request lost)")
        if rng.random() < f.hold:
            net.held.append((self.src, self.dst, msg))
            raise DeadlineExceeded(f"no reply from {self.dst} in time (request delayed)")
        if net.before is not None:
            msg = net.before(self.src, self.dst, msg)
        reply = await net.deliver(self.src, self.dst, msg)
        if net.after is not None:
            reply = net.after(self.src, self.dst, msg, reply)
        if rng.random() < f.duplicate:
            net.held.append((self.src, self.dst, msg))
        if rng.random() < f.drop_reply:
            net.stats.replies_dropped += 1
            raise DeadlineExceeded(f"no reply from {self.dst} in time (reply lost)")
        return reply

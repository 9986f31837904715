"""The sync engine: sessions between this device's KV stores and its peers', over any `PeerLink`.

`sync(store_id, peers, mode)` runs one session per peer, concurrently: a handshake, then PUSH
(our changes above the peer's acked watermark, in batches, up to `push_window` of them in flight; each
ack moves the watermark), PULL (the mirror: the peer's changes above our received watermark) or both.
`handle(sender, request)` is the responder side, stateless between requests. Every watermark moves in
the transaction that applied the data, so an interrupted session loses nothing: the next one resumes
where the last ack left off, and whatever is sent twice is a no-op (see
`datamgr.kv.storage.KvStorage.apply_remote`); a batch that overtook the one before it finds a gap and
is refused whole.

Rules enforced here: the protocol version and the store options (kind, label) must match; a changed
epoch means the peer's store was rebuilt (both watermarks reset: full resync); data goes to a peer
only if this device's record of its security level may hold the store's label (`security.may_hold`);
batches respect both sides' limits. Storage calls run on the database's threads, never on the loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from datamgr import security_levels as security
from datamgr.errors import (
    DatamgrError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TooLarge,
)
from datamgr.kv.storage import Change, KvStorage, PeerState, StoreInfo, StoreKind
from datamgr.kv.sync_api import SyncCode, SyncMode, SyncStatus
from datamgr.storage import Database
from datamgr.sync.messages import (
    PROTOCOL_VERSION,
    Handshake,
    HandshakeReply,
    PeerLink,
    PullReply,
    PullRequest,
    PushAck,
    PushBatch,
    Reply,
    Request,
    change_size,
    cut_batch,
)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    batch_size: int = 1000  # changes per batch, sent and accepted
    batch_bytes: int = 4 * 1024 * 1024  # bytes per batch (a single larger change still goes alone)
    # Push batches in flight at once: with 2 the next one travels while the peer applies this one;
    # with 1 each waits for the previous ack, so nothing after a failed batch reaches the peer.
    push_window: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_bytes < 1 or self.push_window < 1:
            raise InvalidArgument("batch_size, batch_bytes and push_window must be at least 1")


T = TypeVar("T")
RemoteChanges = Callable[[str, str, list[Change]], None]  # (store_id, peer, changes that took effect)


@dataclass(slots=True)
class _Session:
    info: StoreInfo
    peer: str
    link: PeerLink
    peer_epoch: str = ""
    may_pull: bool = False
    acked: int = 0  # the peer holds our changes up to here
    received: int = 0  # we hold the peer's changes up to here
    batch_size: int = 0
    batch_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    pushed: int = 0
    pulled: int = 0
    moved: bool = False  # a batch went through: a failure now leaves a partial sync


class SyncEngine:
    """Syncs the stores of `storage` with peers. `links(peer)` connects to a peer; `peer_level(peer)`
    is the device security level recorded for a trusted peer (None: not trusted); `on_remote_changes`
    hears every batch of peer changes that took effect here (on the event loop)."""

    def __init__(
        self,
        storage: KvStorage,
        db: Database,
        links: Callable[[str], PeerLink],
        peer_level: Callable[[str], int | None],
        options: SyncOptions | None = None,
        on_remote_changes: RemoteChanges | None = None,
    ) -> None:
        self.storage, self.db = storage, db
        self.device_id = storage.device_id
        self._links, self._peer_level = links, peer_level
        self.options = options or SyncOptions()
        self._notify = on_remote_changes

    # ---- initiator ----

    async def sync(
        self, store_id: str, peers: Sequence[str], mode: SyncMode = SyncMode.PUSH_PULL
    ) -> dict[str, SyncStatus]:
        """One session per peer, concurrently; a peer's failure does not stop the others."""
        unique = list(dict.fromkeys(peers))
        statuses = await asyncio.gather(*(self._session(store_id, p, SyncMode(mode)) for p in unique))
        return dict(zip(unique, statuses, strict=True))

    async def _session(self, store_id: str, peer: str, mode: SyncMode) -> SyncStatus:
        s: _Session | None = None
        try:
            s = await self._handshake(store_id, peer)
            return await self._transfer(s, mode)
        except DatamgrError as exc:
            code = SyncCode.PARTIAL if s is not None and s.moved else SyncCode.ERROR
            message = f"{exc.code}: {exc.message}"
            return SyncStatus(code, message, s.pushed, s.pulled) if s else SyncStatus(code, message)

    async def _transfer(self, s: _Session, mode: SyncMode) -> SyncStatus:
        push = mode in (SyncMode.PUSH_ONLY, SyncMode.PUSH_PULL)
        pull = mode in (SyncMode.PULL_ONLY, SyncMode.PUSH_PULL)
        label, level = s.info.security_level, self._level(s.peer)
        skipped = []
        if push and not security.may_hold(level, label):
            push = False
            skipped.append("push skipped: " + security.refusal(s.peer, level, label))
        if pull and not s.may_pull:
            pull = False
            skipped.append(f"pull skipped: {s.peer} does not send S{label} data to this device")
        if push:
            await self._push(s)
        if pull:
            await self._pull(s)
        code = SyncCode.OK if not skipped else SyncCode.PARTIAL if push or pull else SyncCode.SKIPPED
        return SyncStatus(code, "; ".join([*s.notes, *skipped]), s.pushed, s.pulled)

    def _level(self, peer: str) -> int:
        level = self._peer_level(peer)
        if level is None:
            raise PermissionDenied(f"device {peer} is not a trusted peer")
        return level

    async def _handshake(self, store_id: str, peer: str) -> _Session:
        if peer == self.device_id:
            raise InvalidArgument("a device does not sync with itself")
        self._level(peer)
        info = await self.db.read(self.storage.get_store, store_id)
        if info is None:
            raise NotFound(f"no KV store {store_id} on this device")
        s = _Session(info, peer, self._links(peer))
        state = await self.db.read(self.storage.peer_state, store_id, peer)
        hs = Handshake(
            PROTOCOL_VERSION, store_id, self.device_id, peer, info.epoch, info.kind, info.security_level,
            state.peer_epoch if state else None, state.received_seq if state else 0,
            self.options.batch_size, self.options.batch_bytes,
        )  # fmt: skip
        reply = _expect(await s.link.request(hs), HandshakeReply, hs)
        if reply.version != PROTOCOL_VERSION:
            raise FailedPrecondition(
                f"{peer} speaks sync protocol {reply.version}, this device {PROTOCOL_VERSION}"
            )
        _same_options(info, reply.kind, reply.security_level, peer)
        known, rebuilt = await self.db.write(self.storage.note_peer_epoch, store_id, peer, reply.epoch)
        if reply.received_seq > known.acked_seq:
            await self.db.write(self.storage.set_acked, store_id, peer, reply.received_seq)
        s.peer_epoch, s.may_pull = reply.epoch, reply.may_pull
        s.acked, s.received = max(known.acked_seq, reply.received_seq), known.received_seq
        s.batch_size = max(1, min(self.options.batch_size, reply.batch_size))
        s.batch_bytes = max(1, min(self.options.batch_bytes, reply.batch_bytes))
        if rebuilt:
            s.notes.append(f"{peer}'s store was rebuilt (new epoch): full resync")
        return s

    async def _push(self, s: _Session) -> None:
        """Our changes above the peer's acked watermark, in batches, up to `push_window` of them in
        flight. The peer applies them in the order they reach its writer; one that overtook the batch
        before it is refused (a gap: nothing written), and the push goes on after that one's ack."""
        store_id = s.info.store_id
        skip = s.peer if s.info.kind is StoreKind.DEVICE_COLLABORATION else None

        def read(since: int) -> asyncio.Future[list[Change]]:
            return _quiet(self.db.read(self.storage.changes_since, store_id, since, s.batch_size))

        inflight: deque[tuple[PushBatch, asyncio.Future[Reply], bool]] = deque()  # (batch, reply, overtaking)
        sent = s.acked  # the batches sent so far cover our seqs up to here
        ahead: asyncio.Future[list[Change]] | None = read(sent)  # the next rows; None: no more
        try:
            while True:
                while ahead is not None and len(inflight) < self.options.push_window:
                    if not (rows := await ahead):
                        ahead = None
                        break
                    changes, last = cut_batch(rows, sent, s.batch_bytes, skip)
                    batch = PushBatch(store_id, s.info.epoch, s.peer_epoch, sent, last, changes)
                    inflight.append((batch, _quiet(s.link.request(batch)), bool(inflight)))
                    sent, ahead = last, read(last)  # the next batch is read while this one travels
                if not inflight:
                    return
                batch, reply, overtaking = inflight.popleft()
                try:
                    ack: PushAck | None = _expect(await reply, PushAck, batch)
                except FailedPrecondition:  # a gap, if it overtook the batch before it
                    if not overtaking:
                        raise
                    ack = None
                if ack is not None:
                    if ack.received_seq < batch.last_seq:
                        raise InvalidArgument(
                            f"{s.peer} acked seq {ack.received_seq} for a batch up to {batch.last_seq}"
                        )
                    await self.db.write(self.storage.set_acked, store_id, s.peer, ack.received_seq)
                    s.acked, s.pushed, s.moved = ack.received_seq, s.pushed + ack.applied, True
                if ack is None or ack.received_seq > batch.last_seq:
                    # overtaken, or the peer held more than this batch: go on after what it holds
                    _cancel(ahead, *(r for _, r, _ in inflight))
                    inflight.clear()
                    sent, ahead = s.acked, read(s.acked)
        finally:
            _cancel(ahead, *(r for _, r, _ in inflight))

    async def _pull(self, s: _Session) -> None:
        store_id = s.info.store_id
        while True:
            req = PullRequest(store_id, s.info.epoch, s.peer_epoch, s.received, s.batch_size, s.batch_bytes)
            reply = _expect(await s.link.request(req), PullReply, req)
            if reply.epoch != s.peer_epoch or reply.since_seq != s.received:
                raise InvalidArgument(f"{s.peer} answered a pull after {s.received} with another batch")
            if reply.last_seq == s.received:
                return  # nothing more; this request also acked everything we hold
            self._check_size(reply.changes)
            loop, batch = asyncio.get_running_loop(), (s.peer_epoch, reply, s.received)
            applied, _ = await self.db.write(self._heard, loop, store_id, s.peer, self._on_pulled, *batch)
            s.received, s.pulled, s.moved = reply.last_seq, s.pulled + len(applied), True

    # ---- responder ----

    async def handle(self, sender: str, msg: Request) -> Reply:
        """Answers one request from `sender`, the authenticated device at the other end."""
        self._level(sender)
        if isinstance(msg, Handshake):
            return await self.db.write(self._on_handshake, sender, msg)
        if isinstance(msg, PushBatch):
            self._check_size(msg.changes)
            loop = asyncio.get_running_loop()
            applied, received = await self.db.write(
                self._heard, loop, msg.store_id, sender, self._on_push, msg
            )
            return PushAck(msg.store_id, received, len(applied))
        if isinstance(msg, PullRequest):
            info = await self.db.write(self._on_pull, sender, msg)
            size = max(1, min(msg.batch_size, self.options.batch_size))
            rows = await self.db.read(self.storage.changes_since, msg.store_id, msg.since_seq, size)
            nbytes = max(1, min(msg.batch_bytes, self.options.batch_bytes))
            skip = sender if info.kind is StoreKind.DEVICE_COLLABORATION else None
            changes, last = cut_batch(rows, msg.since_seq, nbytes, skip)
            return PullReply(msg.store_id, info.epoch, msg.since_seq, last, changes)
        raise InvalidArgument(f"unknown sync request {type(msg).__name__}")

    # Blocking parts: each runs as one job on the database's writer thread.

    def _on_handshake(self, sender: str, hs: Handshake) -> HandshakeReply:
        if hs.version != PROTOCOL_VERSION:
            raise FailedPrecondition(
                f"sync protocol version {hs.version} is not supported; this device speaks {PROTOCOL_VERSION}"
            )
        if hs.device != sender:
            raise PermissionDenied(f"a handshake claiming to be from {hs.device} came from {sender}")
        if hs.peer != self.device_id:
            raise FailedPrecondition(f"a handshake meant for {hs.peer} reached {self.device_id}")
        info = self._store(hs.store_id)
        _same_options(info, hs.kind, hs.security_level, sender)
        state, _ = self.storage.note_peer_epoch(hs.store_id, sender, hs.epoch)
        if hs.peer_epoch == info.epoch and hs.received_seq > state.acked_seq:
            self.storage.set_acked(hs.store_id, sender, hs.received_seq)
        may_pull = security.may_hold(self._level(sender), info.security_level)
        return HandshakeReply(
            PROTOCOL_VERSION, info.epoch, info.kind, info.security_level, state.received_seq, may_pull,
            self.options.batch_size, self.options.batch_bytes,
        )  # fmt: skip

    def _on_push(self, sender: str, b: PushBatch) -> tuple[list[Change], int]:
        self._current(b.store_id, b.peer_epoch)
        state = self._session_with(b.store_id, sender, b.epoch)
        applied = self._apply(b.store_id, sender, b.epoch, b.changes, b.last_seq, b.since_seq)
        # apply_remote either refused (raised), ignored a replay (received_seq unchanged and already
        # >= last_seq) or saved received_seq = last_seq (> the old one): the max of the two either way.
        return applied, max(state.received_seq, b.last_seq)

    def _on_pulled(self, peer: str, epoch: str, r: PullReply, since: int) -> tuple[list[Change], int]:
        return self._apply(r.store_id, peer, epoch, r.changes, r.last_seq, since), r.last_seq

    def _on_pull(self, sender: str, r: PullRequest) -> StoreInfo:
        info = self._current(r.store_id, r.peer_epoch)
        state = self._session_with(r.store_id, sender, r.epoch)
        level = self._level(sender)
        if not security.may_hold(level, info.security_level):
            raise PermissionDenied(security.refusal(sender, level, info.security_level))
        if r.since_seq > state.acked_seq:
            self.storage.set_acked(r.store_id, sender, r.since_seq)
        return info

    def _apply(
        self, store_id: str, peer: str, epoch: str, changes: Sequence[Change], last: int, since: int
    ) -> list[Change]:
        return self.storage.apply_remote(store_id, peer, epoch, changes, last, since_seq=since)

    def _store(self, store_id: str) -> StoreInfo:
        info = self.storage.get_store(store_id)
        if info is None:
            raise NotFound(f"no KV store {store_id} on device {self.device_id}")
        return info

    def _current(self, store_id: str, epoch: str) -> StoreInfo:
        info = self._store(store_id)
        if info.epoch != epoch:
            raise FailedPrecondition(
                f"a batch for epoch {epoch} of {store_id}, which is now epoch {info.epoch}: handshake again"
            )
        return info

    def _session_with(self, store_id: str, peer: str, epoch: str) -> PeerState:
        state = self.storage.peer_state(store_id, peer)
        if state is None or state.peer_epoch != epoch:
            raise FailedPrecondition(f"no session with {peer}'s store epoch {epoch}: handshake first")
        return state

    def _check_size(self, changes: Sequence[Change]) -> None:
        size = sum(change_size(c) for c in changes)
        if len(changes) > self.options.batch_size or (len(changes) > 1 and size > self.options.batch_bytes):
            raise TooLarge(
                f"a batch of {len(changes)} changes, {size} bytes; this device accepts "
                f"{self.options.batch_size} changes, {self.options.batch_bytes} bytes"
            )

    def _heard(
        self,
        loop: asyncio.AbstractEventLoop,
        store_id: str,
        peer: str,
        job: Callable[..., tuple[list[Change], int]],
        *args: Any,
    ) -> tuple[list[Change], int]:
        """`job(peer, *args)`, whose peer changes that took effect go to `on_remote_changes` on `loop`
        right after their commit: in commit order, and even when the request that brought them was
        cancelled meanwhile (a deadline, a dropped connection, a push window given up)."""
        applied, received = job(peer, *args)
        if applied and self._notify is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._notify, store_id, peer, applied)
        return applied, received


def _quiet(aw: Awaitable[T]) -> asyncio.Future[T]:
    """`aw` as a future whose failure is not reported as never retrieved if it ends up dropped."""
    fut = asyncio.ensure_future(aw)
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    return fut


def _cancel(*futures: asyncio.Future[Any] | None) -> None:
    for fut in futures:
        if fut is not None:
            fut.cancel()


def _expect(reply: object, cls: type[T], request: object) -> T:
    if not isinstance(reply, cls):
        raise InvalidArgument(f"{type(request).__name__} answered with {type(reply).__name__}")
    return reply


def _same_options(info: StoreInfo, kind: StoreKind, label: int, peer: str) -> None:
    if (info.kind, info.security_level) != (kind, label):
        raise FailedPrecondition(
            f"{info.store_id} is {info.kind.value} S{info.security_level} here but {kind} S{label} on "
            f"{peer}: stores with different options do not sync"
        )

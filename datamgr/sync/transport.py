"""The sync protocol over the mutual-TLS peer port: the SyncService servicer and `GrpcPeerLink`.

The servicer takes the sender from the connection's certificate (`calling_device`), converts the
proto to the engine's message, and answers with `SyncEngine.handle`; a DatamgrError becomes its status
at the peer server's edge (`datamgr._edge`). `GrpcPeerLink` is the initiator's `PeerLink`: one pinned
channel to a trusted peer, a deadline per request, and a failed call turned back into the responder's
DatamgrError (`datamgr.connection.acall`), so the engine sees the same errors as over the simulated
network.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from datamgr.connection import acall
from datamgr.device.identity import Identity
from datamgr.device.peer_channel import join_address, peer_channel
from datamgr.device.peer_server import calling_device
from datamgr.device.peer_table import Peer
from datamgr.device.trust import TrustStore
from datamgr.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable
from datamgr.kv.storage import Change, StoreKind, Value
from datamgr.sync.engine import SyncEngine
from datamgr.sync.messages import (
    Handshake,
    HandshakeReply,
    PeerLink,
    PullReply,
    PullRequest,
    PushAck,
    PushBatch,
    Reply,
    Request,
)
from datamgr.sync.v1 import sync_pb2 as pb
from datamgr.sync.v1 import sync_pb2_grpc as pb_grpc

log = logging.getLogger("datamgr.sync")

_KINDS = {
    StoreKind.DEVICE_COLLABORATION: pb.STORE_KIND_DEVICE_COLLABORATION,
    StoreKind.SINGLE_VERSION: pb.STORE_KIND_SINGLE_VERSION,
}
_KIND_OF = {v: k for k, v in _KINDS.items()}


# ---- conversions ----


def _kind(value: int) -> StoreKind:
    kind = _KIND_OF.get(value)  # type: ignore[call-overload]
    if kind is None:
        raise InvalidArgument(f"unknown store kind {value}")
    return kind


def add_changes(target: Any, changes: Iterable[Change]) -> None:
    """Appends `changes` to a repeated `pb.Change` field (in place: cheaper than building each one)."""
    add = target.add
    for c in changes:
        v = c.value
        if v is None:
            add(device=c.device, key=c.key, tombstone=True, hlc=c.hlc, origin=c.origin, seq=c.seq)
        else:
            add(
                device=c.device, key=c.key, value=v.encode(), vtype=v.vtype, hlc=c.hlc, origin=c.origin,
                seq=c.seq,
            )  # fmt: skip


def changes_from_proto(store_id: str, changes: Any) -> tuple[Change, ...]:
    decode, out = Value.decode, []
    for c in changes:
        value = None if c.tombstone else decode(c.vtype, c.value)
        out.append(Change(store_id, c.device, c.key, value, c.hlc, c.origin, c.seq))
    return tuple(out)


def request_to_proto(msg: Request) -> Any:
    if isinstance(msg, Handshake):
        return pb.HandshakeRequest(
            version=msg.version, store_id=msg.store_id, device=msg.device, peer=msg.peer, epoch=msg.epoch,
            kind=_KINDS[msg.kind], security_level=msg.security_level, peer_epoch=msg.peer_epoch,
            received_seq=msg.received_seq, batch_size=msg.batch_size, batch_bytes=msg.batch_bytes,
        )  # fmt: skip
    if isinstance(msg, PushBatch):
        push = pb.PushRequest(
            store_id=msg.store_id, epoch=msg.epoch, peer_epoch=msg.peer_epoch, since_seq=msg.since_seq,
            last_seq=msg.last_seq,
        )  # fmt: skip
        add_changes(push.changes, msg.changes)
        return push
    return pb.PullRequest(
        store_id=msg.store_id, epoch=msg.epoch, peer_epoch=msg.peer_epoch, since_seq=msg.since_seq,
        batch_size=msg.batch_size, batch_bytes=msg.batch_bytes,
    )  # fmt: skip


def handshake_from_proto(r: pb.HandshakeRequest) -> Handshake:
    return Handshake(
        r.version, r.store_id, r.device, r.peer, r.epoch, _kind(r.kind), r.security_level,
        r.peer_epoch if r.HasField("peer_epoch") else None, r.received_seq, r.batch_size, r.batch_bytes,
    )  # fmt: skip


def push_from_proto(r: pb.PushRequest) -> PushBatch:
    changes = changes_from_proto(r.store_id, r.changes)
    return PushBatch(r.store_id, r.epoch, r.peer_epoch, r.since_seq, r.last_seq, changes)


def pull_from_proto(r: pb.PullRequest) -> PullRequest:
    return PullRequest(r.store_id, r.epoch, r.peer_epoch, r.since_seq, r.batch_size, r.batch_bytes)


def reply_to_proto(reply: Reply) -> Any:
    if isinstance(reply, HandshakeReply):
        return pb.HandshakeResponse(
            version=reply.version, epoch=reply.epoch, kind=_KINDS[reply.kind],
            security_level=reply.security_level, received_seq=reply.received_seq, may_pull=reply.may_pull,
            batch_size=reply.batch_size, batch_bytes=reply.batch_bytes,
        )  # fmt: skip
    if isinstance(reply, PushAck):
        return pb.PushResponse(
            store_id=reply.store_id, received_seq=reply.received_seq, applied=reply.applied
        )
    pull = pb.PullResponse(
        store_id=reply.store_id, epoch=reply.epoch, since_seq=reply.since_seq, last_seq=reply.last_seq
    )
    add_changes(pull.changes, reply.changes)
    return pull


def reply_from_proto(msg: Request, r: Any) -> Reply:
    if isinstance(msg, Handshake):
        return HandshakeReply(
            r.version, r.epoch, _kind(r.kind), r.security_level, r.received_seq, r.may_pull,
            r.batch_size, r.batch_bytes,
        )  # fmt: skip
    if isinstance(msg, PushBatch):
        return PushAck(r.store_id, r.received_seq, r.applied)
    changes = changes_from_proto(r.store_id, r.changes)
    return PullReply(r.store_id, r.epoch, r.since_seq, r.last_seq, changes)


# ---- the responder ----


class SyncServicer(pb_grpc.SyncServiceServicer):
    """SyncService on the peer server: every call is answered by `engine.handle` for its caller."""

    def __init__(self, engine: SyncEngine, trust: TrustStore) -> None:
        self._engine = engine
        self._trust = trust

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_SyncServiceServicer_to_server(self, server)

    def _sender(self, context: Any) -> str:
        device = calling_device(context, self._trust)
        if device is None:  # the interceptor refuses these first; unpaired between the two checks
            raise Unauthenticated("the calling device is not paired with this device")
        return device.device_id

    async def Handshake(self, request: pb.HandshakeRequest, context: Any) -> pb.HandshakeResponse:
        sender = self._sender(context)
        return reply_to_proto(await self._engine.handle(sender, handshake_from_proto(request)))  # type: ignore[no-any-return]

    async def Push(self, request: pb.PushRequest, context: Any) -> pb.PushResponse:
        sender = self._sender(context)
        return reply_to_proto(await self._engine.handle(sender, push_from_proto(request)))  # type: ignore[no-any-return]

    async def Pull(self, request: pb.PullRequest, context: Any) -> pb.PullResponse:
        sender = self._sender(context)
        return reply_to_proto(await self._engine.handle(sender, pull_from_proto(request)))  # type: ignore[no-any-return]


# ---- the initiator ----


class GrpcPeerLink:
    """A PeerLink to one trusted device over a mutual-TLS channel pinned to its certificate."""

    def __init__(
        self, address: str, identity: Identity, fingerprint: str, trust: TrustStore, timeout_s: float
    ) -> None:
        self.address, self.fingerprint = address, fingerprint
        self._channel = peer_channel(address, identity, fingerprint, trust)
        self._stub = pb_grpc.SyncServiceStub(self._channel)
        self._timeout = timeout_s

    async def request(self, msg: Request) -> Reply:
        method = (
            self._stub.Handshake
            if isinstance(msg, Handshake)
            else self._stub.Push
            if isinstance(msg, PushBatch)
            else self._stub.Pull
        )
        reply = await acall(method, request_to_proto(msg), timeout=self._timeout)
        return reply_from_proto(msg, reply)

    async def close(self) -> None:
        await self._channel.close()


class PeerLinks:
    """How this device reaches its trusted peers: the address discovery sees it online at (else the one
    recorded in the trust store), and one cached `GrpcPeerLink` per device, renewed when the address
    or the pinned certificate changes. `level` is the engine's `peer_level`, from the trust record."""

    def __init__(
        self,
        identity: Identity,
        trust: TrustStore,
        seen: Callable[[str], Peer | None],
        discovering: Callable[[], bool],
        timeout_s: float,
    ) -> None:
        self._identity, self._trust = identity, trust
        self._seen, self._discovering = seen, discovering
        self._timeout = timeout_s
        self._links: dict[str, GrpcPeerLink] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def level(self, device_id: str) -> int | None:
        try:
            return self._trust.get(device_id).security_level
        except NotFound:
            return None

    def address(self, device_id: str) -> str:
        """Where the trusted device's peer server is now ("" if nowhere known)."""
        device = self._trust.get(device_id)
        peer = self._seen(device_id)
        fresh = peer is not None and peer.online and peer.port and peer.addresses
        if fresh and peer and peer.advert.fingerprint in ("", device.fingerprint):
            return join_address(peer.addresses[0], peer.port)
        return device.address

    def reachable(self) -> list[str]:
        """The trusted devices to sync with on our own initiative: online ones while discovery runs,
        every one with a known address when it does not."""
        devices = self._trust.all()
        if self._discovering():
            return [d.device_id for d in devices if (p := self._seen(d.device_id)) is not None and p.online]
        return [d.device_id for d in devices if d.address]

    def link(self, device_id: str) -> PeerLink:
        device = self._trust.get(device_id)
        address = self.address(device_id)
        if not address:
            raise Unavailable(f"no address is known for device {device_id}: it has not been seen online")
        cached = self._links.get(device_id)
        if cached is not None and (cached.address, cached.fingerprint) == (address, device.fingerprint):
            return cached
        if cached is not None:
            self._close_later(cached)
        link = GrpcPeerLink(address, self._identity, device.fingerprint, self._trust, self._timeout)
        self._links[device_id] = link
        return link

    def _close_later(self, link: GrpcPeerLink) -> None:
        task = asyncio.ensure_future(link.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        await asyncio.gather(*(link.close() for link in links), *self._closing, return_exceptions=True)

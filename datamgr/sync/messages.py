"""The sync protocol's messages, plain frozen dataclasses, and the link that carries them.

A session (initiator → responder, one store):

    Handshake    → HandshakeReply     versions, store options and epochs, watermarks, batch limits
    PushBatch    → PushAck            initiator's changes (since_seq, last_seq] → responder's received_seq
    PullRequest  → PullReply          "your changes after since_seq" → a batch (since_seq, last_seq]

Every message names its store and the epochs it was meant for, so the responder keeps no session
state: a batch is identified by (store, sender epoch, since_seq, last_seq), and a late or repeated
one is refused or is a no-op. A PullRequest's `since_seq` doubles as the ack of everything before it;
an empty PullReply (last_seq == since_seq) ends the pull. Seqs are the *sender's* local seqs.

The transport (in-process simulation, later mTLS gRPC) implements `PeerLink`; the responder side calls
`SyncEngine.handle(sender, request)` with the sender's device id taken from the authenticated
connection, never from the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from datamgr.kv.storage import Change, StoreKind

PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class Handshake:
    version: int
    store_id: str
    device: str  # the initiator (must be the connection's authenticated device)
    peer: str  # the device the initiator means to reach
    epoch: str  # the initiator's store epoch
    kind: StoreKind
    security_level: int  # the store's label, S1-S4
    peer_epoch: str | None  # the responder's epoch as the initiator last saw it (None: never)
    received_seq: int  # the initiator holds the responder's changes up to here (in peer_epoch)
    batch_size: int  # the most changes per batch the initiator accepts
    batch_bytes: int


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    version: int
    epoch: str  # the responder's store epoch
    kind: StoreKind
    security_level: int
    received_seq: int  # the responder holds the initiator's changes up to here (in its epoch)
    may_pull: bool  # the responder's record of the initiator's device level allows the label
    batch_size: int
    batch_bytes: int


@dataclass(frozen=True, slots=True)
class PushBatch:
    store_id: str
    epoch: str  # the sender's store epoch
    peer_epoch: str  # the receiver's epoch this batch was meant for
    since_seq: int  # the batch continues the sender's changes after this seq...
    last_seq: int  # ...up to here, inclusive (changes of the receiver's own key space left out)
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class PushAck:
    store_id: str
    received_seq: int  # the receiver holds the sender's changes up to here
    applied: int  # how many of the batch's changes took effect (the rest were older or known)


@dataclass(frozen=True, slots=True)
class PullRequest:
    store_id: str
    epoch: str  # the requester's store epoch
    peer_epoch: str  # the responder's epoch the requester's watermark belongs to
    since_seq: int  # the requester holds the responder's changes up to here: send what follows
    batch_size: int
    batch_bytes: int


@dataclass(frozen=True, slots=True)
class PullReply:
    store_id: str
    epoch: str
    since_seq: int
    last_seq: int  # == since_seq: nothing more
    changes: tuple[Change, ...]


Request = Handshake | PushBatch | PullRequest
Reply = HandshakeReply | PushAck | PullReply


class PeerLink(Protocol):
    """A connection to one peer's sync responder.

    `request` returns the reply or raises a DatamgrError: the responder's own error (same `code` and
    message), Unavailable if the peer cannot be reached, DeadlineExceeded if no reply came in time (the
    request may or may not have been applied: every request is safe to repeat)."""

    async def request(self, msg: Request) -> Reply: ...


def change_size(c: Change) -> int:
    """A change's size on the wire, near enough for batch limits."""
    value = 0 if c.value is None else len(c.value.encode())
    return len(c.key) + value + len(c.device) + len(c.origin) + 32


def cut_batch(
    changes: list[Change], since_seq: int, batch_bytes: int, skip_device: str | None
) -> tuple[tuple[Change, ...], int]:
    """The leading changes within `batch_bytes` (at least one) and the last seq the batch covers.

    Changes in `skip_device`'s key space are covered but not sent: a device never needs its own
    DEVICE_COLLABORATION data back, and it would refuse it."""
    batch: list[Change] = []
    total, last = 0, since_seq
    for c in changes:
        if skip_device is not None and c.device == skip_device:
            last = c.seq
            continue
        size = change_size(c)
        if batch and total + size > batch_bytes:
            break
        batch.append(c)
        total, last = total + size, c.seq
    return tuple(batch), last

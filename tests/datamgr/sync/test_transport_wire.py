"""The sync messages survive the SyncService protos unchanged, every field and value type."""

from __future__ import annotations

import pytest

from datamgr.errors import InvalidArgument
from datamgr.kv.storage import Change, StoreKind, Value
from datamgr.sync import transport as t
from datamgr.sync.messages import Handshake, HandshakeReply, PullReply, PullRequest, PushAck, PushBatch

STORE = "com.example.notes/n"
CHANGES = (
    Change(STORE, "", b"s", Value.of("text é"), 5 << 16 | 3, "devA", 1),
    Change(STORE, "", b"\x00bin", Value.of(b"\x00\xff"), 6 << 16, "devA", 2),
    Change(STORE, "", b"i", Value.of(-(1 << 63)), 7 << 16, "devB", 3),
    Change(STORE, "", b"d", Value.of(0.25), 8 << 16, "devB", 4),
    Change(STORE, "", b"b", Value.of(False), 9 << 16, "devB", 5),
    Change(STORE, "", b"gone", None, (1 << 63) - 1, "devC", 6),
)


def _wire(proto: object) -> object:
    return type(proto).FromString(proto.SerializeToString())  # type: ignore[attr-defined]


@pytest.mark.parametrize("peer_epoch", [None, "", "e2"])
def test_requests_and_replies_round_trip(peer_epoch: str | None) -> None:
    hs = Handshake(1, STORE, "devA", "devB", "e1", StoreKind.SINGLE_VERSION, 3, peer_epoch, 9, 1000, 1 << 22)
    push = PushBatch(STORE, "e1", "e2", 0, 7, CHANGES)
    pull = PullRequest(STORE, "e1", "e2", 4, 10, 4096)
    assert t.handshake_from_proto(_wire(t.request_to_proto(hs))) == hs  # type: ignore[arg-type]
    assert t.push_from_proto(_wire(t.request_to_proto(push))) == push  # type: ignore[arg-type]
    assert t.pull_from_proto(_wire(t.request_to_proto(pull))) == pull  # type: ignore[arg-type]

    replies = [
        (hs, HandshakeReply(1, "e2", StoreKind.DEVICE_COLLABORATION, 4, 12, False, 500, 8192)),
        (push, PushAck(STORE, 7, 5)),
        (pull, PullReply(STORE, "e2", 4, 10, CHANGES)),
        (pull, PullReply(STORE, "e2", 4, 4, ())),
    ]
    for request, reply in replies:
        assert t.reply_from_proto(request, _wire(t.reply_to_proto(reply))) == reply


def test_an_unknown_store_kind_is_refused() -> None:
    proto = t.request_to_proto(Handshake(1, STORE, "a", "b", "e", StoreKind.SINGLE_VERSION, 1, None, 0, 1, 1))
    proto.kind = 0
    with pytest.raises(InvalidArgument, match="store kind"):
        t.handshake_from_proto(proto)

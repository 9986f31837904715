"""UDMF descriptors: what the system KV store `ohos.distributeddata.udmf/records` holds per CROSS_DEVICE
UnifiedData, encoded and decoded (pure; the rules of `datamgr.udmf_bridge.bridge` that need no I/O).

The key is the UDMF key (UTF-8); the value is a serialized `datamgr.sync.v1.UdmfDescriptor` (bytes):
its device (`origin`), channel, writer, visibility, tag, extras, times and summary, and — DATA_HUB data
whose `total_size` is at most the inline limit — its entries with their blobs, so a paired device
reads it without asking. Drag and system-channel data never carries its entries: a read there
consumes it, which only its device can do, once. A descriptor over the KV value limit drops its
entries; one still over it cannot sync, and the write is refused.

`decode` is for data from other devices: anything it cannot use raises InvalidArgument (the bridge
skips it), never anything else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from datamgr.bundles import SYSTEM_BUNDLE_PREFIX
from datamgr.errors import InvalidArgument
from datamgr.kv.storage import MAX_VALUE_LENGTH
from datamgr.sync.v1 import udmf_peer_pb2 as pb
from udmf.access import ShareOptions, Visibility
from udmf.errors import ResourceExhausted, UdmfError
from udmf.keys import Intention, parse_key
from udmf.store import DataRow, EntryRow

STORE_BUNDLE = SYSTEM_BUNDLE_PREFIX + "udmf"
STORE_NAME = "records"
STORE_ID = f"{STORE_BUNDLE}/{STORE_NAME}"
STORE_LABEL = 1  # S1, as OpenHarmony's UDMF runtime store: every paired device may hold it
VERSION = 1
_INT32, _INT64 = (1 << 31) - 1, (1 << 63) - 1
_TYPE_LENGTH = 160  # the udmf_entries.type column


def carries_data(row: DataRow, inline_bytes: int) -> bool:
    """Whether the descriptor of `row` carries its entries: small DATA_HUB data, which reads never
    consume."""
    return row.intention is Intention.DATA_HUB and not row.pending and row.total_size <= inline_bytes


def encode(row: DataRow, origin: str, entries: Sequence[EntryRow] | None) -> bytes:
    """The descriptor of this device's `row`; `entries` (with their blobs in memory) when it carries
    them. ResourceExhausted if even the descriptor without entries is over the KV value limit."""
    msg = pb.UdmfDescriptor(
        version=VERSION,
        origin=origin,
        intention=row.intention.value,
        writer=row.writer,
        visibility=row.visibility.value,
        share_options=row.share_options.value,
        tag=row.tag,
        extras_json=json.dumps(dict(row.extras), separators=(",", ":")),
        timestamp_ms=row.timestamp_ms,
        created_at=row.created_at,
        expires_at=row.expires_at,
        record_count=row.record_count,
        summary=dict(row.summary),
        total_size=row.total_size,
    )
    if entries is not None:
        msg.carries_data = True
        msg.entries.extend(_entry(e) for e in entries)
    raw = msg.SerializeToString()
    if len(raw) > MAX_VALUE_LENGTH and entries is not None:
        return encode(row, origin, None)
    if len(raw) > MAX_VALUE_LENGTH:
        raise ResourceExhausted(
            f"{row.key} is CROSS_DEVICE data whose properties take {len(raw)} bytes; to sync, its "
            f"descriptor must fit in {MAX_VALUE_LENGTH} (shorten the tag or extras)"
        )
    return raw


def _entry(e: EntryRow) -> pb.InlineEntry:
    assert e.blob_file is None, "blobs in files are read into memory first"
    return pb.InlineEntry(
        record=e.record, type=e.type, value=e.value, blob_size=e.blob_size, blob_field=e.blob_field,
        blob_text=e.blob_text, blob=e.blob or b"",
    )  # fmt: skip


def decode(key: bytes, raw: bytes, origin: str) -> tuple[DataRow, list[EntryRow] | None]:
    """A remote row (and its entries, if the descriptor carries them) from a descriptor that device
    `origin` wrote under `key`. InvalidArgument for anything unusable."""
    try:
        text = key.decode()
        msg = pb.UdmfDescriptor.FromString(raw)
        parsed = parse_key(text)
        intention, visibility = Intention(msg.intention), Visibility(msg.visibility)
        share, extras = ShareOptions(msg.share_options), json.loads(msg.extras_json or "{}")
    except (ValueError, DecodeError, UdmfError) as exc:  # UnicodeDecodeError, JSONDecodeError: ValueErrors
        raise InvalidArgument(f"an unreadable UDMF descriptor under {key[:120]!r}: {exc}") from None
    problem = _problem(msg, parsed.intention, parsed.bundle, intention, share, extras, origin)
    if problem:
        raise InvalidArgument(f"the UDMF descriptor of {text} {problem}")
    row = DataRow(
        key=text,
        intention=intention,
        writer=msg.writer,
        record_count=msg.record_count,
        summary=dict(msg.summary),
        total_size=msg.total_size,
        visibility=visibility,
        share_options=share,
        tag=msg.tag,
        extras=extras,
        timestamp_ms=msg.timestamp_ms,
        created_at=msg.created_at,
        expires_at=msg.expires_at,
        origin=origin,
        copied=msg.carries_data,
    )
    if not msg.carries_data:
        return row, None
    entries = [
        EntryRow(e.record, e.type, e.value, e.blob_size, e.blob_field, e.blob_text, e.blob or None)
        for e in msg.entries
    ]
    return row, entries


def _problem(
    msg: pb.UdmfDescriptor,
    key_intention: Intention,
    key_bundle: str,
    intention: Intention,
    share: ShareOptions,
    extras: object,
    origin: str,
) -> str:
    """What makes a decoded descriptor unusable ("" if nothing)."""
    if msg.version < 1:
        return f"has version {msg.version}"
    if msg.origin != origin:
        return f"says it is {msg.origin!r}'s data, but {origin} wrote it"
    if intention is not key_intention or msg.writer != key_bundle:
        return f"names channel {intention.name} and writer {msg.writer!r}, which the key does not"
    if share is not ShareOptions.CROSS_DEVICE:
        return f"is {share.name} data, which never leaves its device"
    if not isinstance(extras, dict):
        return "has extras that are not a JSON object"
    if not (math.isfinite(msg.created_at) and math.isfinite(msg.expires_at)):
        return "has times that are not finite"
    if msg.carries_data and intention is not Intention.DATA_HUB:
        return "carries the data of a channel whose reads consume it"
    if msg.record_count > _INT32 or msg.total_size > _INT64:
        return "has counts out of range"  # the columns are signed 32- and 64-bit
    for e in msg.entries:
        if len(e.blob) != e.blob_size or e.record >= msg.record_count or len(e.type) > _TYPE_LENGTH:
            return f"carries an entry that does not add up (record {e.record}, type {e.type[:160]!r})"
    return ""

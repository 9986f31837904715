"""The KV servicer's checks of untrusted input and its conversions between kv.proto and the storage.

Every check raises before anything changes: InvalidArgument for a malformed request (empty or long
key, unknown type, bad store name, a write into a peer's key space), TooLarge (RESOURCE_EXHAUSTED) for
one over a size limit (value, batch, query).
"""

from __future__ import annotations

from typing import Any

from datamgr.errors import InvalidArgument, TooLarge
from datamgr.kv.notify import KvChange
from datamgr.kv.storage import (
    MAX_BATCH_SIZE,
    MAX_DEVICE_ID_LENGTH,
    MAX_VALUE_LENGTH,
    STORE_NAME_RE,
    StoreInfo,
    StoreKind,
    Value,
    VType,
    key_limit,
)
from datamgr.v1 import kv_pb2 as pb
from datamgr.v1 import types_pb2
from datamgr.values import set_value

MAX_QUERY_BYTES = 512_000  # OpenHarmony's MAX_QUERY_LENGTH

KINDS = {
    pb.KV_STORE_TYPE_DEVICE_COLLABORATION: StoreKind.DEVICE_COLLABORATION,
    pb.KV_STORE_TYPE_SINGLE_VERSION: StoreKind.SINGLE_VERSION,
}
_KIND_NUMBERS = {kind: number for number, kind in KINDS.items()}
_VTYPES = {
    "bytes_value": VType.BYTES,
    "string_value": VType.STRING,
    "int_value": VType.INT,
    "double_value": VType.DOUBLE,
    "bool_value": VType.BOOL,
}


def store_name(name: str) -> str:
    if not STORE_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"invalid store name {name!r}: 1 to 128 letters, digits and underscores (OpenHarmony storeId)"
        )
    return name


def is_device_store(store: StoreInfo) -> bool:
    return store.kind is StoreKind.DEVICE_COLLABORATION


def store_info(store: StoreInfo) -> pb.KvStoreInfo:
    return pb.KvStoreInfo(
        name=store.name,
        kind=_KIND_NUMBERS[store.kind],  # type: ignore[arg-type]
        security_level=store.security_level,  # type: ignore[arg-type]
    )


def check_batch(n: int) -> None:
    if n > MAX_BATCH_SIZE:
        raise TooLarge(f"a batch may hold at most {MAX_BATCH_SIZE} entries, not {n}")


def check_key(store: StoreInfo, key: str) -> bytes:
    """The key's UTF-8 bytes: 1 to 1024 of them (896 in DEVICE_COLLABORATION stores)."""
    if not key:
        raise InvalidArgument("a key may not be empty")
    raw = key.encode()
    limit = key_limit(store.kind)
    if len(raw) > limit:
        where = " in a DEVICE_COLLABORATION store" if is_device_store(store) else ""
        raise InvalidArgument(f"the key is {len(raw)} bytes, over the limit of {limit} bytes{where}")
    return raw


def value_size(value: Value) -> int:
    data = value.data
    return len(data) if isinstance(data, bytes) else len(data.encode()) if isinstance(data, str) else 8


def to_storage(msg: types_pb2.Value) -> Value:
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("the value has no type: set bytes, string, int, double or bool")
    value = Value(_VTYPES[kind], getattr(msg, kind))
    if (size := value_size(value)) > MAX_VALUE_LENGTH:
        raise TooLarge(f"the value is {size} bytes, over the limit of {MAX_VALUE_LENGTH} bytes")
    return value


def to_proto(value: Any, target: types_pb2.Value) -> None:
    """Fills `target` from a storage Value or its data (None leaves it unset: not known)."""
    set_value(target, value.data if isinstance(value, Value) else value)


def check_writable(local_device: str, device_id: str) -> None:
    if device_id and device_id != local_device:
        raise InvalidArgument(
            f"cannot write into the data of device {device_id}: this device ({local_device}) writes "
            "only its own key space, the data of peers is read-only"
        )


def read_device(store: StoreInfo, local_device: str, device_id: str) -> str | None:
    """The key space a read looks at: None in a SINGLE_VERSION store, a device id otherwise."""
    if len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise InvalidArgument(f"device ids are at most {MAX_DEVICE_ID_LENGTH} characters")
    if not is_device_store(store):
        if device_id and device_id != local_device:
            raise InvalidArgument(
                f"store {store.name} is SINGLE_VERSION, one copy for all devices: read it without device_id"
            )
        return None
    return device_id or local_device


def check_query_size(query: pb.KvQuery) -> None:
    if (size := query.ByteSize()) > MAX_QUERY_BYTES:
        raise TooLarge(f"the query is {size} bytes, over the limit of {MAX_QUERY_BYTES} bytes")


def entry_pages(rows: list[tuple[str, Any]], page_bytes: int) -> list[pb.GetEntriesResponse]:
    """(key, value) rows as GetEntries pages of at most about `page_bytes` (always one, maybe empty)."""
    pages = [pb.GetEntriesResponse()]
    size = 0
    for key, value in rows:
        entry = pb.KvEntry(key=key)
        to_proto(value, entry.value)
        entry_size = entry.ByteSize()
        if pages[-1].entries and size + entry_size > page_bytes:
            pages.append(pb.GetEntriesResponse())
            size = 0
        pages[-1].entries.append(entry)
        size += entry_size
    return pages


def notifications(change: KvChange, page_bytes: int) -> list[pb.ChangeNotification]:
    """A change as ChangeNotifications of at most about `page_bytes` each."""
    notes = [pb.ChangeNotification(device_id=change.device)]
    size = 0
    for field, entries in (
        ("insert_entries", change.inserted),
        ("update_entries", change.updated),
        ("delete_entries", change.deleted),
    ):
        for key, value in entries:
            entry = pb.KvEntry(key=key.decode(errors="replace"))
            to_proto(value, entry.value)
            entry_size = entry.ByteSize()
            if size and size + entry_size > page_bytes:
                notes.append(pb.ChangeNotification(device_id=change.device))
                size = 0
            getattr(notes[-1], field).append(entry)
            size += entry_size
    return notes

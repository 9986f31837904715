"""The values `datamgr.kv.storage` stores and returns, its limits and the checks of remote changes.

Re-exported by `datamgr.kv.storage`; import them from there.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from datamgr.errors import InvalidArgument, PermissionDenied, TooLarge
from datamgr.hlc import MAX_HLC, check_timestamp

MAX_KEY_LENGTH = 1024  # OpenHarmony's MAX_KEY_LENGTH
MAX_KEY_LENGTH_DEVICE = 896  # MAX_KEY_LENGTH_DEVICE: OH prefixes keys of device stores with the device
MAX_VALUE_LENGTH = 4194303  # MAX_VALUE_LENGTH, of the encoded value
MAX_BATCH_SIZE = 128  # MAX_BATCH_SIZE: entries of one app write
MAX_DEVICE_ID_LENGTH = 128
_INT64 = range(-(1 << 63), 1 << 63)


class StoreKind(enum.StrEnum):
    DEVICE_COLLABORATION = "DEVICE_COLLABORATION"  # one key space per writing device, no conflicts
    SINGLE_VERSION = "SINGLE_VERSION"  # one key space; the latest write (by HLC) wins


class VType(enum.IntEnum):
    BYTES = 0
    STRING = 1
    INT = 2
    DOUBLE = 3
    BOOL = 4


ValueData = bytes | str | int | float | bool
_PYTYPE: dict[VType, type] = {VType.BYTES: bytes, VType.STRING: str, VType.INT: int}
_PYTYPE |= {VType.DOUBLE: float, VType.BOOL: bool}


@dataclass(frozen=True, slots=True)
class Value:
    """A typed value: `Value.of(x)` infers the type; `encode`/`decode` give the stored bytes.

    `_raw` memoises the encoded bytes (the ones `decode` read, or the first `encode`); it is not part
    of equality, hashing or repr."""

    vtype: VType
    data: ValueData
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            vtype = VType(self.vtype)
        except ValueError:
            raise InvalidArgument(f"unknown value type {self.vtype!r}: expected 0-4") from None
        object.__setattr__(self, "vtype", vtype)
        data = self.data
        if type(data) is not _PYTYPE[vtype] or (vtype is VType.INT and data not in _INT64):
            raise InvalidArgument(f"{vtype.name} value expected, got {type(data).__name__} {data!r:.40}")

    @classmethod
    def of(cls, data: ValueData) -> Value:
        for vtype, pytype in _PYTYPE.items():
            if type(data) is pytype:
                return cls(vtype, data)
        raise InvalidArgument(f"a value is bytes, str, int, float or bool, not {type(data).__name__}")

    def encode(self) -> bytes:
        raw = self._raw
        if raw is None:
            raw = self._encode()
            object.__setattr__(self, "_raw", raw)
        return raw

    def _encode(self) -> bytes:
        d = self.data
        match self.vtype:
            case VType.BYTES:
                return d  # type: ignore[return-value]
            case VType.STRING:
                return d.encode()  # type: ignore[union-attr]
            case VType.INT:
                return struct.pack(">q", d)
            case VType.DOUBLE:
                return struct.pack(">d", d)
            case _:
                return b"\x01" if d else b"\x00"

    @classmethod
    def decode(cls, vtype: int, raw: bytes) -> Value:
        """The value stored (or sent) as `raw` with type `vtype`; InvalidArgument if it is malformed.

        Built without `__post_init__`: each decoder yields its type's data by construction, and this
        runs once per synced change on each side."""
        if type(raw) is not bytes:
            raw = bytes(raw)
        try:
            vt = _VTYPE_OF[vtype]
            data = _DECODERS[vt](raw)
        except (KeyError, TypeError, ValueError, struct.error):
            raise InvalidArgument(f"malformed value of type {vtype}: {raw[:16]!r}") from None
        value = _new(cls)
        _set(value, "vtype", vt)
        _set(value, "data", data)
        _set(value, "_raw", raw)
        return value


_new, _set = object.__new__, object.__setattr__
_VTYPE_OF: dict[object, VType] = {int(t): t for t in VType}
_INT64_BE, _DOUBLE_BE = struct.Struct(">q"), struct.Struct(">d")
_BOOLS = {b"\x00": False, b"\x01": True}
_DECODERS: dict[VType, Callable[[bytes], ValueData]] = {
    VType.BYTES: lambda raw: raw,
    VType.STRING: bytes.decode,  # strict UTF-8: a malformed string raises UnicodeDecodeError
    VType.INT: lambda raw: _INT64_BE.unpack(raw)[0],  # struct.error unless exactly 8 bytes
    VType.DOUBLE: lambda raw: _DOUBLE_BE.unpack(raw)[0],
    VType.BOOL: _BOOLS.__getitem__,  # KeyError unless b"\x00" or b"\x01"
}


@dataclass(frozen=True, slots=True)
class Change:
    """One key's change: `value` None is a delete (a tombstone). `seq` is the holder's local seq."""

    store_id: str
    device: str
    key: bytes
    value: Value | None
    hlc: int
    origin: str
    seq: int


@dataclass(frozen=True, slots=True)
class StoreInfo:
    store_id: str
    bundle: str
    name: str
    kind: StoreKind
    security_level: int
    epoch: str
    created_at: float


@dataclass(frozen=True, slots=True)
class PeerState:
    """What this replica knows of a peer for one store. `peer_epoch` None: not known yet."""

    store_id: str
    peer: str
    peer_epoch: str | None
    received_seq: int
    acked_seq: int


def key_limit(kind: StoreKind) -> int:
    return MAX_KEY_LENGTH_DEVICE if kind is StoreKind.DEVICE_COLLABORATION else MAX_KEY_LENGTH


def check_key(key: object, limit: int = MAX_KEY_LENGTH) -> bytes:
    if not isinstance(key, bytes):
        raise InvalidArgument(f"a key is bytes, not {type(key).__name__}")
    if not 1 <= len(key) <= limit:
        raise InvalidArgument(f"a key is 1-{limit} bytes; this one has {len(key)}")
    return key


def check_value(value: object) -> Value:
    if not isinstance(value, Value):
        raise InvalidArgument(f"a value is a Value, not {type(value).__name__}")
    size = len(value.encode())
    if size > MAX_VALUE_LENGTH:
        raise TooLarge(f"a value is at most {MAX_VALUE_LENGTH} bytes; this one has {size}")
    return value


def _check_device(device: object, what: str) -> str:
    if not isinstance(device, str) or not 1 <= len(device) <= MAX_DEVICE_ID_LENGTH:
        raise InvalidArgument(f"invalid {what} {device!r}: 1-{MAX_DEVICE_ID_LENGTH} characters")
    return device


def check_change(c: object, store_id: str, kind: StoreKind, receiver: str) -> Change:
    """A remote change, checked for a store of `kind` on device `receiver`."""
    if not isinstance(c, Change):
        raise InvalidArgument(f"a change is a Change, not {type(c).__name__}")
    if c.store_id != store_id:
        raise InvalidArgument(f"a change of store {c.store_id} in a batch of {store_id}")
    check_key(c.key, key_limit(kind))
    if c.value is not None:
        check_value(c.value)
    check_timestamp(c.hlc)
    _check_device(c.origin, "origin device")
    if not isinstance(c.seq, int) or isinstance(c.seq, bool) or c.seq < 1:
        raise InvalidArgument(f"invalid change seq {c.seq!r}: a positive int")
    if kind is StoreKind.SINGLE_VERSION:
        if c.device != "":
            raise InvalidArgument(f"a SINGLE_VERSION change has no device key space, got {c.device!r}")
        return c
    if c.device != c.origin:
        raise InvalidArgument(f"a change in {c.device!r}'s key space must come from it, not {c.origin!r}")
    if c.device == receiver:
        raise PermissionDenied(
            f"a peer may not write into {receiver}'s own key space of {store_id}: only {receiver} writes it"
        )
    return c


def check_changes(changes: Sequence[object], store_id: str, kind: StoreKind, receiver: str) -> None:
    """`check_change` of every change of a batch: the common case in one tight loop, and whatever
    that loop does not accept at once goes through `check_change`, which accepts it or says why not."""
    limit, single = key_limit(kind), kind is StoreKind.SINGLE_VERSION
    for c in changes:
        if not (
            type(c) is Change
            and c.store_id == store_id
            and type(c.key) is bytes
            and 1 <= len(c.key) <= limit
            and (c.value is None or (type(c.value) is Value and len(c.value.encode()) <= MAX_VALUE_LENGTH))
            and type(c.hlc) is int
            and 0 <= c.hlc <= MAX_HLC
            and type(c.origin) is str
            and 1 <= len(c.origin) <= MAX_DEVICE_ID_LENGTH
            and type(c.seq) is int
            and c.seq >= 1
            and (c.device == "" if single else c.device == c.origin != receiver)
        ):
            check_change(c, store_id, kind, receiver)

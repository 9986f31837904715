"""The values `datamgr.kv.storage` stores and returns, its limits and the checks of remote changes.

Re-exported by `datamgr.kv.storage`; import them from there.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from datamgr.errors import InvalidArgument, PermissionDenied, TooLarge
from datamgr.sync.hlc import check_timestamp

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
        raw = bytes(raw)
        value: Value | None = None
        try:
            match VType(vtype):
                case VType.BYTES:
                    value = cls(VType.BYTES, raw)
                case VType.STRING:
                    value = cls(VType.STRING, raw.decode())
                case VType.INT:
                    value = cls(VType.INT, struct.unpack(">q", raw)[0])
                case VType.DOUBLE:
                    value = cls(VType.DOUBLE, struct.unpack(">d", raw)[0])
                case VType.BOOL if raw in (b"\x00", b"\x01"):
                    value = cls(VType.BOOL, raw == b"\x01")
        except (ValueError, struct.error):
            pass
        if value is None:
            raise InvalidArgument(f"malformed value of type {vtype}: {raw[:16]!r}")
        object.__setattr__(value, "_raw", raw)
        return value


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

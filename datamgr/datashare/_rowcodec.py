"""How a distributed table's rows are written in its mirror KV store, and read back from a peer's.

- Key: one tag byte for the primary key's type, then the value: `s` text (UTF-8), `b` blob, `d` real
  (a big-endian double; -0.0 is written as 0.0, the same row), `?` boolean (one byte 0 or 1), `i`
  integer (big-endian int64). With the tag an empty text key is still a valid KV key (1-1024 bytes).
- Value: the whole row as a UTF-8 JSON object {column: value}, where a blob is a one-element list
  holding its base64 (nothing else in a row is a list). Column names travel with every row, so a
  device that declares fewer columns takes the ones it knows, and one that declares more keeps its own
  values of the others (a manifest may add nullable or defaulted columns on one device first).

Decoding never trusts the peer: whatever does not fit the local table raises ValueError with the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import json.encoder
import math
import struct
from collections.abc import Mapping
from typing import Any

from datamgr.datashare.manifest import TableSpec, value_fits
from datamgr.kv.storage import MAX_KEY_LENGTH
from datamgr.values import Cell

MAX_KEY_BYTES = MAX_KEY_LENGTH - 1  # a primary key's encoded bytes, after the tag byte
_INT64 = range(-(1 << 63), 1 << 63)


def encode_key(column_type: str, value: Cell) -> bytes:
    """The mirror key of a primary key value of a column of `column_type`."""
    match column_type:
        case "text":
            return b"s" + value.encode()  # type: ignore[union-attr]
        case "blob":
            return b"b" + bytes(value)  # type: ignore[arg-type]
        case "real":
            return b"d" + struct.pack(">d", float(value) + 0.0)  # type: ignore[arg-type]  # -0.0 → 0.0
        case "boolean":
            return b"?\x01" if value else b"?\x00"
        case _:
            return b"i" + struct.pack(">q", value)


def decode_key(column_type: str, key: bytes) -> Cell:
    """The primary key value a mirror key holds; ValueError if it is not one of `column_type`."""
    tag, payload = key[:1], key[1:]
    try:
        match column_type, tag:
            case "text", b"s" if b"\x00" not in payload:
                return payload.decode()
            case "blob", b"b":
                return payload
            case "real", b"d":
                (real,) = struct.unpack(">d", payload)
                if not math.isnan(real):
                    return real + 0.0
            case "boolean", b"?" if payload in (b"\x00", b"\x01"):
                return payload == b"\x01"
            case "integer", b"i":
                return int(struct.unpack(">q", payload)[0])
    except struct.error:
        pass
    raise ValueError(f"a key {key[:24]!r} is not a {column_type} primary key")


def _blob(value: object) -> list[str]:
    if isinstance(value, bytes | bytearray | memoryview):
        return [base64.b64encode(value).decode("ascii")]
    raise TypeError(f"a row holds no {type(value).__name__}")


# json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=_blob, check_circular=False), with
# CPython's C encoder made once instead of per call: a third of the time, which counts on batch inserts.
_make = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed: CPython's C accelerator
if _make is not None:
    _c_encode = _make(None, _blob, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def encode_row(row: Mapping[str, Any]) -> bytes:
        """A row as its mirror value (the JSON object described above)."""
        return "".join(_c_encode(row, 0)).encode()

else:  # pragma: no cover - CPython has the C encoder
    _encoder = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), default=_blob, check_circular=False
    )

    def encode_row(row: Mapping[str, Any]) -> bytes:
        """A row as its mirror value (the JSON object described above)."""
        return _encoder.encode(row).encode()


def decode_row(raw: bytes) -> dict[str, Cell]:
    """The row a mirror value holds; ValueError if it is not one."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError("a row nested too deep") from None
    if not isinstance(data, dict):
        raise ValueError(f"a row is a JSON object, not {type(data).__name__}")
    for name, value in data.items():
        if isinstance(value, list):
            if len(value) != 1 or not isinstance(value[0], str):
                raise ValueError(f"column {name}: a blob is a list of one base64 string")
            try:
                data[name] = base64.b64decode(value[0], validate=True)
            except binascii.Error:
                raise ValueError(f"column {name}: a blob that is not base64") from None
        elif isinstance(value, dict):
            raise ValueError(f"column {name}: an object is no column value")
    return data


def fit_row(spec: TableSpec, row: Mapping[str, Cell], pk: Cell) -> dict[str, Cell]:
    """The values of a peer's row that this table declares, checked as a local write would be, with
    the primary key `pk` (the key's, which names the row); ValueError says what does not fit."""
    out: dict[str, Cell] = {}
    for col in spec.columns:
        if col.name == spec.primary_key:
            continue
        if col.name not in row:
            if not col.nullable and col.default is None:
                raise ValueError(f"column {col.name} is required, and the row has none")
            continue
        value = row[col.name]
        if value is None:
            if not col.nullable:
                raise ValueError(f"column {col.name} may not be null")
        elif not value_fits(col.type, value):
            raise ValueError(f"column {col.name} is {col.type}, not {type(value).__name__}")
        elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
            raise ValueError(f"column {col.name}: {value} is out of the 64-bit range")
        elif isinstance(value, float) and math.isnan(value):
            raise ValueError(f"column {col.name}: NaN cannot be stored")
        elif isinstance(value, str):
            if "\x00" in value:
                raise ValueError(f"column {col.name}: text cannot contain NUL characters")
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError(f"column {col.name}: text that is not valid Unicode") from None
        out[col.name] = value
    out[spec.primary_key] = pk
    return out

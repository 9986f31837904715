"""Entry values between Python and the proto's `Value` (OpenHarmony's ValueType), as pure functions.

Python side: None, bool, int (int64), float, str, bytes-like (bytes, bytearray, memoryview: sent as
bytes, read back as bytes), dicts with str keys of these, and uniform data structs (sent as their
wire form, see `udmf.structs`). Reading gives plain values only; which struct an object is follows
from its entry's type (`udmf.structs.from_value`), which this module does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from udmf.errors import InvalidArgument
from udmf.structs import _BYTES_LIKE, Struct
from udmf.v1 import udmf_pb2 as pb

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 32  # nesting of objects; protobuf itself refuses 100


def plain(value: Any) -> Any:
    """`value` with a struct replaced by its wire form (an object, or bytes); others unchanged."""
    return value.to_value() if isinstance(value, Struct) else value


def check(value: Any, _depth: int = 0) -> None:
    """Raises InvalidArgument unless `value` can be sent; never copies it."""
    value = plain(value)
    if value is None or isinstance(value, (bool, float, str, *_BYTES_LIKE)):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidArgument(f"integer {value} is outside the int64 range")
        return
    if isinstance(value, Mapping):
        if _depth >= MAX_DEPTH:
            raise InvalidArgument(f"objects nest deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"object keys must be str, not {type(key).__name__}")
            check(item, _depth + 1)
        return
    raise InvalidArgument(f"a {type(value).__name__} cannot be an entry value")


def to_proto(value: Any) -> pb.Value:
    """The proto `Value` of a (checked or not) Python value; InvalidArgument if it cannot be sent."""
    check(value)
    return to_proto_unchecked(plain(value))


def to_proto_unchecked(value: Any) -> pb.Value:
    """The proto `Value` of a plain value that `check` has accepted (not checked again)."""
    if value is None:
        return pb.Value(null_value=True)
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, int):
        return pb.Value(int_value=value)
    if isinstance(value, float):
        return pb.Value(double_value=value)
    if isinstance(value, str):
        return pb.Value(string_value=value)
    if isinstance(value, _BYTES_LIKE):
        return pb.Value(bytes_value=bytes(value))
    return pb.Value(object_value=object_to_proto(value))


def object_to_proto(fields: Mapping[str, Any]) -> pb.Object:
    """An `Object` of already-checked fields."""
    msg = pb.Object()
    for key, item in fields.items():
        msg.fields[key].CopyFrom(to_proto_unchecked(plain(item)))
    return msg


def from_proto(msg: pb.Value) -> Any:
    """The Python value of a proto `Value`; an unset one is None, as null is."""
    kind = msg.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "object_value":
        return object_from_proto(msg.object_value)
    return getattr(msg, kind)


def object_from_proto(msg: pb.Object) -> dict[str, Any]:
    return {key: from_proto(item) for key, item in msg.fields.items()}


def map_to_proto(target: Any, fields: Mapping[str, Any]) -> None:
    """Fills a proto `map<string, Value>` field (e.g. `Properties.extras`) from a dict."""
    check(dict(fields))
    for key, item in fields.items():
        target[key].CopyFrom(to_proto_unchecked(plain(item)))

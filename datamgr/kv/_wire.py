"""Conversions between KV objects and kv.proto messages, shared by the daemon and the SDK."""

from __future__ import annotations

from datamgr.kv.query import Query, QueryOp
from datamgr.v1 import kv_pb2
from datamgr.values import from_value, set_value

_PREFIX = "KV_QUERY_OP_TYPE_"
_ENUM = kv_pb2.KvQueryOpType


def query_to_proto(query: Query) -> kv_pb2.KvQuery:
    msg = kv_pb2.KvQuery()
    for op in query.ops:
        pb = msg.ops.add(type=_ENUM.Value(_PREFIX + op.type), field=op.field)  # type: ignore[arg-type]
        for value in op.values:
            set_value(pb.values.add(), value)
    return msg


def query_ops(msg: kv_pb2.KvQuery) -> list[QueryOp]:
    """Decodes without judging: unknown op types and odd shapes are left to `compile_query` to refuse."""
    ops = []
    for pb in msg.ops:
        values = tuple(from_value(v) for v in pb.values)  # bytes and NULL too: compile_query refuses them
        ops.append(QueryOp(_op_type(pb.type), pb.field, values))  # type: ignore[arg-type]
    return ops


def _op_type(number: int) -> str:
    try:
        name: str = _ENUM.Name(number)  # type: ignore[arg-type]
    except ValueError:
        return f"UNKNOWN_{number}"
    return name.removeprefix(_PREFIX)

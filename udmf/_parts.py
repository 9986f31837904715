"""Conversions between udmf.v1 messages and the service's plain values (enums, rows, descriptors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from udmf.access import ShareOptions, Visibility
from udmf.errors import InvalidArgument
from udmf.keys import Intention
from udmf.store import DataRow
from udmf.utd import TypeDescriptor
from udmf.v1 import udmf_pb2 as pb

INTENTION_FROM_PB = {
    pb.INTENTION_DATA_HUB: Intention.DATA_HUB,
    pb.INTENTION_DRAG: Intention.DRAG,
    pb.INTENTION_SYSTEM_SHARE: Intention.SYSTEM_SHARE,
    pb.INTENTION_PICKER: Intention.PICKER,
    pb.INTENTION_MENU: Intention.MENU,
}
INTENTION_TO_PB = {v: k for k, v in INTENTION_FROM_PB.items()}
_SHARE_FROM_PB = {
    pb.SHARE_OPTIONS_UNSPECIFIED: ShareOptions.CROSS_APP,
    pb.SHARE_OPTIONS_IN_APP: ShareOptions.IN_APP,
    pb.SHARE_OPTIONS_CROSS_APP: ShareOptions.CROSS_APP,
    pb.SHARE_OPTIONS_CROSS_DEVICE: ShareOptions.CROSS_DEVICE,
}
_SHARE_TO_PB = {
    ShareOptions.IN_APP: pb.SHARE_OPTIONS_IN_APP,
    ShareOptions.CROSS_APP: pb.SHARE_OPTIONS_CROSS_APP,
    ShareOptions.CROSS_DEVICE: pb.SHARE_OPTIONS_CROSS_DEVICE,
}
_VISIBILITY_FROM_PB = {
    pb.VISIBILITY_UNSPECIFIED: Visibility.ALL,
    pb.VISIBILITY_ALL: Visibility.ALL,
    pb.VISIBILITY_OWN_PROCESS: Visibility.OWN_PROCESS,
}


def intention(value: int, what: str = "intention") -> Intention | None:
    """The channel a message names; None when unset."""
    if value == pb.INTENTION_UNSPECIFIED:
        return None
    found = INTENTION_FROM_PB.get(value)  # type: ignore[call-overload]
    if found is None:
        raise InvalidArgument(f"unknown {what} {value}")
    return found


def share_options(value: int) -> ShareOptions:
    found = _SHARE_FROM_PB.get(value)  # type: ignore[call-overload]
    if found is None:
        raise InvalidArgument(f"unknown share_options {value}")
    return found


def visibility(value: int) -> Visibility:
    found = _VISIBILITY_FROM_PB.get(value)  # type: ignore[call-overload]
    if found is None:
        raise InvalidArgument(f"unknown visibility {value}")
    return found


def extras_to_json(extras: Mapping[str, pb.Value]) -> dict[str, Any]:
    return {name: json_format.MessageToDict(value) for name, value in extras.items()}


def properties(row: DataRow) -> pb.Properties:
    props = pb.Properties(
        tag=row.tag, timestamp_ms=row.timestamp_ms, share_options=_SHARE_TO_PB[row.share_options]
    )
    for name, value in row.extras.items():
        json_format.ParseDict(value, props.extras[name])
    return props


def summary(row: DataRow) -> pb.Summary:
    return pb.Summary(summary=dict(row.summary), total_size=row.total_size)


def header(row: DataRow) -> pb.DataHeader:
    return pb.DataHeader(
        properties=properties(row),
        record_count=row.record_count,
        key=row.key,
        intention=INTENTION_TO_PB[row.intention],
        writer=row.writer,
        summary=summary(row),
        device=row.origin,
    )


def descriptor(d: TypeDescriptor, owners: Mapping[str, str]) -> pb.TypeDescriptor:
    return pb.TypeDescriptor(
        type_id=d.type_id,
        belonging_to_types=d.belonging_to_types,
        description=d.description,
        reference_url=d.reference_url,
        icon_file=d.icon_file,
        filename_extensions=d.filename_extensions,
        mime_types=d.mime_types,
        owner_bundle=owners.get(d.type_id, ""),
    )


def declaration(msg: pb.TypeDescriptor) -> dict[str, object]:
    """A RegisterTypes descriptor as UtdRegistry's declaration dict (the owner comes from the caller)."""
    return {
        "type_id": msg.type_id,
        "belonging_to_types": list(msg.belonging_to_types),
        "description": msg.description,
        "reference_url": msg.reference_url,
        "icon_file": msg.icon_file,
        "filename_extensions": list(msg.filename_extensions),
        "mime_types": list(msg.mime_types),
    }

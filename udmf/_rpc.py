"""What both UDMF clients share: udmf's error classes for a failed call, checks, and results from
messages. The connection (address, token, channel) is every SDK's, `datamgr.connection`."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datamgr.connection import ErrorClasses
from udmf import _wire, values
from udmf._declarations import _LISTS, _TEXTS, KEYS
from udmf.data import Intention, Summary, UnifiedData, UnifiedDataProperties
from udmf.errors import SDK_BY_CODE, Cancelled, InvalidArgument, NotFound, UdmfError
from udmf.v1 import udmf_pb2 as pb

SummaryResult = tuple[Summary, UnifiedDataProperties, Intention | None, str]

ERRORS = ErrorClasses(UdmfError, SDK_BY_CODE)  # what the SDK raises, by status (the rule in datamgr.errors)
error_from_rpc = ERRORS.from_rpc


def cancelled(what: str) -> Cancelled:
    return Cancelled(f"{what} was cancelled")


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """A type descriptor as the daemon answers it: preset, an app's custom type (`owner_bundle`) or
    flexible. Relations among them are the daemon's (QueryTypes with `belongs_to`)."""

    type_id: str
    belonging_to_types: tuple[str, ...]
    description: str
    reference_url: str
    icon_file: str
    filename_extensions: tuple[str, ...]
    mime_types: tuple[str, ...]
    owner_bundle: str


def type_info_from_proto(msg: pb.TypeDescriptor) -> TypeInfo:
    return TypeInfo(
        msg.type_id,
        tuple(msg.belonging_to_types),
        msg.description,
        msg.reference_url,
        msg.icon_file,
        tuple(msg.filename_extensions),
        tuple(msg.mime_types),
        msg.owner_bundle,
    )


def declaration_to_proto(declaration: Mapping[str, Any]) -> pb.TypeDescriptor:
    """A custom type declaration (the keys of TypeDescriptor) as a message; the daemon validates it."""
    unknown = set(declaration) - KEYS
    if unknown:
        raise InvalidArgument(f"unknown keys in a type declaration: {sorted(unknown)}")
    type_id = declaration.get("type_id")
    if not isinstance(type_id, str) or not type_id:
        raise InvalidArgument("a type declaration needs a type_id")
    msg = pb.TypeDescriptor(type_id=type_id)
    for key in _TEXTS:
        text = declaration.get(key, "")
        if not isinstance(text, str):
            raise InvalidArgument(f"{type_id}: {key} must be a str")
        setattr(msg, key, text)
    for key in _LISTS:
        items = declaration.get(key, ())
        if isinstance(items, str) or not all(isinstance(item, str) for item in items):
            raise InvalidArgument(f"{type_id}: {key} must be a list of str")
        getattr(msg, key).extend(items)
    return msg


def query_types_request(
    type_id: str | None,
    filename_extension: str | None,
    mime_type: str | None,
    belongs_to: str | None,
    all: bool,
) -> pb.QueryTypesRequest:
    given = [name for name in (type_id, filename_extension, mime_type) if name]
    if len(given) != 1:
        raise InvalidArgument("query_types takes exactly one of type_id, filename_extension, mime_type")
    return pb.QueryTypesRequest(
        type_id=type_id or "",
        filename_extension=filename_extension or "",
        mime_type=mime_type or "",
        belongs_to=belongs_to or "",
        all=all,
    )


def checked(data: UnifiedData) -> UnifiedData:
    """Raises InvalidArgument now rather than mid-stream (where grpc would only cancel the call)."""
    _wire.properties_to_proto(data.properties)
    for record in data.get_records():
        for value in record.get_entries().values():
            values.check(value)
    return data


def summary_result(resp: pb.GetSummaryResponse) -> SummaryResult:
    header = resp.header
    return (
        _wire.summary_from_proto(resp.summary),
        _wire.properties_from_proto(header.properties),
        _wire.intention_from_proto(header.intention),
        header.writer,
    )


def one_data(found: list[UnifiedData], key: str) -> UnifiedData:
    if not found:
        raise NotFound(f"no data under {key}")
    return found[0]


def watch_cancel(call: Any, cancel: threading.Event, finished: threading.Event) -> None:
    """Cancels `call` once `cancel` is set; ends when `finished` is."""
    while not finished.wait(0.05):
        if cancel.is_set():
            call.cancel()
            return

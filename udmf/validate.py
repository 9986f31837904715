"""Checks of written data against the UTD registry and the limits, as pure logic over its proto parts.

`DataChecker` sees one UnifiedData's header, then its entries in order, then `finish()`. An entry's type
must be known (a preset, a registered custom type, a flexible id that decodes, or an OpenHarmony
application-defined `ApplicationDefined.*` type), and its value must have the shape its type declares:
the uniform data structs by their field names (the proto's `Value` comment). A streamed value (a blob)
counts as the kind it will have once its bytes arrive: a string when `blob_text`, else bytes — the
whole value (`blob_field` "") or the object's field `blob_field`.

Only the parts' attributes are read (`WhichOneof`, `fields`, ...), so this module imports no
generated code; `_kind` names a value's kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from udmf.config import UdmfConfig
from udmf.errors import InvalidArgument
from udmf.structs import APPLICATION_DEFINED_PREFIX
from udmf.utd import UtdRegistry

if TYPE_CHECKING:
    from udmf.v1 import udmf_pb2 as pb

_APPLICATION_DEFINED_ID = re.compile(re.escape(APPLICATION_DEFINED_PREFIX) + r"[A-Za-z0-9._-]{1,108}")
_KINDS = {
    None: "nothing",
    "null_value": "null",
    "int_value": "an int",
    "double_value": "a double",
    "string_value": "a string",
    "bool_value": "a bool",
    "bytes_value": "bytes",
    "object_value": "an object",
}
STRING, BYTES, OBJECT, INT, DOUBLE = "a string", "bytes", "an object", "an int", "a double"
NUMBER = (INT, DOUBLE)


def has_blob(entry: pb.Entry) -> bool:
    """Whether the entry's value (or one field of it) streams as chunk parts after it."""
    return entry.blob_size > 0 or bool(entry.blob_field)


def _kind(value: pb.Value) -> str:
    return _KINDS[value.WhichOneof("kind")]


class _Shape:
    """The value an entry will have once its blob has arrived: its kind and its objects' field kinds."""

    def __init__(self, entry: pb.Entry, where: str) -> None:
        self.where = where
        self._value = entry.value
        self._blob_field = entry.blob_field
        blob_kind = STRING if entry.blob_text else BYTES
        inline = entry.value.WhichOneof("kind")
        if not has_blob(entry):
            self.kind = _kind(entry.value)
            self._blob_kind: str | None = None
        elif not entry.blob_field:
            if inline is not None:
                raise InvalidArgument(f"{where}: a streamed value must not also carry an inline value")
            self.kind, self._blob_kind = blob_kind, None
        else:
            if inline not in (None, "object_value"):
                raise InvalidArgument(
                    f"{where}: blob_field {entry.blob_field!r} streams a field, so the value must be an "
                    f"object, not {_KINDS[inline]}"
                )
            if entry.blob_field in entry.value.object_value.fields:
                raise InvalidArgument(f"{where}: field {entry.blob_field!r} is sent inline and as a blob")
            self.kind, self._blob_kind = OBJECT, blob_kind

    def field(self, name: str) -> str | None:
        """The kind of an object field, None if absent."""
        if name == self._blob_field and self._blob_kind is not None:
            return self._blob_kind
        fields = self._value.object_value.fields
        return _kind(fields[name]) if name in fields else None

    def fail(self, expected: str) -> InvalidArgument:
        return InvalidArgument(f"{self.where}: expected {expected}")


def _fields(
    required: dict[str, tuple[str, ...]], optional: dict[str, tuple[str, ...]]
) -> Callable[[_Shape, str], None]:
    """A check for an object with `required` and `optional` fields of the given kinds."""
    names = ", ".join(required)
    all_fields = {**required, **optional}

    def check(shape: _Shape, struct: str) -> None:
        if shape.kind != OBJECT:
            raise shape.fail(f"a {struct} object {{{names}}}, got {shape.kind}")
        for name, kinds in all_fields.items():
            got = shape.field(name)
            if got is None and name in optional:
                continue
            if got not in kinds:
                expected = " or ".join(kinds)
                raise shape.fail(f"a {struct} object whose field {name!r} is {expected}, got {got or 'none'}")

    return check


_APP_ITEM = _fields(
    dict.fromkeys(("appId", "appName", "appIconId", "appLabelId", "bundleName", "abilityName"), (STRING,)), {}
)
_FORM = _fields(
    {"formId": NUMBER, **dict.fromkeys(("formName", "bundleName", "abilityName", "module"), (STRING,))}, {}
)
_CONTENT_FORM = _fields(
    {"title": (STRING,)},
    {
        "thumbData": (BYTES,),
        "description": (STRING,),
        "appIcon": (BYTES,),
        "appName": (STRING,),
        "linkUri": (STRING,),
    },
)
_FILE_URI = _fields({"oriUri": (STRING,), "fileType": (STRING,)}, {})
_HYPERLINK = _fields({"url": (STRING,)}, {"description": (STRING,)})
_HTML = _fields({"htmlContent": (STRING,)}, {"plainContent": (STRING,)})
_PLAIN_TEXT = _fields({"textContent": (STRING,)}, {"abstract": (STRING,)})
_FILE = _fields({"uri": (STRING,)}, {})
_PIXEL_MAP = _fields({"pixelMap": (BYTES,)}, {"width": (INT,), "height": (INT,)})
FILE_LIKE = (
    "general.file",
    "general.image",
    "general.video",
    "general.audio",
    "general.folder",
    "general.directory",
)


def check_value(type_id: str, ancestors: frozenset[str], shape: _Shape) -> None:
    """Whether the value has the shape `type_id` (with its ancestors) declares; most specific first."""
    if type_id.startswith(APPLICATION_DEFINED_PREFIX):
        if shape.kind != BYTES:
            raise shape.fail(f"bytes (an application-defined record's raw data), got {shape.kind}")
    elif "openharmony.pixel-map" in ancestors:
        if shape.kind != BYTES:
            _PIXEL_MAP(shape, "PixelMap (or bytes)")
    elif "general.file-uri" in ancestors:
        _FILE_URI(shape, "FileUri")
    elif "openharmony.app-item" in ancestors:
        _APP_ITEM(shape, "AppItem")
    elif "openharmony.form" in ancestors:
        _FORM(shape, "Form")
    elif "general.content-form" in ancestors:
        _CONTENT_FORM(shape, "ContentForm")
    elif "general.plain-text" in ancestors:
        if shape.kind != STRING:
            _PLAIN_TEXT(shape, "PlainText (or a string)")
    elif "general.hyperlink" in ancestors:
        _HYPERLINK(shape, "Hyperlink")
    elif "general.html" in ancestors:
        _HTML(shape, "HTML")
    elif ancestors.intersection(FILE_LIKE) and shape.kind != BYTES:
        _FILE(shape, "file (or bytes)")


class DataChecker:
    """Checks one UnifiedData as it streams: `header`, each `entry` in order, then `finish`."""

    def __init__(self, registry: UtdRegistry, config: UdmfConfig) -> None:
        self._registry = registry
        self._config = config
        self.record_count = 0
        self._record = -1
        self._types: set[str] = set()

    def header(self, header: pb.DataHeader) -> None:
        cfg = self._config
        props = header.properties
        tag_bytes = len(props.tag.encode())
        if tag_bytes > cfg.max_tag_bytes:
            raise InvalidArgument(f"properties.tag is {tag_bytes} bytes; at most {cfg.max_tag_bytes}")
        extras = sum(len(k.encode()) + v.ByteSize() for k, v in props.extras.items())
        if extras > cfg.max_extras_bytes:
            raise InvalidArgument(f"properties.extras is {extras} bytes; at most {cfg.max_extras_bytes}")
        if not 1 <= header.record_count <= cfg.max_records:
            raise InvalidArgument(
                f"record_count is {header.record_count}: a UnifiedData holds 1-{cfg.max_records} records"
            )
        self.record_count = header.record_count

    def entry(self, entry: pb.Entry) -> None:
        r = entry.record
        if r == self._record + 1:
            if r >= self.record_count:
                raise InvalidArgument(f"entry of record {r}, but record_count says {self.record_count}")
            self._record = r
            self._types = set()
        elif r != self._record:
            expected = "0" if self._record < 0 else f"{self._record} or {self._record + 1}"
            raise InvalidArgument(f"entry of record {r} out of order: expected record {expected}")
        where = f"record {r}, type {entry.type!r}"
        if entry.type in self._types:
            raise InvalidArgument(f"{where}: a record holds each type at most once")
        if len(self._types) >= self._config.max_entries_per_record:
            raise InvalidArgument(f"record {r}: more than {self._config.max_entries_per_record} entries")
        self._types.add(entry.type)
        check_value(entry.type, self._ancestors(entry.type, where), _Shape(entry, where))

    def finish(self) -> None:
        got = self._record + 1
        if got != self.record_count:
            raise InvalidArgument(f"record_count says {self.record_count} records, the entries hold {got}")

    def _ancestors(self, type_id: str, where: str) -> frozenset[str]:
        if type_id.startswith(APPLICATION_DEFINED_PREFIX):
            if not _APPLICATION_DEFINED_ID.fullmatch(type_id):
                raise InvalidArgument(f"{where}: an application-defined type is ApplicationDefined.<name>")
            return frozenset({type_id})
        try:
            return self._registry.ancestors(type_id)
        except InvalidArgument:
            raise InvalidArgument(
                f"{where}: unknown type (not a preset, registered, flexible or ApplicationDefined.* type)"
            ) from None


def known_type(registry: UtdRegistry, type_id: str) -> bool:
    """Whether `type_id` may name an entry's type."""
    if type_id.startswith(APPLICATION_DEFINED_PREFIX):
        return _APPLICATION_DEFINED_ID.fullmatch(type_id) is not None
    return registry.get_type_descriptor(type_id) is not None

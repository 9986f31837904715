"""Uniform data structs: the typed entry values of OpenHarmony's `@ohos.data.uniformDataStruct`.

Each struct knows its UTD type id, so `UnifiedRecord(PlainText("hi"))` needs no type. On the wire a
struct is an object whose field names are OpenHarmony's (camelCase: `textContent`, `oriUri`, ...), as the
proto's `Value` comment lists them; `to_value()` gives that object and `from_value(type_id, value)` turns
an entry's plain value back into the struct of its type, when it fits. An `ApplicationDefinedRecord` is
the exception: its type is its own `application_defined_type` and its value is just its raw bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, cast, get_type_hints

from udmf.errors import InvalidArgument

APPLICATION_DEFINED_PREFIX = "ApplicationDefined."
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Struct:
    """Base of the uniform data structs: a frozen dataclass with a fixed UTD type id."""

    __slots__ = ()
    TYPE: ClassVar[str]

    @property
    def type_id(self) -> str:
        return self.TYPE

    def __post_init__(self) -> None:
        for name, kind in _field_kinds(type(self)).items():
            value = getattr(self, name)
            if not _fits(value, kind):
                raise InvalidArgument(
                    f"{type(self).__name__}.{name} must be {kind.__name__}, not {type(value).__name__}"
                )

    def to_value(self) -> dict[str, Any] | bytes | bytearray | memoryview:
        """The wire form: an object keyed by OpenHarmony's field names."""
        return {wire: getattr(self, name) for name, wire in _wire_names(type(self)).items()}

    @classmethod
    def from_object(cls, fields: Mapping[str, Any]) -> Struct | None:
        """The struct whose wire object is `fields`; None if a field is unknown, missing or mistyped."""
        by_wire = {wire: name for name, wire in _wire_names(cls).items()}
        if not set(fields) <= set(by_wire):
            return None
        try:
            return cls(**{by_wire[wire]: value for wire, value in fields.items()})
        except (TypeError, InvalidArgument):
            return None


_kinds: dict[type[Struct], dict[str, type]] = {}
_wires: dict[type[Struct], dict[str, str]] = {}


def _field_kinds(cls: type[Struct]) -> dict[str, type]:
    """Field name -> its annotated type (str, bytes or int), read once per class."""
    found = _kinds.get(cls)
    if found is None:
        hints = get_type_hints(cls)
        found = _kinds[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return found


def _wire_names(cls: type[Struct]) -> dict[str, str]:
    """Field name -> OpenHarmony's (camelCase) name."""
    found = _wires.get(cls)
    if found is None:
        found = _wires[cls] = {f.name: _camel(f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return found


def _fits(value: object, kind: type) -> bool:
    if kind is bytes:
        return isinstance(value, _BYTES_LIKE)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


@dataclasses.dataclass(frozen=True, slots=True)
class PlainText(Struct):
    TYPE: ClassVar[str] = "general.plain-text"
    text_content: str
    abstract: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Hyperlink(Struct):
    TYPE: ClassVar[str] = "general.hyperlink"
    url: str
    description: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class HTML(Struct):
    TYPE: ClassVar[str] = "general.html"
    html_content: str
    plain_content: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class File(Struct):
    """A file by URI (`file://...`); Image, Video, Audio and Folder are the same with a narrower type."""

    TYPE: ClassVar[str] = "general.file"
    uri: str


@dataclasses.dataclass(frozen=True, slots=True)
class Image(File):
    TYPE: ClassVar[str] = "general.image"


@dataclasses.dataclass(frozen=True, slots=True)
class Video(File):
    TYPE: ClassVar[str] = "general.video"


@dataclasses.dataclass(frozen=True, slots=True)
class Audio(File):
    TYPE: ClassVar[str] = "general.audio"


@dataclasses.dataclass(frozen=True, slots=True)
class Folder(File):
    TYPE: ClassVar[str] = "general.folder"


@dataclasses.dataclass(frozen=True, slots=True)
class FileUri(Struct):
    """A file URI and the UTD of the file it names (`file_type`, e.g. general.jpeg)."""

    TYPE: ClassVar[str] = "general.file-uri"
    ori_uri: str
    file_type: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class AppItem(Struct):
    TYPE: ClassVar[str] = "openharmony.app-item"
    app_id: str
    app_name: str
    app_icon_id: str
    app_label_id: str
    bundle_name: str
    ability_name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Form(Struct):
    TYPE: ClassVar[str] = "openharmony.form"
    form_id: int
    form_name: str
    bundle_name: str
    ability_name: str
    module: str


@dataclasses.dataclass(frozen=True, slots=True)
class ContentForm(Struct):
    """A card preview of content: a title, a thumbnail, the app's name and icon, a link."""

    TYPE: ClassVar[str] = "general.content-form"
    title: str
    thumb_data: bytes = b""
    description: str = ""
    app_icon: bytes = b""
    app_name: str = ""
    link_uri: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class PixelMap(Struct):
    """Raw pixels (`pixel_map`) of a `width` x `height` image."""

    TYPE: ClassVar[str] = "openharmony.pixel-map"
    pixel_map: bytes
    width: int = 0
    height: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ApplicationDefinedRecord(Struct):
    """An app's own format: the entry's type is `application_defined_type`, its value `raw_data`."""

    TYPE: ClassVar[str] = APPLICATION_DEFINED_PREFIX
    application_defined_type: str
    raw_data: bytes

    def __post_init__(self) -> None:
        Struct.__post_init__(self)
        name = self.application_defined_type
        if not name.startswith(APPLICATION_DEFINED_PREFIX) or name == APPLICATION_DEFINED_PREFIX:
            raise InvalidArgument(
                f"application_defined_type {name!r} must start with {APPLICATION_DEFINED_PREFIX!r}"
            )

    @property
    def type_id(self) -> str:
        return self.application_defined_type

    def to_value(self) -> bytes | bytearray | memoryview:
        return self.raw_data


STRUCTS: tuple[type[Struct], ...] = (
    PlainText,
    Hyperlink,
    HTML,
    File,
    Image,
    Video,
    Audio,
    Folder,
    FileUri,
    AppItem,
    Form,
    ContentForm,
    PixelMap,
)
BY_TYPE: dict[str, type[Struct]] = {cls.TYPE: cls for cls in STRUCTS}


def from_value(type_id: str, value: Any) -> Any:
    """`value` as the struct of `type_id` if it is that struct's wire form, else `value` unchanged."""
    if type_id.startswith(APPLICATION_DEFINED_PREFIX) and isinstance(value, _BYTES_LIKE):
        try:
            return ApplicationDefinedRecord(type_id, cast(bytes, value))
        except InvalidArgument:
            return value
    cls = BY_TYPE.get(type_id)
    if cls is not None and isinstance(value, Mapping):
        found = cls.from_object(value)
        if found is not None:
            return found
    return value

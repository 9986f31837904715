"""Uniform data structs: their type ids, their wire objects (OpenHarmony's field names) and back."""

from __future__ import annotations

from typing import Any

import pytest

from udmf import structs
from udmf.errors import InvalidArgument
from udmf.structs import (
    HTML,
    AppItem,
    ApplicationDefinedRecord,
    Audio,
    ContentForm,
    File,
    FileUri,
    Folder,
    Form,
    Hyperlink,
    Image,
    PixelMap,
    PlainText,
    Video,
)
from udmf.utd import UtdRegistry

EXAMPLES: list[tuple[Any, str, dict[str, Any]]] = [
    (PlainText("hi", "h"), "general.plain-text", {"textContent": "hi", "abstract": "h"}),
    (Hyperlink("https://x.org", "X"), "general.hyperlink", {"url": "https://x.org", "description": "X"}),
    (HTML("<b>hi</b>", "hi"), "general.html", {"htmlContent": "<b>hi</b>", "plainContent": "hi"}),
    (File("file:///a"), "general.file", {"uri": "file:///a"}),
    (Image("file:///a.png"), "general.image", {"uri": "file:///a.png"}),
    (Video("file:///a.mp4"), "general.video", {"uri": "file:///a.mp4"}),
    (Audio("file:///a.mp3"), "general.audio", {"uri": "file:///a.mp3"}),
    (Folder("file:///d"), "general.folder", {"uri": "file:///d"}),
    (
        FileUri("file:///a.jpg", "general.jpeg"),
        "general.file-uri",
        {"oriUri": "file:///a.jpg", "fileType": "general.jpeg"},
    ),
    (
        AppItem("id", "Notes", "icon", "label", "com.example.notes", "MainAbility"),
        "openharmony.app-item",
        {
            "appId": "id",
            "appName": "Notes",
            "appIconId": "icon",
            "appLabelId": "label",
            "bundleName": "com.example.notes",
            "abilityName": "MainAbility",
        },
    ),
    (
        Form(7, "clock", "com.example.clock", "FormAbility", "entry"),
        "openharmony.form",
        {
            "formId": 7,
            "formName": "clock",
            "bundleName": "com.example.clock",
            "abilityName": "FormAbility",
            "module": "entry",
        },
    ),
    (
        ContentForm("Title", b"\x89PNG", "d", b"icon", "App", "https://x.org/1"),
        "general.content-form",
        {
            "title": "Title",
            "thumbData": b"\x89PNG",
            "description": "d",
            "appIcon": b"icon",
            "appName": "App",
            "linkUri": "https://x.org/1",
        },
    ),
    (
        PixelMap(b"\x00\x01\x02\x03", 1, 1),
        "openharmony.pixel-map",
        {"pixelMap": b"\x00\x01\x02\x03", "width": 1, "height": 1},
    ),
]


@pytest.mark.parametrize(("struct", "type_id", "wire"), EXAMPLES)
def test_type_and_wire_object(struct: Any, type_id: str, wire: dict[str, Any]) -> None:
    assert struct.type_id == type_id == type(struct).TYPE
    assert struct.to_value() == wire
    assert structs.from_value(type_id, wire) == struct
    assert type(structs.from_value(type_id, wire)) is type(struct)


def test_every_struct_type_is_a_preset_type() -> None:
    registry = UtdRegistry()
    assert {cls.TYPE for cls in structs.STRUCTS} <= set(registry.type_ids())
    assert len(structs.BY_TYPE) == len(structs.STRUCTS)  # one struct per type


def test_optional_fields_default() -> None:
    assert structs.from_value("general.plain-text", {"textContent": "x"}) == PlainText("x", "")
    assert ContentForm("t").to_value()["thumbData"] == b""
    assert PixelMap(b"px").to_value() == {"pixelMap": b"px", "width": 0, "height": 0}


@pytest.mark.parametrize(
    ("type_id", "value"),
    [
        ("general.plain-text", {"textContent": 3}),  # mistyped
        ("general.plain-text", {"abstract": "no text"}),  # required field missing
        ("general.plain-text", {"textContent": "x", "details": {}}),  # unknown field
        ("general.plain-text", "a bare string"),
        (
            "openharmony.form",
            {"formId": True, "formName": "", "bundleName": "", "abilityName": "", "module": ""},
        ),
        ("general.jpeg", {"uri": "file:///a.jpg"}),  # no struct of its own
        ("ApplicationDefined.notes", "text, not bytes"),
    ],
)
def test_values_that_do_not_fit_stay_as_they_are(type_id: str, value: Any) -> None:
    assert structs.from_value(type_id, value) is value


def test_file_subtypes_are_distinct() -> None:
    assert Image("file:///a") != File("file:///a")
    assert structs.from_value("general.image", {"uri": "u"}) == Image("u")
    assert isinstance(Image("u"), File)


def test_application_defined_record() -> None:
    record = ApplicationDefinedRecord("ApplicationDefined.notes", b"\x01\x02")
    assert record.type_id == "ApplicationDefined.notes"
    assert record.to_value() == b"\x01\x02"
    assert structs.from_value("ApplicationDefined.notes", b"\x01\x02") == record
    for bad in ("notes", "ApplicationDefined.", "applicationdefined.notes"):
        with pytest.raises(InvalidArgument, match="ApplicationDefined"):
            ApplicationDefinedRecord(bad, b"")


@pytest.mark.parametrize(
    "make",
    [
        lambda: PlainText(b"bytes"),  # type: ignore[arg-type]
        lambda: Form("7", "f", "b", "a", "m"),  # type: ignore[arg-type]
        lambda: Form(True, "f", "b", "a", "m"),
        lambda: PixelMap("not bytes"),  # type: ignore[arg-type]
        lambda: ContentForm("t", thumb_data="x"),  # type: ignore[arg-type]
    ],
)
def test_mistyped_fields_are_invalid_arguments(make: Any) -> None:
    with pytest.raises(InvalidArgument, match="must be"):
        make()


def test_bytes_fields_take_any_bytes_like_value() -> None:
    pixels = bytearray(b"\x00" * 16)
    assert PixelMap(memoryview(pixels), 2, 2).to_value()["pixelMap"] == bytes(16)
    assert PixelMap(pixels) == PixelMap(bytes(16))


def test_structs_are_frozen() -> None:
    text = PlainText("a")
    with pytest.raises(AttributeError):
        text.text_content = "b"  # type: ignore[misc]

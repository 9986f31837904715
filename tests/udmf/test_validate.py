"""Checks of written data: known types, values shaped as their types declare, record order, limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from udmf.config import UdmfConfig
from udmf.errors import InvalidArgument
from udmf.utd import UtdRegistry
from udmf.v1 import udmf_pb2 as pb
from udmf.validate import DataChecker, known_type

REG = UtdRegistry(
    [
        {
            "type_id": "com.example.notes.note",
            "belonging_to_types": ["general.plain-text"],
            "owner_bundle": "com.example.notes",
        },
        {
            "type_id": "com.example.notes.sketch",
            "belonging_to_types": ["general.image"],
            "owner_bundle": "com.example.notes",
        },
    ]
)
CONFIG = UdmfConfig(
    Path("/nonexistent"), max_records=4, max_entries_per_record=3, max_tag_bytes=8, max_extras_bytes=64
)
FLEX = REG.get_uniform_data_type_by_filename_extension(".xyz")


def v(x: Any) -> pb.Value:
    """A Value from a Python value (dicts become objects)."""
    if x is None:
        return pb.Value(null_value=True)
    if isinstance(x, bool):
        return pb.Value(bool_value=x)
    if isinstance(x, int):
        return pb.Value(int_value=x)
    if isinstance(x, float):
        return pb.Value(double_value=x)
    if isinstance(x, str):
        return pb.Value(string_value=x)
    if isinstance(x, bytes):
        return pb.Value(bytes_value=x)
    obj = pb.Value(object_value=pb.Object())
    for name, item in x.items():
        obj.object_value.fields[name].CopyFrom(v(item))
    return obj


def entry(type_id: str, value: Any = ..., record: int = 0, **blob: Any) -> pb.Entry:
    e = pb.Entry(record=record, type=type_id, **blob)
    if value is not ...:
        e.value.CopyFrom(v(value))
    return e


def check(*entries: pb.Entry, record_count: int = 1, **props: Any) -> None:
    c = DataChecker(REG, CONFIG)
    c.header(pb.DataHeader(properties=pb.Properties(**props), record_count=record_count))
    for e in entries:
        c.entry(e)
    c.finish()


APP_ITEM = dict.fromkeys(("appId", "appName", "appIconId", "appLabelId", "bundleName", "abilityName"), "x")
FORM = {"formId": 7, "formName": "f", "bundleName": "b", "abilityName": "a", "module": "m"}

VALID = [
    ("general.plain-text", "hello"),
    ("general.plain-text", {"textContent": "hello", "abstract": "h"}),
    ("general.plain-text", {"textContent": "hello", "uniformDataType": "general.plain-text", "details": {}}),
    ("general.log", "a log line"),  # under general.plain-text
    ("com.example.notes.note", {"textContent": "a custom text type"}),
    ("general.hyperlink", {"url": "https://example.com", "description": "ex"}),
    ("general.html", {"htmlContent": "<b>x</b>", "plainContent": "x"}),
    ("general.xhtml", {"htmlContent": "<b/>"}),
    ("general.file", {"uri": "file:///a.txt"}),
    ("general.file", b"raw"),
    ("general.image", {"uri": "file:///a.png"}),
    ("general.jpeg", b"\xff\xd8"),
    ("com.example.notes.sketch", {"uri": "file:///s.png"}),
    ("general.video", {"uri": "file:///a.mp4"}),
    ("general.audio", b"RIFF"),
    ("general.folder", {"uri": "file:///dir"}),
    ("general.directory", {"uri": "file:///dir"}),
    (FLEX, {"uri": "file:///a.xyz"}),  # a flexible type of an extension: a file
    ("general.file-uri", {"oriUri": "file:///a", "fileType": "general.plain-text"}),
    ("openharmony.app-item", APP_ITEM),
    ("openharmony.form", FORM),
    ("openharmony.form", {**FORM, "formId": 7.0}),
    ("general.content-form", {"title": "t"}),
    (
        "general.content-form",
        {"title": "t", "thumbData": b"", "appIcon": b"", "linkUri": "u", "appName": "n"},
    ),
    ("openharmony.pixel-map", b"\x00\x01"),
    ("openharmony.pixel-map", {"pixelMap": b"\x00", "width": 1, "height": 1}),
    ("ApplicationDefined.my-thing", b"raw"),
    ("general.text", 42),  # anything else: any value
    ("general.json", {"a": 1}),
    ("openharmony.want", None),
    ("general.object", True),
    ("general.calendar", 1.5),
]


@pytest.mark.parametrize(("type_id", "value"), VALID, ids=[f"{t}-{i}" for i, (t, _) in enumerate(VALID)])
def test_valid_values(type_id: str, value: Any) -> None:
    check(entry(type_id, value))


INVALID = [
    ("general.plain-text", 42, "a PlainText (or a string) object {textContent}, got an int"),
    ("general.plain-text", {"text": "x"}, "field 'textContent' is a string, got none"),
    ("general.plain-text", {"textContent": "x", "abstract": 1}, "field 'abstract' is a string, got an int"),
    ("general.hyperlink", "https://example.com", "a Hyperlink object {url}, got a string"),
    ("general.hyperlink", {"url": b"x"}, "field 'url' is a string, got bytes"),
    ("general.html", {"plainContent": "x"}, "field 'htmlContent' is a string, got none"),
    ("general.file", "file:///a", "a file (or bytes) object {uri}, got a string"),
    ("general.image", {"imageUri": "file:///a"}, "field 'uri' is a string, got none"),
    ("general.folder", {"uri": 3}, "field 'uri' is a string, got an int"),
    ("general.file-uri", {"oriUri": "file:///a"}, "field 'fileType' is a string, got none"),
    ("openharmony.app-item", {**APP_ITEM, "appIconId": 5}, "field 'appIconId' is a string, got an int"),
    ("openharmony.form", {**FORM, "formId": "7"}, "field 'formId' is an int or a double, got a string"),
    ("general.content-form", {"title": "t", "thumbData": "x"}, "field 'thumbData' is bytes, got a string"),
    ("general.content-form", {}, "field 'title' is a string, got none"),
    ("openharmony.pixel-map", {"pixelMap": "x"}, "field 'pixelMap' is bytes, got a string"),
    ("openharmony.pixel-map", "x", "PixelMap (or bytes) object {pixelMap}, got a string"),
    ("ApplicationDefined.thing", "x", "bytes (an application-defined record's raw data), got a string"),
    ("com.example.notes.note", 1, "a PlainText (or a string) object"),
]


@pytest.mark.parametrize(("type_id", "value", "message"), INVALID, ids=[t for t, _, _ in INVALID])
def test_mismatched_values_name_record_type_and_expectation(type_id: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check(entry("general.text", "ok"), entry(type_id, value, record=1), record_count=2)
    assert info.value.message.startswith(f"record 1, type {type_id!r}: expected ")
    assert message in info.value.message


@pytest.mark.parametrize(
    "type_id",
    ["general.nope", "com.example.unknown", "flex.zzzz", "ApplicationDefined.", "ApplicationDefined.a b", ""],
)
def test_unknown_types(type_id: str) -> None:
    with pytest.raises(InvalidArgument, match=r"unknown type|ApplicationDefined.<name>"):
        check(entry(type_id, b"x"))
    assert not known_type(REG, type_id)


def test_known_types() -> None:
    for type_id in ("general.plain-text", "com.example.notes.note", FLEX, "ApplicationDefined.x"):
        assert known_type(REG, type_id)


# -- blobs count as the kind they will be --------------------------------------------------------------


def test_whole_value_blobs() -> None:
    check(entry("general.plain-text", blob_size=10, blob_text=True))
    check(entry("general.file", blob_size=10))
    check(entry("ApplicationDefined.x", blob_size=10))
    check(entry("openharmony.pixel-map", blob_size=10))
    with pytest.raises(InvalidArgument, match=r"expected bytes .* got a string"):
        check(entry("ApplicationDefined.x", blob_size=10, blob_text=True))
    with pytest.raises(InvalidArgument, match="got bytes"):
        check(entry("general.hyperlink", blob_size=10))
    with pytest.raises(InvalidArgument, match="must not also carry an inline value"):
        check(entry("general.file", b"x", blob_size=10))


def test_field_blobs() -> None:
    check(entry("general.html", {}, blob_size=100, blob_field="htmlContent", blob_text=True))
    check(entry("general.html", blob_size=100, blob_field="htmlContent", blob_text=True))  # no value: {}
    check(entry("openharmony.pixel-map", {"width": 2}, blob_size=9, blob_field="pixelMap"))
    check(entry("general.content-form", {"title": "t"}, blob_size=9, blob_field="thumbData"))
    check(entry("general.html", {}, blob_field="htmlContent", blob_text=True))  # an empty blob
    with pytest.raises(InvalidArgument, match="field 'htmlContent' is a string, got bytes"):
        check(entry("general.html", {}, blob_size=100, blob_field="htmlContent"))
    with pytest.raises(InvalidArgument, match="field 'pixelMap' is bytes, got a string"):
        check(entry("openharmony.pixel-map", {}, blob_size=9, blob_field="pixelMap", blob_text=True))
    with pytest.raises(InvalidArgument, match="sent inline and as a blob"):
        check(
            entry("general.html", {"htmlContent": "x"}, blob_size=9, blob_field="htmlContent", blob_text=True)
        )
    with pytest.raises(InvalidArgument, match="the value must be an object, not a string"):
        check(entry("general.html", "x", blob_size=9, blob_field="htmlContent", blob_text=True))


# -- records ----------------------------------------------------------------------------------------------


def test_records_in_order_from_zero() -> None:
    check(
        entry("general.plain-text", "a"),
        entry("general.html", {"htmlContent": "a"}),
        entry("general.plain-text", "b", record=1),
        entry("general.plain-text", "c", record=2),
        record_count=3,
    )
    with pytest.raises(InvalidArgument, match="entry of record 1 out of order: expected record 0"):
        check(entry("general.plain-text", "a", record=1), record_count=2)
    with pytest.raises(InvalidArgument, match="entry of record 2 out of order: expected record 0 or 1"):
        check(entry("general.plain-text", "a"), entry("general.plain-text", "a", record=2), record_count=3)
    with pytest.raises(InvalidArgument, match="out of order: expected record 1 or 2"):
        check(
            entry("general.plain-text", "a"),
            entry("general.plain-text", "a", record=1),
            entry("general.html", {"htmlContent": "a"}, record=0),
            record_count=2,
        )


def test_record_count_must_match() -> None:
    with pytest.raises(InvalidArgument, match="record_count says 2 records, the entries hold 1"):
        check(entry("general.plain-text", "a"), record_count=2)
    with pytest.raises(InvalidArgument, match="entry of record 1, but record_count says 1"):
        check(entry("general.plain-text", "a"), entry("general.plain-text", "a", record=1), record_count=1)
    with pytest.raises(InvalidArgument, match="record_count says 1 records, the entries hold 0"):
        check()
    with pytest.raises(InvalidArgument, match="record_count is 0"):
        check(record_count=0)
    with pytest.raises(InvalidArgument, match="record_count is 5: a UnifiedData holds 1-4 records"):
        check(record_count=5)


def test_one_type_once_per_record() -> None:
    with pytest.raises(
        InvalidArgument, match=r"record 0, type 'general.plain-text': a record holds each type"
    ):
        check(entry("general.plain-text", "a"), entry("general.plain-text", "b"))
    check(entry("general.plain-text", "a"), entry("general.plain-text", "b", record=1), record_count=2)


def test_entries_per_record() -> None:
    three = [entry(t, 1) for t in ("general.text", "general.object", "general.json")]
    check(*three)
    with pytest.raises(InvalidArgument, match="record 0: more than 3 entries"):
        check(*three, entry("general.calendar", 1))


def test_property_limits() -> None:
    check(entry("general.text", 1), tag="12345678")
    check(entry("general.text", 1), tag="héllo")  # 6 bytes
    with pytest.raises(InvalidArgument, match=r"properties.tag is 9 bytes; at most 8"):
        check(entry("general.text", 1), tag="123456789")
    with pytest.raises(InvalidArgument, match=r"properties.tag is 10 bytes"):
        check(entry("general.text", 1), tag="ééééé")
    check(entry("general.text", 1), extras={"k": v("x" * 40)})
    with pytest.raises(InvalidArgument, match=r"properties.extras is .* bytes; at most 64"):
        check(entry("general.text", 1), extras={"k": v("x" * 80)})

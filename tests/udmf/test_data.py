"""The data model: records and their entries, hierarchy-aware has_type, properties, enums."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from udmf.data import (
    EPOCH,
    Intention,
    ShareOptions,
    Summary,
    UnifiedData,
    UnifiedDataProperties,
    UnifiedRecord,
    Visibility,
)
from udmf.errors import InvalidArgument
from udmf.structs import HTML, ApplicationDefinedRecord, File, FileUri, Image, PixelMap, PlainText
from udmf.utd import UtdRegistry

# ---- records ----


def test_a_struct_names_its_own_type() -> None:
    record = UnifiedRecord(PlainText("hi"))
    assert record.get_type() == "general.plain-text"
    assert record.get_value() == PlainText("hi")
    assert UnifiedRecord(value=Image("file:///a.png")).get_type() == "general.image"
    assert UnifiedRecord("general.plain-text", PlainText("hi")) == record


def test_a_struct_under_another_type_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"PlainText is a general.plain-text, not a general.html"):
        UnifiedRecord("general.html", PlainText("hi"))


def test_a_plain_value_needs_a_type() -> None:
    with pytest.raises(InvalidArgument, match="needs a type id"):
        UnifiedRecord(value=b"raw")
    with pytest.raises(InvalidArgument, match="non-empty str"):
        UnifiedRecord("", "x")


def test_an_empty_record() -> None:
    record = UnifiedRecord()
    assert (record.get_type(), record.get_value(), record.get_types(), record.get_entries()) == (
        "",
        None,
        [],
        {},
    )
    nothing = UnifiedRecord("general.plain-text")  # a type with a null value is an entry
    assert nothing.get_types() == ["general.plain-text"] and nothing.get_value() is None


def test_entries_keep_their_order_and_a_type_is_replaced_in_place() -> None:
    record = UnifiedRecord(HTML("<b>hi</b>", "hi"))
    record.add_entry(PlainText("hi"))
    record.add_entry("general.png", b"\x89PNG")
    assert record.get_types() == ["general.html", "general.plain-text", "general.png"]
    assert record.get_type() == "general.html"
    record.add_entry(PlainText("bye"))
    assert record.get_types() == ["general.html", "general.plain-text", "general.png"]
    assert record.get_entry("general.plain-text") == PlainText("bye")
    assert record.get_entry("general.jpeg") is None
    entries = record.get_entries()
    entries.clear()  # a copy
    assert len(record.get_entries()) == 3


def test_a_value_in_a_structs_wire_form_is_that_struct() -> None:
    record = UnifiedRecord("general.plain-text", {"textContent": "hi"})
    assert record.get_value() == PlainText("hi")
    record.add_entry("ApplicationDefined.notes", b"\x01")
    assert record.get_entry("ApplicationDefined.notes") == ApplicationDefinedRecord(
        "ApplicationDefined.notes", b"\x01"
    )
    record.add_entry("general.object", {"textContent": "hi"})  # no struct of its own: stays a dict
    assert record.get_entry("general.object") == {"textContent": "hi"}


def test_values_are_checked_when_added() -> None:
    with pytest.raises(InvalidArgument, match="int64"):
        UnifiedRecord("general.object", 2**63)
    with pytest.raises(InvalidArgument, match="list cannot be"):
        UnifiedRecord("general.object", {"a": [1]})


def test_record_equality_includes_order() -> None:
    a = UnifiedRecord(PlainText("x"))
    a.add_entry(HTML("x"))
    b = UnifiedRecord(HTML("x"))
    b.add_entry(PlainText("x"))
    assert a != b
    assert a != UnifiedRecord(PlainText("x"))
    assert a != "not a record"
    assert UnifiedRecord(PlainText("x")) == UnifiedRecord("general.plain-text", {"textContent": "x"})


# ---- data and has_type ----


def jpeg_data() -> UnifiedData:
    record = UnifiedRecord("general.jpeg", b"\xff\xd8")
    record.add_entry(FileUri("file:///a.jpg", "general.jpeg"))
    data = UnifiedData(UnifiedRecord(PlainText("caption")))
    data.add_record(record)
    return data


def test_has_type_follows_the_hierarchy() -> None:
    data = jpeg_data()
    assert data.has_type("general.jpeg")
    assert data.has_type("general.image")  # general.jpeg belongs to general.image
    assert data.has_type("general.media") and data.has_type("general.object")
    assert data.has_type("general.text")  # from the caption
    assert data.has_type("general.uri")  # general.file-uri ⊂ general.uri
    assert not data.has_type("general.png")
    assert not data.has_type("general.file")  # images are not files
    assert not data.has_type("general.video")
    assert not data.has_type("no.such.type")


def test_has_type_of_types_the_registry_does_not_know() -> None:
    data = UnifiedData(UnifiedRecord(ApplicationDefinedRecord("ApplicationDefined.notes", b"")))
    data.add_record(UnifiedRecord("com.example.notes.note", "x"))
    assert data.has_type("ApplicationDefined.notes")
    assert not data.has_type("general.object")
    assert data.has_type("com.example.notes.note")
    assert not data.has_type("general.text")
    registry = UtdRegistry()
    registry.register_types(
        [{"type_id": "com.example.notes.note", "belonging_to_types": ["general.text"]}], "com.example.notes"
    )
    assert data.has_type("general.text", registry)


def test_pixel_map_is_an_image() -> None:
    assert UnifiedData(UnifiedRecord(PixelMap(b"\x00", 1, 1))).has_type("general.image")


def test_types_and_records() -> None:
    data = jpeg_data()
    data.add_record(UnifiedRecord(PlainText("again")))
    assert data.get_types() == ["general.plain-text", "general.jpeg", "general.file-uri"]
    assert [r.get_type() for r in data.get_records()] == [
        "general.plain-text",
        "general.jpeg",
        "general.plain-text",
    ]
    data.get_records().clear()  # a copy
    assert len(data.get_records()) == 3
    assert UnifiedData().get_records() == [] and not UnifiedData().has_type("general.object")
    with pytest.raises(InvalidArgument, match="UnifiedRecord"):
        data.add_record(PlainText("not a record"))  # type: ignore[arg-type]


def test_data_equality_covers_records_and_properties() -> None:
    assert jpeg_data() == jpeg_data()
    other = jpeg_data()
    other.properties.tag = "t"
    assert other != jpeg_data()
    assert jpeg_data().runtime is None


# ---- properties and enums ----


def test_properties_defaults_and_read_only_timestamp() -> None:
    props = UnifiedDataProperties()
    assert (props.tag, props.extras, props.share_options, props.timestamp) == (
        "",
        {},
        ShareOptions.CROSS_APP,
        EPOCH,
    )
    with pytest.raises(AttributeError):
        props.timestamp = datetime.now(UTC)  # type: ignore[misc]
    read = UnifiedDataProperties._read("t", {"a": 1}, ShareOptions.IN_APP, datetime(2026, 1, 2, tzinfo=UTC))
    assert read.timestamp.year == 2026 and read != UnifiedDataProperties("t", {"a": 1}, ShareOptions.IN_APP)
    assert "IN_APP" in repr(read)


def test_enums_are_openharmonys() -> None:
    assert [i.value for i in Intention] == ["DataHub", "Drag", "SystemShare", "Picker", "Menu"]
    assert (ShareOptions.IN_APP, ShareOptions.CROSS_APP, ShareOptions.CROSS_DEVICE) == (0, 1, 2)
    assert (Visibility.ALL, Visibility.OWN_PROCESS) == (0, 1)
    assert Intention("DataHub") is Intention.DATA_HUB


def test_summary_of_types() -> None:
    assert Summary.of_types(["general.png", "general.plain-text"]) == Summary(
        {"general.png": 0, "general.plain-text": 0}, 0
    )
    assert File("u").type_id == "general.file"

"""`datamgr udmf` without a daemon: how values print, the data put-text and put-file build, declarations."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from datamgr.cli._udmf_show import data_json, show, size
from datamgr.cli._udmf_types import _declarations
from datamgr.cli.udmf import _text_value, text_data
from udmf import (
    HTML,
    File,
    FileUri,
    Hyperlink,
    InvalidArgument,
    PixelMap,
    PlainText,
    UnifiedData,
    UnifiedRecord,
)


def test_sizes() -> None:
    assert [size(n) for n in (0, 999, 1000, 1_234_567, 30 * 1024 * 1024, 5 * 10**12)] == [
        "0 B",
        "999 B",
        "1.0 KB",
        "1.2 MB",
        "31.5 MB",
        "5000.0 GB",
    ]


def test_values_print_as_text_uris_or_sizes(tmp_path: Path) -> None:
    assert show("plain", None) == "plain"
    assert show(PlainText("p"), None) == "p"
    assert show(HTML("<b>h</b>", "h"), None) == "<b>h</b>"
    assert show(Hyperlink("https://x.org", "X"), None) == "https://x.org (X)"
    assert show(File("file:///a"), None) == "file:///a"
    assert show(FileUri("file:///a.jpg", "general.jpeg"), None) == "file:///a.jpg (general.jpeg)"
    assert show(b"\x00" * 2000, None) == "<2.0 KB of bytes: --out DIR saves them>"
    target = tmp_path / "x.bin"
    assert show(b"\x01", lambda raw: target.write_bytes(raw) and target) == f"-> {target} (1 B)"
    assert target.read_bytes() == b"\x01"
    assert show(PixelMap(b"\x00" * 3, 1, 1), None) == (
        '{"$struct": "PixelMap", "pixel_map": "<3 B of bytes>", "width": 1, "height": 1}'
    )
    assert show({"n": 1, "s": "é"}, None) == '{"n": 1, "s": "é"}'


def test_data_json_of_local_data() -> None:
    data = UnifiedData(UnifiedRecord(PlainText("t")))
    data.properties.extras = {"b": b"\x00"}
    got = data_json(data)
    assert (got["key"], got["intention"], got["share_options"], got["extras"]) == (
        "",
        None,
        "CROSS_APP",
        {"b": b"\x00"},
    )
    assert got["records"] == [
        {"general.plain-text": {"$struct": "PlainText", "text_content": "t", "abstract": ""}}
    ]


def test_text_data() -> None:
    (record,) = text_data("hi").get_records()
    assert record.get_entries() == {"general.plain-text": PlainText("hi")}
    (record,) = text_data("<p>rich  <b>text</b></p>", html=True).get_records()
    assert record.get_entries() == {
        "general.html": HTML("<p>rich  <b>text</b></p>", "rich text"),
        "general.plain-text": PlainText("rich text"),
    }


def test_text_files_are_sent_as_text(tmp_path: Path) -> None:
    note, page, blob = tmp_path / "a.txt", tmp_path / "a.html", tmp_path / "a.bin"
    note.write_text("note")
    page.write_text("<i>page</i>")
    blob.write_bytes(b"\xff\xfe")
    assert _text_value("general.plain-text", note) == "note"
    assert _text_value("general.log", note) == "note"  # a plain-text subtype
    assert _text_value("general.html", page) == {"htmlContent": "<i>page</i>", "plainContent": "page"}
    assert _text_value("general.png", blob) is None
    assert _text_value("com.example.custom", blob) is None
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        _text_value("general.plain-text", blob)


def test_declarations_in_either_spelling() -> None:
    ours = [{"type_id": "com.x.a", "belonging_to_types": ["general.text"]}]
    assert _declarations(ours) == ours
    assert _declarations({"types": ours}) == ours
    oh = {"UniformDataTypeDeclarations": [{"TypeId": "com.x.a", "BelongingToTypes": ["general.text"]}]}
    assert _declarations(oh) == ours
    for bad in ({"nothing": 1}, ["com.x.a"], 3):
        with pytest.raises(click.UsageError):
            _declarations(bad)

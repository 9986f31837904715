"""The UTD type system: preset table, relations, look-ups, flexible ids, custom types."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import udmf
from udmf import _flexible
from udmf.errors import (
    BY_CODE,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    UdmfError,
)
from udmf.utd import TypeDescriptor, UtdRegistry

REG = UtdRegistry()  # never mutated by the tests; the ones that register build their own
PRESET_IDS = REG.type_ids()
OWNER = "com.example.notes"
DOCX = "org.openxmlformats.wordprocessingml.document"


def _descriptor(type_id: str) -> TypeDescriptor:
    found = REG.get_type_descriptor(type_id)
    assert found is not None, type_id
    return found


def _oh_base32(data: bytes) -> str:
    """OpenHarmony's `Base32::Encode` loop (base32_utils.cpp), written out independently."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    out, val, bits = [], 0, 0
    for byte in data:
        val, bits = (val << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            out.append(alphabet[(val >> bits) & 0x1F])
    if bits:
        out.append(alphabet[(val << (5 - bits)) & 0x1F])
    return "".join(out)


# -- the public surface -----------------------------------------------------------------------------


def test_utd_names_are_exported() -> None:
    # the whole of udmf.__all__ is pinned in test_exported_members.py
    assert udmf.TypeDescriptor is TypeDescriptor and udmf.UtdRegistry is UtdRegistry


def test_error_codes_are_grpc_status_names() -> None:
    assert sorted(BY_CODE) == [
        "ALREADY_EXISTS",
        "DEADLINE_EXCEEDED",
        "FAILED_PRECONDITION",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "UNAUTHENTICATED",
        "UNAVAILABLE",
    ]
    for code, cls in BY_CODE.items():
        assert issubclass(cls, UdmfError)
        assert cls.code == code
        assert cls("boom").message == "boom"


# -- the preset table -------------------------------------------------------------------------------


def _raw_presets() -> list[dict[str, Any]]:
    text = resources.files("udmf").joinpath("utd_presets.json").read_text(encoding="utf-8")
    rows: list[dict[str, Any]] = json.loads(text)["types"]
    return rows


def test_preset_table_is_large_and_unique() -> None:
    ids = [row["id"] for row in _raw_presets()]
    assert len(ids) >= 180
    assert len(set(ids)) == len(ids)
    assert ids == PRESET_IDS


def test_preset_parents_exist_and_come_first() -> None:
    seen: set[str] = set()
    for row in _raw_presets():
        assert set(row["parents"]) <= seen, row["id"]
        seen.add(row["id"])


def test_preset_graph_is_acyclic() -> None:
    """Kahn's algorithm, independent of the registry's closure code."""
    parents = {r["id"]: set(r["parents"]) for r in _raw_presets()}
    done: set[str] = set()
    while True:
        ready = {t for t, ps in parents.items() if t not in done and ps <= done}
        if not ready:
            break
        done |= ready
    assert done == set(parents)


def test_every_preset_reaches_a_root() -> None:
    roots = [t for t in PRESET_IDS if not _descriptor(t).belonging_to_types]
    assert roots == ["general.entity", "general.object"]
    for type_id in PRESET_IDS:
        assert REG.ancestors(type_id) & {"general.entity", "general.object"}, type_id


def test_preset_values_are_normalised() -> None:
    for type_id in PRESET_IDS:
        d = _descriptor(type_id)
        assert _flexible.is_flexible(type_id) is False
        for ext in d.filename_extensions:
            assert ext.startswith(".") and ext == ext.lower() and len(ext) > 1, (type_id, ext)
        for mime in d.mime_types:
            assert mime == mime.lower() and "/" in mime, (type_id, mime)


@pytest.mark.parametrize(
    ("type_id", "ancestor"),
    [
        ("general.file", "general.entity"),
        ("general.folder", "general.directory"),
        ("general.symlink", "general.entity"),
        ("openharmony.hap", "openharmony.package"),
        ("openharmony.package", "general.directory"),
        ("general.plain-text", "general.text"),
        ("general.html", "general.text"),
        ("general.hyperlink", "general.text"),
        ("general.xml", "general.text"),
        ("general.markdown", "general.text"),
        ("general.rich-text", "general.text"),
        ("general.comma-separated-values-text", "general.delimited-values-text"),
        ("general.tab-separated-values-text", "general.delimited-values-text"),
        ("general.c-source", "general.source-code"),
        ("general.c-header", "general.source-code"),
        ("general.c-plus-plus-header", "general.source-code"),
        ("general.java-source", "general.source-code"),
        ("general.rust-source", "general.source-code"),
        ("general.go-source", "general.source-code"),
        ("general.swift-source", "general.source-code"),
        ("general.kotlin-source", "general.source-code"),
        ("general.java-script", "general.source-code"),
        ("general.type-script", "general.source-code"),
        ("general.script", "general.source-code"),
        ("general.shell-script", "general.script"),
        ("general.python-script", "general.script"),
        ("general.perl-script", "general.script"),
        ("general.ruby-script", "general.script"),
        ("general.php-script", "general.script"),
        ("general.json", "general.script"),
        ("general.calendar", "general.text"),
        ("general.vcard", "general.contact"),
        ("general.image", "general.media"),
        ("general.video", "general.media"),
        ("general.audio", "general.media"),
        ("openharmony.moving-photo", "general.media"),
        ("general.jpeg", "general.image"),
        ("general.png", "general.image"),
        ("general.gif", "general.image"),
        ("com.microsoft.bmp", "general.image"),
        ("general.webp", "general.image"),
        ("general.heic", "general.image"),
        ("general.heif", "general.image"),
        ("general.tiff", "general.image"),
        ("general.svg-image", "general.image"),
        ("com.microsoft.ico", "general.image"),
        ("com.adobe.raw-image", "general.raw-image"),
        ("openharmony.pixel-map", "general.image"),
        ("general.mpeg-4", "general.video"),
        ("general.avi", "general.video"),
        ("org.matroska.mkv", "general.video"),
        ("org.webmproject.webm", "general.video"),
        ("com.apple.quicktime-movie", "general.video"),
        ("general.3gpp", "general.video"),
        ("general.ts", "general.video"),
        ("general.mp3", "general.audio"),
        ("general.aac", "general.audio"),
        ("general.flac", "general.audio"),
        ("com.microsoft.waveform-audio", "general.audio"),
        ("general.ogg", "general.audio"),
        ("general.mpeg-4-audio", "general.audio"),
        ("general.opus", "general.audio"),
        ("general.amr", "general.audio"),
        ("general.midi", "general.audio"),
        ("com.adobe.pdf", "general.composite-object"),
        ("com.microsoft.word.doc", "general.composite-object"),
        ("com.microsoft.excel.xls", "general.composite-object"),
        ("com.microsoft.powerpoint.ppt", "general.composite-object"),
        (DOCX, "org.openxmlformats.openxml"),
        ("org.openxmlformats.spreadsheetml.sheet", "general.archive"),
        ("org.openxmlformats.presentationml.presentation", "general.archive"),
        ("org.oasis.opendocument.text", "general.composite-object"),
        ("org.oasis.opendocument.spreadsheet", "general.composite-object"),
        ("org.oasis.opendocument.presentation", "general.composite-object"),
        ("general.epub", "general.composite-object"),
        ("openharmony.styled-string", "general.composite-object"),
        ("openharmony.hdoc", "general.composite-object"),
        ("openharmony.hinote", "general.composite-object"),
        ("general.zip-archive", "general.archive"),
        ("general.tar-archive", "general.archive"),
        ("org.gnu.gnu-zip-archive", "general.archive"),
        ("general.bz2-archive", "general.archive"),
        ("org.7-zip.7-zip-archive", "general.archive"),
        ("com.rarlab.rar-archive", "general.archive"),
        ("org.tukaani.xz-archive", "general.archive"),
        ("com.facebook.zstd-archive", "general.archive"),
        ("general.executable", "general.object"),
        ("general.truetype-font", "general.font"),
        ("general.opentype-font", "general.font"),
        ("org.w3.woff", "general.font"),
        ("org.w3.woff2", "general.font"),
        ("general.location", "general.navigation"),
        ("general.database", "general.object"),
        ("general.message", "general.object"),
        ("general.file-uri", "general.uri"),
        ("general.octet-stream", "general.object"),
        ("general.content-form", "general.object"),
        ("openharmony.form", "general.object"),
        ("openharmony.app-item", "general.object"),
        ("openharmony.atomic-service", "general.object"),
        ("openharmony.want", "general.object"),
    ],
)
def test_required_families(type_id: str, ancestor: str) -> None:
    assert _descriptor(type_id).is_lower_level_type(ancestor)


def test_exact_closures() -> None:
    assert REG.ancestors(DOCX) == {
        DOCX,
        "general.composite-object",
        "org.openxmlformats.openxml",
        "general.archive",
        "general.object",
    }
    assert REG.ancestors("general.jpeg") == {
        "general.jpeg",
        "general.image",
        "general.media",
        "general.object",
    }
    assert REG.ancestors("general.python-script") == {
        "general.python-script",
        "general.script",
        "general.source-code",
        "general.text",
        "general.object",
    }
    assert REG.ancestors("openharmony.hap") == {
        "openharmony.hap",
        "openharmony.package",
        "general.directory",
        "general.entity",
    }


def test_files_and_media_are_orthogonal() -> None:
    assert not _descriptor("general.image").belongs_to("general.file")
    assert not _descriptor("general.jpeg").belongs_to("general.entity")
    assert not _descriptor("general.file").belongs_to("general.object")


def test_preset_descriptor_fields() -> None:
    d = _descriptor("general.plain-text")
    assert d.type_id == "general.plain-text"
    assert d.belonging_to_types == ("general.text",)
    assert d.filename_extensions == (".txt", ".text")
    assert d.mime_types == ("text/plain",)
    assert d.description == "Text without markup."
    assert (d.reference_url, d.icon_file) == ("", "")
    assert _descriptor("general.html").filename_extensions == (".html", ".htm")
    assert _descriptor("general.image").mime_types == ("image/*",)
    assert _descriptor("general.octet-stream").mime_types == ("application/octet-stream",)


# -- relations --------------------------------------------------------------------------------------


def test_relations_reflexive_and_strict() -> None:
    jpeg = _descriptor("general.jpeg")
    assert jpeg.belongs_to("general.jpeg")
    assert jpeg.belongs_to("general.image")
    assert jpeg.belongs_to("general.object")
    assert not jpeg.belongs_to("general.png")
    assert not jpeg.is_lower_level_type("general.jpeg")
    assert jpeg.is_lower_level_type("general.media")
    assert not jpeg.is_higher_level_type("general.jpeg")
    assert not jpeg.is_higher_level_type("general.image")
    image = _descriptor("general.image")
    assert image.is_higher_level_type("general.jpeg")
    assert image.is_higher_level_type("com.canon.cr2-raw-image")
    assert not image.is_higher_level_type("general.mp3")
    assert not image.is_lower_level_type("general.jpeg")


def test_multi_parent_docx() -> None:
    docx = _descriptor(DOCX)
    assert docx.belonging_to_types == ("general.composite-object", "org.openxmlformats.openxml")
    for ancestor in ("general.composite-object", "org.openxmlformats.openxml", "general.archive"):
        assert docx.is_lower_level_type(ancestor)
        assert _descriptor(ancestor).is_higher_level_type(DOCX)
    assert not docx.belongs_to("general.zip-archive")
    assert not docx.belongs_to("general.file")


def test_relations_reject_unknown_type_ids() -> None:
    jpeg = _descriptor("general.jpeg")
    for call in (jpeg.belongs_to, jpeg.is_lower_level_type, jpeg.is_higher_level_type, REG.ancestors):
        with pytest.raises(InvalidArgument, match=r"general\.nope"):
            call("general.nope")


def test_equals_compares_type_ids() -> None:
    assert _descriptor("general.png").equals(_descriptor("general.png"))
    assert not _descriptor("general.png").equals(_descriptor("general.gif"))
    assert _descriptor("general.png") == UtdRegistry().get_type_descriptor("general.png")


def test_unknown_type_id_has_no_descriptor() -> None:
    for type_id in ("general.nope", "", "flex.z", "flex.z!!", "flex.zmfrgg", "FLEX.ZH45DEPJOPB4XU"):
        assert REG.get_type_descriptor(type_id) is None, type_id


# -- look-ups ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "first", "all_"),
    [
        (".ts", "general.type-script", ["general.type-script", "general.ts"]),
        (".mts", "general.type-script", ["general.type-script", "general.ts"]),
        (".ogg", "general.ogg", ["general.ogg", "org.xiph.ogg-video"]),
        (
            ".otf",
            "general.opentype-font",
            ["general.opentype-font", "org.oasis.opendocument.formula-template"],
        ),
        (".docx", DOCX, [DOCX]),
        (".txt", "general.plain-text", ["general.plain-text"]),
        (".tar.gz", "org.gnu.gnu-zip-tar-archive", ["org.gnu.gnu-zip-tar-archive"]),
    ],
)
def test_lookup_by_extension(ext: str, first: str, all_: list[str]) -> None:
    assert REG.get_uniform_data_type_by_filename_extension(ext) == first
    assert REG.get_uniform_data_types_by_filename_extension(ext) == all_


def test_lookup_is_case_insensitive() -> None:
    for ext in (".JPG", ".Jpeg", ".jPe"):
        assert REG.get_uniform_data_type_by_filename_extension(ext) == "general.jpeg"
    assert REG.get_uniform_data_types_by_mime_type("IMAGE/PNG") == ["general.png"]
    assert REG.get_uniform_data_type_by_mime_type("Application/PDF") == "com.adobe.pdf"
    assert REG.get_uniform_data_type_by_filename_extension(".XyZ") == (
        REG.get_uniform_data_type_by_filename_extension(".xyz")
    )


def test_lookup_by_mime_type() -> None:
    assert REG.get_uniform_data_type_by_mime_type("text/plain") == "general.plain-text"
    assert REG.get_uniform_data_type_by_mime_type("text/plain; charset=UTF-8") == "general.plain-text"
    assert REG.get_uniform_data_types_by_mime_type("text/calendar") == ["general.calendar", "general.ics"]
    assert REG.get_uniform_data_type_by_mime_type("application/octet-stream") == "general.octet-stream"
    assert REG.get_uniform_data_type_by_mime_type("*/*") == "general.object"


def test_lookup_by_mime_wildcard() -> None:
    assert REG.get_uniform_data_type_by_mime_type("image/*") == "general.image"
    images = REG.get_uniform_data_types_by_mime_type("image/*")
    assert images[0] == "general.image"
    assert {"general.jpeg", "general.png", "com.adobe.raw-image", "com.autodesk.dwg"} <= set(images)
    assert "general.mp3" not in images
    for type_id in images:
        assert any(m.startswith("image/") for m in _descriptor(type_id).mime_types), type_id
    assert REG.get_uniform_data_types_by_mime_type("font/*") == [
        "general.font",
        "general.truetype-font",
        "general.truetype-collection-font",
        "general.opentype-font",
        "org.w3.woff",
        "org.w3.woff2",
    ]
    raws = REG.get_uniform_data_types_by_mime_type("image/*", belongs_to="general.raw-image")
    assert raws[0] == "com.adobe.raw-image"
    assert all(_descriptor(t).is_lower_level_type("general.raw-image") for t in raws)


def test_belongs_to_constraint() -> None:
    by_ext = REG.get_uniform_data_type_by_filename_extension
    assert by_ext(".ts", belongs_to="general.video") == "general.ts"
    assert by_ext(".ts", belongs_to="general.text") == "general.type-script"
    assert by_ext(".ts", belongs_to="general.ts") == "general.ts"  # reflexive
    assert REG.get_uniform_data_types_by_filename_extension(".ts", belongs_to="general.media") == [
        "general.ts"
    ]
    assert by_ext(".ogg", belongs_to="general.video") == "org.xiph.ogg-video"
    assert REG.get_uniform_data_types_by_mime_type("audio/3gpp", belongs_to="general.media") == [
        "general.3gpp"
    ]
    flex = by_ext(".ts", belongs_to="general.image")
    d = REG.get_type_descriptor(flex)
    assert d is not None
    assert d.belonging_to_types == ("general.image",)
    assert d.filename_extensions == (".ts",)
    assert REG.get_uniform_data_types_by_filename_extension(".ts", belongs_to="general.image") == [flex]


def test_belongs_to_must_be_a_registered_type() -> None:
    flex = REG.get_uniform_data_type_by_filename_extension(".xyz")
    for belongs_to in ("general.nope", flex, ""):
        with pytest.raises(InvalidArgument, match="belongs_to"):
            REG.get_uniform_data_type_by_filename_extension(".txt", belongs_to=belongs_to)
        with pytest.raises(InvalidArgument, match="belongs_to"):
            REG.get_uniform_data_types_by_mime_type("text/plain", belongs_to=belongs_to)


@pytest.mark.parametrize("ext", ["txt", "", ".", "." + "a" * 127])
def test_invalid_extension(ext: str) -> None:
    with pytest.raises(InvalidArgument):
        REG.get_uniform_data_type_by_filename_extension(ext)
    with pytest.raises(InvalidArgument):
        REG.get_uniform_data_types_by_filename_extension(ext)


@pytest.mark.parametrize("mime", ["", "  ", "; charset=utf-8", "a/" + "b" * 126])
def test_invalid_mime_type(mime: str) -> None:
    with pytest.raises(InvalidArgument):
        REG.get_uniform_data_type_by_mime_type(mime)
    with pytest.raises(InvalidArgument):
        REG.get_uniform_data_types_by_mime_type(mime)


# -- flexible types ---------------------------------------------------------------------------------


def test_flexible_id_matches_openharmony_encoding() -> None:
    assert REG.get_uniform_data_type_by_filename_extension(".xyz") == "flex.z" + _oh_base32(b"?:2=.xyz")
    assert REG.get_uniform_data_type_by_filename_extension(".xyz") == "flex.zh45depjopb4xu"
    assert REG.get_uniform_data_type_by_mime_type("image/x-foo", belongs_to="general.image") == (
        "flex.z" + _oh_base32(b"?0=general.image:1=image/x-foo")
    )
    assert REG.get_uniform_data_type_by_mime_type("Foo/Bar") == "flex.z" + _oh_base32(b"?:1=foo/bar")


def test_flexible_descriptor_of_extension() -> None:
    flex = REG.get_uniform_data_type_by_filename_extension(".XYZ")
    d = REG.get_type_descriptor(flex)
    assert d is not None
    assert (d.type_id, d.belonging_to_types) == (flex, ("general.file",))
    assert (d.filename_extensions, d.mime_types, d.description) == ((".xyz",), (), "")
    assert d.belongs_to(flex) and d.belongs_to("general.file") and d.belongs_to("general.entity")
    assert not d.belongs_to("general.object")
    assert d.is_lower_level_type("general.file") and not d.is_lower_level_type(flex)
    assert not d.is_higher_level_type("general.file")
    assert _descriptor("general.file").is_higher_level_type(flex)
    assert REG.ancestors(flex) == {flex, "general.file", "general.entity"}


def test_flexible_descriptor_of_mime_type() -> None:
    flex = REG.get_uniform_data_type_by_mime_type("application/x-foo")
    d = REG.get_type_descriptor(flex)
    assert d is not None
    assert (d.belonging_to_types, d.mime_types, d.filename_extensions) == (
        ("general.object",),
        ("application/x-foo",),
        (),
    )
    under_image = REG.get_uniform_data_type_by_mime_type("image/x-foo", belongs_to="general.image")
    d = REG.get_type_descriptor(under_image)
    assert d is not None and d.belonging_to_types == ("general.image",)
    assert d.belongs_to("general.media") and _descriptor("general.media").is_higher_level_type(under_image)
    assert not _descriptor("general.video").is_higher_level_type(under_image)


def test_flexible_values_with_separators_round_trip() -> None:
    fields = _flexible.FlexibleFields("general.text", "a:b\\c=d", ".x:y\\")
    assert _flexible.decode(_flexible.encode(fields)) == fields


def test_non_canonical_flexible_ids_are_rejected() -> None:
    body = _oh_base32(b"?:2=.xyz")
    assert _flexible.decode("flex.z" + body) == _flexible.FlexibleFields(None, None, ".xyz")
    for payload in (
        b"?2=.xyz",
        b"?:2=.xyz:2=.abc",
        b"?:3=x",
        b"?0=general.text",
        b":2=.xyz",
        b"?:2=",
        b"?:2=a\\",
    ):
        assert _flexible.decode("flex.z" + _oh_base32(payload)) is None, payload
    assert _flexible.decode("flex.z" + body.upper()) is None
    assert _flexible.decode("flex.z" + _oh_base32(b"?:2=.\xff")) is None


_VALUES = st.text(min_size=1, max_size=_flexible.MAX_VALUE_LENGTH)


@given(
    belongs_to=st.none() | st.sampled_from(PRESET_IDS),
    mime=st.none() | _VALUES,
    ext=st.none() | _VALUES,
)
def test_flexible_fields_round_trip(belongs_to: str | None, mime: str | None, ext: str | None) -> None:
    assume(mime is not None or ext is not None)
    fields = _flexible.FlexibleFields(belongs_to, mime, ext)
    type_id = _flexible.encode(fields)
    assert type_id.startswith("flex.z")
    assert set(type_id[6:]) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert _flexible.decode(type_id) == fields


@given(ext=st.text(min_size=1, max_size=120).map(lambda s: "." + s))
def test_unknown_extension_round_trips(ext: str) -> None:
    assume(len(ext.lower()) <= _flexible.MAX_VALUE_LENGTH)
    found = REG.get_uniform_data_types_by_filename_extension(ext)
    assume(len(found) == 1 and _flexible.is_flexible(found[0]))
    d = REG.get_type_descriptor(found[0])
    assert d is not None
    assert d.filename_extensions == (ext.lower(),)
    assert d.belonging_to_types == ("general.file",)


@given(mime=st.text(min_size=1, max_size=120).filter(lambda s: ";" not in s and s == s.strip()))
def test_unknown_mime_type_round_trips(mime: str) -> None:
    assume(len(mime.lower()) <= _flexible.MAX_VALUE_LENGTH)
    found = REG.get_uniform_data_types_by_mime_type(mime, belongs_to="general.media")
    assume(len(found) == 1 and _flexible.is_flexible(found[0]))
    d = REG.get_type_descriptor(found[0])
    assert d is not None
    assert d.mime_types == (mime.lower(),)
    assert d.belonging_to_types == ("general.media",)


# -- the order belongs_to defines ---------------------------------------------------------------------


@given(st.data())
def test_belongs_to_is_a_partial_order(data: st.DataObject) -> None:
    a = data.draw(st.sampled_from(PRESET_IDS))
    b = data.draw(st.sampled_from(sorted(REG.ancestors(a))))
    c = data.draw(st.sampled_from(sorted(REG.ancestors(b))))
    da, db = _descriptor(a), _descriptor(b)
    assert da.belongs_to(a)
    assert da.belongs_to(b) and db.belongs_to(c) and da.belongs_to(c)
    assert db.belongs_to(a) == (a == b)
    assert da.is_lower_level_type(b) == (a != b) == db.is_higher_level_type(a)
    other = data.draw(st.sampled_from(PRESET_IDS))
    if da.belongs_to(other) and _descriptor(other).belongs_to(a):
        assert other == a


def test_belongs_to_is_antisymmetric_over_all_pairs() -> None:
    for a in PRESET_IDS:
        for b in REG.ancestors(a) - {a}:
            assert a not in REG.ancestors(b), (a, b)


@given(
    ext=st.sampled_from(sorted({e for t in PRESET_IDS for e in _descriptor(t).filename_extensions})),
    belongs_to=st.none() | st.sampled_from(PRESET_IDS),
)
def test_singular_lookup_is_the_first_of_the_plural(ext: str, belongs_to: str | None) -> None:
    assert (
        REG.get_uniform_data_type_by_filename_extension(ext, belongs_to)
        == (REG.get_uniform_data_types_by_filename_extension(ext, belongs_to)[0])
    )
    for mime in ("image/*", "text/plain", "audio/*", "video/mp2t"):
        assert (
            REG.get_uniform_data_type_by_mime_type(mime, belongs_to)
            == (REG.get_uniform_data_types_by_mime_type(mime, belongs_to)[0])
        )


# -- custom types -----------------------------------------------------------------------------------


def _note(name: str = "note", /, **fields: object) -> dict[str, object]:
    declaration: dict[str, object] = {
        "type_id": f"{OWNER}.{name}",
        "belonging_to_types": ["general.plain-text"],
        "filename_extensions": [f".{name}"],
        "mime_types": [f"application/x-{name}"],
        "description": "A note.",
    }
    declaration.update(fields)
    return declaration


def _state(reg: UtdRegistry) -> tuple[list[str], list[dict[str, object]], list[str]]:
    return (
        reg.type_ids(),
        reg.custom_declarations(),
        reg.get_uniform_data_types_by_filename_extension(".note"),
    )


def _refused(
    reg: UtdRegistry, error: type[UdmfError], declarations: list[dict[str, object]], owner: str = OWNER
) -> None:
    """`declarations` is refused with `error` and the registry is left exactly as it was."""
    before = _state(reg)
    with pytest.raises(error):
        reg.register_types(declarations, owner)
    assert _state(reg) == before


def test_register_and_look_up() -> None:
    reg = UtdRegistry()
    reg.register_types([_note(), _note("checklist", belonging_to_types=[f"{OWNER}.note"])], OWNER)
    assert reg.type_ids() == [*PRESET_IDS, f"{OWNER}.note", f"{OWNER}.checklist"]
    assert reg.get_uniform_data_type_by_filename_extension(".NOTE") == f"{OWNER}.note"
    assert reg.get_uniform_data_types_by_mime_type("application/x-checklist") == [f"{OWNER}.checklist"]
    checklist = reg.get_type_descriptor(f"{OWNER}.checklist")
    assert checklist is not None
    assert checklist.belonging_to_types == (f"{OWNER}.note",)
    assert reg.ancestors(checklist.type_id) == {
        f"{OWNER}.checklist",
        f"{OWNER}.note",
        "general.plain-text",
        "general.text",
        "general.object",
    }
    assert checklist.is_lower_level_type("general.text")
    text = reg.get_type_descriptor("general.text")
    assert text is not None and text.is_higher_level_type(checklist.type_id)
    assert reg.get_uniform_data_types_by_mime_type("text/*")[0] == "general.text"
    assert REG.get_type_descriptor(f"{OWNER}.note") is None  # registries are independent


def test_custom_types_come_after_presets_in_lookups() -> None:
    reg = UtdRegistry()
    reg.register_types([_note(filename_extensions=[".ts"], belonging_to_types=["general.video"])], OWNER)
    assert reg.get_uniform_data_types_by_filename_extension(".ts") == [
        "general.type-script",
        "general.ts",
        f"{OWNER}.note",
    ]
    assert reg.get_uniform_data_types_by_filename_extension(".ts", belongs_to="general.ts") == ["general.ts"]


def test_parents_may_come_later_in_the_batch_or_from_another_owner() -> None:
    reg = UtdRegistry()
    reg.register_types([_note("child", belonging_to_types=[f"{OWNER}.parent"]), _note("parent")], OWNER)
    other = "com.example.todo"
    reg.register_types([{"type_id": f"{other}.task", "belonging_to_types": [f"{OWNER}.child"]}], other)
    assert f"{OWNER}.parent" in reg.ancestors(f"{other}.task")


def test_custom_declarations_round_trip() -> None:
    reg = UtdRegistry()
    reg.register_types([_note("child", belonging_to_types=[f"{OWNER}.note"]), _note()], OWNER)
    reg.register_types(
        [{"type_id": "com.example.todo.task", "belonging_to_types": ["general.text"]}], "com.example.todo"
    )
    exported = reg.custom_declarations()
    assert exported[0] == {
        "type_id": f"{OWNER}.child",
        "belonging_to_types": [f"{OWNER}.note"],
        "description": "A note.",
        "reference_url": "",
        "icon_file": "",
        "filename_extensions": [".child"],
        "mime_types": ["application/x-child"],
        "owner_bundle": OWNER,
    }
    assert json.loads(json.dumps(exported)) == exported
    again = UtdRegistry(exported)
    assert again.type_ids() == reg.type_ids()
    assert again.custom_declarations() == exported
    assert again.get_type_descriptor(f"{OWNER}.child") == reg.get_type_descriptor(f"{OWNER}.child")
    with pytest.raises(PermissionDenied):
        again.unregister_types(["com.example.todo.task"], OWNER)


def test_persisted_declarations_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="owner_bundle"):
        UtdRegistry([_note()])
    with pytest.raises(InvalidArgument, match="unknown parent"):
        UtdRegistry([{**_note(belonging_to_types=["com.example.gone"]), "owner_bundle": OWNER}])
    with pytest.raises(InvalidArgument, match="twice"):
        UtdRegistry([{**_note(), "owner_bundle": OWNER}, {**_note(), "owner_bundle": "com.example"}])
    with pytest.raises(AlreadyExists, match="preset"):
        UtdRegistry(
            [{"type_id": "general.png", "belonging_to_types": ["general.image"], "owner_bundle": "general"}]
        )


@pytest.mark.parametrize(
    "type_id",
    [
        f"{OWNER}.no_te",
        f"{OWNER}.n ote",
        f"{OWNER}.nöte",
        f"{OWNER}." + "a" * (127 - len(OWNER)),
        "com.other.note",
        f"{OWNER}x.note",
        OWNER,
        f"{OWNER}.",
        "",
    ],
)
def test_type_id_rules(type_id: str) -> None:
    _refused(UtdRegistry(), InvalidArgument, [_note(), _note(type_id=type_id)])


def test_type_id_of_127_characters_is_allowed() -> None:
    reg = UtdRegistry()
    type_id = f"{OWNER}." + "a" * (126 - len(OWNER))
    assert len(type_id) == 127
    reg.register_types([_note(type_id=type_id)], OWNER)
    assert reg.get_type_descriptor(type_id) is not None


def test_collisions() -> None:
    reg = UtdRegistry()
    _refused(
        reg, AlreadyExists, [{"type_id": "general.jpeg", "belonging_to_types": ["general.image"]}], "general"
    )
    reg.register_types([_note()], OWNER)
    _refused(reg, AlreadyExists, [_note("other"), _note()])
    _refused(reg, AlreadyExists, [_note()], "com.example")  # also for another owner whose prefix fits
    _refused(reg, InvalidArgument, [_note("twice"), _note("twice")])


def test_batch_size_limit() -> None:
    reg = UtdRegistry()
    _refused(reg, InvalidArgument, [_note(f"n{i}") for i in range(51)])
    _refused(reg, InvalidArgument, [])
    reg.register_types([_note(f"n{i}") for i in range(50)], OWNER)
    assert len(reg.custom_declarations()) == 50


@pytest.mark.parametrize("key", ["belonging_to_types", "filename_extensions", "mime_types"])
def test_list_limits(key: str) -> None:
    values = {
        "belonging_to_types": [PRESET_IDS[i] for i in range(51)],
        "filename_extensions": [f".e{i}" for i in range(51)],
        "mime_types": [f"application/x-{i}" for i in range(51)],
    }[key]
    reg = UtdRegistry()
    _refused(reg, InvalidArgument, [_note(**{key: values})])
    reg.register_types([_note(**{key: values[:50]})], OWNER)


def test_parent_rules() -> None:
    reg = UtdRegistry()
    _refused(reg, InvalidArgument, [_note(belonging_to_types=[])])
    _refused(reg, InvalidArgument, [_note(belonging_to_types=["general.nope"])])
    flex = reg.get_uniform_data_type_by_filename_extension(".xyz")
    _refused(reg, InvalidArgument, [_note(belonging_to_types=[flex])])
    _refused(reg, InvalidArgument, [_note(belonging_to_types=["general.text", "general.nope"])])


def test_cycles_are_refused() -> None:
    reg = UtdRegistry()
    a, b, c = f"{OWNER}.a", f"{OWNER}.b", f"{OWNER}.c"
    _refused(reg, InvalidArgument, [_note("a", belonging_to_types=[a])])
    _refused(
        reg,
        InvalidArgument,
        [
            _note("a", belonging_to_types=["general.text", c]),
            _note("b", belonging_to_types=[a]),
            _note("c", belonging_to_types=[b]),
        ],
    )
    with pytest.raises(InvalidArgument, match="cycle"):
        reg.register_types([_note("a", belonging_to_types=[b]), _note("b", belonging_to_types=[a])], OWNER)


@pytest.mark.parametrize(
    "fields",
    [
        {"filename_extensions": ["note"]},
        {"filename_extensions": ["."]},
        {"filename_extensions": ["." + "a" * 127]},
        {"mime_types": [""]},
        {"mime_types": ["a/" + "b" * 126]},
        {"description": "d" * 256},
        {"reference_url": "u" * 256},
        {"icon_file": "i" * 256},
        {"description": 3},
        {"filename_extensions": ".note"},
        {"mime_types": [3]},
        {"owner_bundle": OWNER},
        {"colour": "red"},
    ],
)
def test_field_rules(fields: dict[str, object]) -> None:
    _refused(UtdRegistry(), InvalidArgument, [_note("ok"), _note(**fields)])


def test_field_limits_are_inclusive() -> None:
    reg = UtdRegistry()
    declaration = _note(
        filename_extensions=["." + "a" * 126],
        mime_types=["a/" + "b" * 125],
        description="d" * 255,
        reference_url="u" * 255,
        icon_file="i" * 255,
    )
    reg.register_types([declaration], OWNER)
    assert reg.get_uniform_data_type_by_filename_extension("." + "A" * 126) == f"{OWNER}.note"


def test_owner_bundle_is_required() -> None:
    _refused(UtdRegistry(), InvalidArgument, [_note()], "")


def test_total_custom_types_limit() -> None:
    reg = UtdRegistry()
    for batch in range(4):
        reg.register_types([_note(f"b{batch}n{i}") for i in range(50)], OWNER)
    assert len(reg.custom_declarations()) == 200
    _refused(reg, ResourceExhausted, [_note("one-too-many")])
    reg.unregister_types([f"{OWNER}.b0n0"], OWNER)
    reg.register_types([_note("fits-again")], OWNER)
    with pytest.raises(ResourceExhausted):
        UtdRegistry([{**_note(f"n{i}"), "owner_bundle": OWNER} for i in range(201)])


# -- unregistering ----------------------------------------------------------------------------------


def _unregister_refused(
    reg: UtdRegistry, error: type[UdmfError], type_ids: list[str], owner: str = OWNER
) -> None:
    before = _state(reg)
    with pytest.raises(error):
        reg.unregister_types(type_ids, owner)
    assert _state(reg) == before


def test_unregister() -> None:
    reg = UtdRegistry()
    reg.register_types([_note(), _note("checklist", belonging_to_types=[f"{OWNER}.note"])], OWNER)
    held = reg.get_type_descriptor(f"{OWNER}.checklist")
    reg.unregister_types([f"{OWNER}.checklist", f"{OWNER}.note", f"{OWNER}.note"], OWNER)
    assert reg.type_ids() == PRESET_IDS
    assert reg.custom_declarations() == []
    assert reg.get_type_descriptor(f"{OWNER}.note") is None
    assert _flexible.is_flexible(reg.get_uniform_data_type_by_filename_extension(".note"))
    assert held is not None and held.belongs_to(f"{OWNER}.checklist")  # still answers from its parents
    with pytest.raises(InvalidArgument):
        held.belongs_to(f"{OWNER}.note")
    reg.register_types([_note()], OWNER)  # the id is free again
    assert reg.get_uniform_data_type_by_filename_extension(".note") == f"{OWNER}.note"


def test_unregister_rules() -> None:
    reg = UtdRegistry()
    reg.register_types([_note(), _note("checklist", belonging_to_types=[f"{OWNER}.note"])], OWNER)
    reg.register_types(
        [{"type_id": "com.example.todo.task", "belonging_to_types": [f"{OWNER}.note"]}], "com.example.todo"
    )
    _unregister_refused(reg, PermissionDenied, [f"{OWNER}.checklist"], "com.example.todo")
    _unregister_refused(reg, PermissionDenied, ["general.jpeg"])
    _unregister_refused(reg, NotFound, [f"{OWNER}.checklist", f"{OWNER}.nope"])
    _unregister_refused(reg, FailedPrecondition, [f"{OWNER}.note"])  # checklist (ours) is under it
    _unregister_refused(reg, FailedPrecondition, [f"{OWNER}.note", f"{OWNER}.checklist"])  # so is the task
    _unregister_refused(reg, InvalidArgument, [])
    _unregister_refused(reg, InvalidArgument, [f"{OWNER}.checklist"], "")
    reg.unregister_types(["com.example.todo.task"], "com.example.todo")
    reg.unregister_types([f"{OWNER}.note", f"{OWNER}.checklist"], OWNER)
    assert reg.custom_declarations() == []

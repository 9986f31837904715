"""UnifiedData ⇄ DataPart streams: blobs and chunks, the incremental Assembler, blob sinks, bad streams."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udmf import _wire, values
from udmf.data import EPOCH, ShareOptions, UnifiedData, UnifiedDataProperties, UnifiedRecord
from udmf.errors import InvalidArgument, UdmfError
from udmf.structs import HTML, ApplicationDefinedRecord, ContentForm, FileUri, PixelMap, PlainText
from udmf.v1 import udmf_pb2 as pb

# ---- strategies ----

scalars = (
    st.none()
    | st.booleans()
    | st.integers(values.INT64_MIN, values.INT64_MAX)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=80)
)
plain = st.recursive(
    scalars, lambda inner: st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=8
)
struct_values = st.one_of(
    st.builds(PlainText, st.text(max_size=60), st.text(max_size=10)),
    st.builds(HTML, st.text(max_size=60), st.text(max_size=60)),
    st.builds(FileUri, st.text(max_size=30), st.just("general.jpeg")),
    st.builds(PixelMap, st.binary(max_size=90), st.integers(0, 64), st.integers(0, 64)),
    st.builds(
        ContentForm, st.text(max_size=20), st.binary(max_size=70), st.text(max_size=5), st.binary(max_size=70)
    ),
    st.builds(ApplicationDefinedRecord, st.just("ApplicationDefined.notes"), st.binary(max_size=70)),
)
TYPES = [
    "general.object",
    "general.png",
    "general.plain-text",
    "general.html",
    "com.example.x",
    "general.file",
]


@st.composite
def records(draw: st.DrawFn) -> UnifiedRecord:
    record = UnifiedRecord()
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            record.add_entry(draw(struct_values))
        else:
            record.add_entry(draw(st.sampled_from(TYPES)), draw(plain))
    return record


@st.composite
def unified_data(draw: st.DrawFn) -> UnifiedData:
    data = UnifiedData()
    for record in draw(st.lists(records(), min_size=0, max_size=4)):
        data.add_record(record)
    data.properties = UnifiedDataProperties._read(
        draw(st.text(max_size=10)),
        draw(st.dictionaries(st.text(max_size=5), plain, max_size=3)),
        draw(st.sampled_from(ShareOptions)),
        EPOCH + timedelta(milliseconds=draw(st.integers(0, 2**41))),
    )
    return data


def assemble(parts: list[Any], **kwargs: Any) -> list[UnifiedData]:
    assembler = _wire.Assembler(**kwargs)
    for part in parts:
        assembler.feed(part)
    return assembler.finish()


# ---- round trips ----


@given(unified_data(), st.integers(1, 100), st.integers(1, 40))
@settings(max_examples=300)
def test_encode_then_assemble_gives_equal_data(data: UnifiedData, threshold: int, chunk: int) -> None:
    parts = list(_wire.encode(data, blob_threshold=threshold, chunk_bytes=chunk))
    wire = [pb.DataPart.FromString(p.SerializeToString()) for p in parts]
    (back,) = assemble(wire)
    assert back == data
    assert back.get_types() == data.get_types()
    assert all(len(p.chunk) <= chunk for p in parts if p.WhichOneof("part") == "chunk")


@given(st.lists(unified_data(), min_size=1, max_size=3), st.integers(1, 64))
@settings(max_examples=100)
def test_several_data_in_a_row(many: list[UnifiedData], threshold: int) -> None:
    parts = [p for d in many for p in _wire.encode(d, blob_threshold=threshold, chunk_bytes=7)]
    assert assemble(parts) == many


# ---- the stream's shape ----


def kinds(parts: list[pb.DataPart]) -> list[str]:
    return [str(p.WhichOneof("part")) for p in parts]


def test_small_values_travel_inline() -> None:
    data = UnifiedData(UnifiedRecord(PlainText("hi")))
    data.add_record(UnifiedRecord("general.png", b"\x89PNG"))
    parts = list(_wire.encode(data))
    assert kinds(parts) == ["header", "entry", "entry"]
    assert parts[0].header.record_count == 2
    assert parts[1].entry.value.object_value.fields["textContent"].string_value == "hi"
    assert (parts[2].entry.record, parts[2].entry.type, parts[2].entry.blob_size) == (1, "general.png", 0)


def test_a_large_value_is_a_blob_in_chunks() -> None:
    payload = bytes(range(256)) * (3 * 4096 + 1)  # 3 MiB + 256 bytes
    parts = list(_wire.encode(UnifiedData(UnifiedRecord("general.png", payload))))
    assert kinds(parts) == ["header", "entry", "chunk", "chunk", "chunk", "chunk"]
    entry = parts[1].entry
    assert (entry.blob_size, entry.blob_field, entry.blob_text) == (len(payload), "", False)
    assert entry.value.WhichOneof("kind") is None  # the blob is not also inline
    assert [len(p.chunk) for p in parts[2:]] == [_wire.CHUNK_BYTES] * 3 + [256]
    assert b"".join(p.chunk for p in parts[2:]) == payload


def test_text_blobs_are_utf8_and_the_threshold_counts_bytes() -> None:
    text = "é" * (_wire.BLOB_THRESHOLD // 2)  # 2 bytes each: exactly the threshold
    parts = list(_wire.encode(UnifiedData(UnifiedRecord("general.plain-text", text))))
    assert parts[1].entry.blob_text and parts[1].entry.blob_size == _wire.BLOB_THRESHOLD
    shorter = text[:-1]
    assert kinds(list(_wire.encode(UnifiedData(UnifiedRecord("general.plain-text", shorter))))) == [
        "header",
        "entry",
    ]


def test_an_objects_largest_field_is_the_blob_and_others_stay_inline() -> None:
    html = HTML("<p>" + "x" * 200, "y" * 100)
    parts = list(_wire.encode(UnifiedData(UnifiedRecord(html)), blob_threshold=50, chunk_bytes=64))
    entry = parts[1].entry
    assert (entry.blob_field, entry.blob_text, entry.blob_size) == ("htmlContent", True, 203)
    assert set(entry.value.object_value.fields) == {"plainContent"}
    assert kinds(parts) == ["header", "entry", "chunk", "chunk", "chunk", "chunk"]
    (back,) = assemble(parts)
    assert back.get_records()[0].get_value() == html


def test_a_field_named_empty_is_never_the_blob() -> None:
    # blob_field "" means the value itself, so an object's "" field must travel inline
    for value, blob_field in (({"": "x" * 100}, None), ({"": "x" * 100, "a": "y" * 60}, "a")):
        parts = list(_wire.encode(UnifiedData(UnifiedRecord("general.object", value)), blob_threshold=50))
        entry = parts[1].entry
        assert (entry.blob_field if entry.blob_size else None) == blob_field
        assert assemble(parts)[0].get_records()[0].get_value() == value


def test_bytes_like_values_are_sliced_not_copied_whole() -> None:
    backing = bytearray(b"ab" * 100)
    data = UnifiedData(UnifiedRecord("general.png", memoryview(backing)[2:]))
    parts = list(_wire.encode(data, blob_threshold=10, chunk_bytes=64))
    assert b"".join(p.chunk for p in parts[2:]) == bytes(backing[2:])


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(InvalidArgument):
        list(_wire.encode(UnifiedData(), blob_threshold=0))
    with pytest.raises(InvalidArgument):
        list(_wire.encode(UnifiedData(), chunk_bytes=0))


def test_records_without_entries_come_back_empty() -> None:
    data = UnifiedData(UnifiedRecord())
    data.add_record(UnifiedRecord(PlainText("x")))
    data.add_record(UnifiedRecord())
    parts = list(_wire.encode(data))
    assert kinds(parts) == ["header", "entry"]
    assert assemble(parts) == [data]


# ---- reads: runtime, progress, sinks ----


def read_header(key: str) -> pb.DataHeader:
    return pb.DataHeader(
        properties=pb.Properties(
            tag="t", timestamp_ms=1_700_000_000_000, share_options=pb.SHARE_OPTIONS_IN_APP
        ),
        record_count=1,
        key=key,
        intention=pb.INTENTION_DRAG,
        writer="com.example.src",
        summary=pb.Summary(summary={"general.png": 300}, total_size=300),
    )


def test_read_headers_give_a_runtime_and_progress_is_tracked() -> None:
    assembler = _wire.Assembler()
    seen = []
    messages = [
        pb.ReadResponse(part=pb.DataPart(header=read_header("udmf://drag/com.example.src/k")), progress=0),
        pb.ReadResponse(
            part=pb.DataPart(entry=pb.Entry(record=0, type="general.png", blob_size=300)), progress=0
        ),
        pb.ReadResponse(part=pb.DataPart(chunk=b"\x01" * 200), progress=66),
        pb.ReadResponse(part=pb.DataPart(chunk=b"\x02" * 100), progress=100),
        pb.ReadResponse(progress=100),  # a part-less message is only progress
    ]
    for message in messages:
        assembler.feed(message)
        seen.append(assembler.progress)
    (data,) = assembler.finish()
    assert seen == [0, 0, 66, 100, 100]
    runtime = data.runtime
    assert runtime is not None
    assert (runtime.key, runtime.intention, runtime.writer) == (
        "udmf://drag/com.example.src/k",
        "Drag",
        "com.example.src",
    )
    assert runtime.summary.summary == {"general.png": 300} and runtime.summary.total_size == 300
    assert data.properties.share_options is ShareOptions.IN_APP
    assert data.properties.timestamp == EPOCH + timedelta(milliseconds=1_700_000_000_000)
    assert data.get_records()[0].get_value() == b"\x01" * 200 + b"\x02" * 100


def test_a_blob_sink_writes_blobs_to_files(tmp_path: Path) -> None:
    record = UnifiedRecord("general.png", b"P" * 100)
    record.add_entry(PlainText("small"))
    data = UnifiedData(record)
    data.add_record(UnifiedRecord(PixelMap(b"\x07" * 80, 4, 5)))
    data.add_record(UnifiedRecord("general.plain-text", "t" * 90))
    infos: list[_wire.BlobInfo] = []
    sink = _wire.file_sink(tmp_path / "out")

    def spy(info: _wire.BlobInfo) -> Path:
        infos.append(info)
        return sink(info)

    (back,) = assemble(list(_wire.encode(data, blob_threshold=64, chunk_bytes=30)), blob_sink=spy)
    first, second, third = back.get_records()
    png = first.get_value()
    assert png == tmp_path / "out" / "0-general.png.png" and png.read_bytes() == b"P" * 100
    assert first.get_entry("general.plain-text") == PlainText("small")  # inline: in memory
    pixels = second.get_value()  # a Path where bytes belong: not a PixelMap, the fields as they came
    assert pixels["width"] == 4 and pixels["pixelMap"].read_bytes() == b"\x07" * 80
    assert pixels["pixelMap"].name == "1-openharmony.pixel-map-pixelMap.bin"
    assert third.get_value().read_text() == "t" * 90 and third.get_value().suffix == ".txt"
    assert [(i.record, i.type, i.field, i.size, i.text) for i in infos] == [
        (0, "general.png", "", 100, False),
        (1, "openharmony.pixel-map", "pixelMap", 80, False),
        (2, "general.plain-text", "", 90, True),
    ]


def test_abort_removes_what_the_sink_wrote(tmp_path: Path) -> None:
    data = UnifiedData(UnifiedRecord("general.png", b"P" * 100))
    data.add_record(UnifiedRecord("general.png", b"Q" * 100))
    parts = list(_wire.encode(data, blob_threshold=10, chunk_bytes=30))
    assembler = _wire.Assembler(_wire.file_sink(tmp_path))
    for part in parts[:-2]:  # the first blob whole, the second begun
        assembler.feed(part)
    assert len(list(tmp_path.iterdir())) == 2
    assembler.abort()
    assert list(tmp_path.iterdir()) == []


# ---- malformed streams ----

HEADER = pb.DataPart(header=pb.DataHeader(record_count=2))


def entry(record: int, type_id: str = "general.png", blob_size: int = 0, **kw: Any) -> pb.DataPart:
    return pb.DataPart(entry=pb.Entry(record=record, type=type_id, blob_size=blob_size, **kw))


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ([entry(0)], "before the first header"),
        ([HEADER, pb.DataPart(chunk=b"x")], "chunk outside a blob"),
        ([HEADER, entry(0, blob_size=3), pb.DataPart(chunk=b"xy")], "ended inside the blob"),
        ([HEADER, entry(0, blob_size=3), entry(1)], "before the blob"),
        ([HEADER, entry(0, blob_size=1), pb.DataPart(chunk=b"xy")], "more than the 1 bytes"),
        ([HEADER, entry(1), entry(0)], "out of order"),
        ([HEADER, entry(2)], "past the header's record count"),
        ([HEADER, entry(0), entry(0)], "two general.png entries"),
        ([HEADER, entry(0, blob_size=2, blob_text=True), pb.DataPart(chunk=b"\xff\xfe")], "not UTF-8"),
        ([HEADER, entry(0, blob_size=10**12)], "larger than"),
    ],
)
def test_malformed_streams_are_data_loss(parts: list[pb.DataPart], match: str) -> None:
    with pytest.raises(UdmfError, match=match) as info:
        assemble(parts)
    assert info.value.code == "DATA_LOSS"


def test_nothing_but_progress_is_no_data() -> None:
    assert assemble([pb.ReadResponse(progress=100)]) == []

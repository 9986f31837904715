"""Reading a write stream into rows and blob files: sizes, blob bytes, limits, nothing left on failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from udmf._blobs import BlobDir
from udmf._ingest import Ingested, ingest
from udmf.config import UdmfConfig
from udmf.errors import InvalidArgument, ResourceExhausted
from udmf.utd import UtdRegistry
from udmf.v1 import udmf_pb2 as pb

REG = UtdRegistry()


def header(records: int = 1) -> pb.DataPart:
    return pb.DataPart(header=pb.DataHeader(record_count=records))


def text(s: str, record: int = 0, type_id: str = "general.plain-text") -> pb.DataPart:
    return pb.DataPart(entry=pb.Entry(record=record, type=type_id, value=pb.Value(string_value=s)))


def blob_entry(size: int, type_id: str = "general.file", record: int = 0, **kw: object) -> pb.DataPart:
    return pb.DataPart(entry=pb.Entry(record=record, type=type_id, blob_size=size, **kw))  # type: ignore[arg-type]


def chunks(data: bytes, size: int = 4096) -> list[pb.DataPart]:
    return [pb.DataPart(chunk=data[i : i + size]) for i in range(0, len(data), size)]


async def _aiter(parts: Iterable[pb.DataPart]) -> AsyncIterator[pb.DataPart]:
    for part in parts:
        yield part


@pytest.fixture
def blobs(tmp_path: Path) -> BlobDir:
    b = BlobDir(tmp_path / "blobs")
    b.ensure()
    return b


def run(parts: Iterable[pb.DataPart], blobs: BlobDir, **config: object) -> Ingested:
    cfg = UdmfConfig(blobs.path.parent, inline_blob_bytes=1000, **config)  # type: ignore[arg-type]
    return asyncio.run(ingest(_aiter(parts), REG, cfg, blobs))


def test_small_values_and_inline_blobs(blobs: BlobDir) -> None:
    got = run([header(2), text("hi"), blob_entry(5), *chunks(b"hello", 2), text("yo", record=1)], blobs)
    assert [(e.record, e.type, e.blob, e.blob_file) for e in got.entries] == [
        (0, "general.plain-text", None, None),
        (0, "general.file", b"hello", None),
        (1, "general.plain-text", None, None),
    ]
    hi = pb.Value(string_value="hi").ByteSize()
    assert got.summary == {"general.plain-text": 2 * hi, "general.file": 5}
    assert got.total_size == 2 * hi + 5
    assert got.files == []
    assert blobs.names() == set()


def test_large_blobs_stream_to_files(blobs: BlobDir) -> None:
    data = bytes(range(251)) * 3000  # 753 KB, several write batches
    got = run([header(), blob_entry(len(data)), *chunks(data, 65536)], blobs)
    (e,) = got.entries
    assert e.blob is None
    assert e.blob_file is not None
    assert got.files == [e.blob_file]
    assert (blobs.path / e.blob_file).read_bytes() == data


def test_utf8_text_blobs(blobs: BlobDir) -> None:
    data = "héllo wörld ".encode() * 200
    got = run(
        [header(), blob_entry(len(data), "general.plain-text", blob_text=True), *chunks(data, 7)], blobs
    )
    assert got.entries[0].blob_file is not None  # cut mid-character, still valid
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        run(
            [
                header(),
                blob_entry(3, "general.plain-text", blob_text=True),
                pb.DataPart(chunk=b"\xff\xfe\xfd"),
            ],
            blobs,
        )


@pytest.mark.parametrize("size", [10, 5000])
def test_blob_bytes_must_add_up(blobs: BlobDir, size: int) -> None:
    data = b"x" * size
    with pytest.raises(InvalidArgument, match=f"blob_size is {size + 1} but {size} bytes came"):
        run([header(), blob_entry(size + 1), *chunks(data)], blobs)
    with pytest.raises(InvalidArgument, match=f"blob_size is {size + 1} but {size} bytes came"):
        run([header(2), blob_entry(size + 1), *chunks(data), text("x", record=1)], blobs)
    with pytest.raises(InvalidArgument, match=f"more blob bytes than its blob_size of {size - 1}"):
        run([header(), blob_entry(size - 1), *chunks(data)], blobs)
    assert blobs.names() == set()


def test_stream_shape(blobs: BlobDir) -> None:
    with pytest.raises(InvalidArgument, match="starts with a header part, not entry"):
        run([text("x")], blobs)
    with pytest.raises(InvalidArgument, match="the stream ended before the header"):
        run([], blobs)
    with pytest.raises(InvalidArgument, match="a second header part"):
        run([header(), text("x"), header()], blobs)
    with pytest.raises(InvalidArgument, match="a chunk part without an entry"):
        run([header(), text("x"), pb.DataPart(chunk=b"x")], blobs)
    with pytest.raises(InvalidArgument, match="an empty data part"):
        run([header(), pb.DataPart()], blobs)
    with pytest.raises(InvalidArgument, match="unknown share_options 9"):
        run(
            [
                pb.DataPart(header=pb.DataHeader(record_count=1, properties=pb.Properties(share_options=9))),
                text("x"),
            ],
            blobs,
        )  # type: ignore[arg-type]


def test_the_size_limit_fails_at_the_entry_that_crosses_it(blobs: BlobDir) -> None:
    first = b"a" * 3000
    sent: list[str] = []

    def parts() -> Iterable[pb.DataPart]:
        yield header(2)
        yield blob_entry(len(first))
        yield from chunks(first)
        sent.append("second entry")
        yield blob_entry(10_000, record=1)
        sent.append("its bytes")  # never reached: the entry's announced size already crosses the limit
        yield from chunks(b"b" * 10_000)

    with pytest.raises(ResourceExhausted, match="passes 10000 bytes"):
        run(parts(), blobs, max_data_bytes=10_000)
    assert sent == ["second entry"]
    assert blobs.names() == set()  # the first blob's file was removed


def test_a_failure_after_files_removes_them_all(blobs: BlobDir) -> None:
    a, b = b"a" * 5000, b"b" * 5000
    with pytest.raises(InvalidArgument, match="unknown type"):
        run(
            [
                header(3),
                blob_entry(5000),
                *chunks(a),
                blob_entry(5000, record=1),
                *chunks(b),
                text("x", 2, "nope"),
            ],
            blobs,
        )
    assert blobs.names() == set()


def test_a_cancelled_write_removes_its_files(blobs: BlobDir) -> None:
    async def scenario() -> None:
        arrived = asyncio.Event()

        async def parts() -> AsyncIterator[pb.DataPart]:
            yield header(2)
            yield blob_entry(5000)
            for part in chunks(b"a" * 5000):
                yield part
            yield blob_entry(1 << 20, record=1)
            yield pb.DataPart(chunk=b"b" * 4096)
            arrived.set()
            await asyncio.Event().wait()  # the client stalls, then cancels

        cfg = UdmfConfig(blobs.path.parent, inline_blob_bytes=1000)
        task = asyncio.create_task(ingest(parts(), REG, cfg, blobs))
        await arrived.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert blobs.names() == set()

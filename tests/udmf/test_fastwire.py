"""The hand-framed chunk messages are exactly protobuf's, both ways."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from udmf._fastwire import RawChunk, decode_read, encode_chunk, serialize_read
from udmf.v1 import udmf_pb2 as pb

chunks = st.binary(min_size=0, max_size=3000) | st.sampled_from([b"", b"\x00" * 200_000])
progress = st.integers(0, 100) | st.integers(0, 2**32 - 1)


@given(chunks, progress)
def test_encoded_chunks_are_what_protobuf_parses(chunk: bytes, p: int) -> None:
    want = pb.ReadResponse(part=pb.DataPart(chunk=chunk), progress=p)
    assert pb.ReadResponse.FromString(encode_chunk(chunk, p)) == want
    assert encode_chunk(chunk, p) == want.SerializeToString()


@given(chunks, progress)
def test_protobufs_chunk_messages_decode_to_raw_chunks(chunk: bytes, p: int) -> None:
    raw = pb.ReadResponse(part=pb.DataPart(chunk=chunk), progress=p).SerializeToString()
    got = decode_read(raw)
    assert isinstance(got, RawChunk)
    assert bytes(got.data) == chunk and got.progress == p


def test_other_messages_are_parsed_as_protobuf() -> None:
    messages = [
        pb.ReadResponse(part=pb.DataPart(header=pb.DataHeader(key="udmf://DataHub/a/b", record_count=2))),
        pb.ReadResponse(part=pb.DataPart(entry=pb.Entry(record=1, type="general.plain-text")), progress=5),
        pb.ReadResponse(progress=100),
        pb.ReadResponse(),
    ]
    for m in messages:
        got = decode_read(serialize_read(m))
        assert isinstance(got, pb.ReadResponse) and got == m


@given(st.binary(max_size=64))
def test_garbage_is_left_to_protobuf(raw: bytes) -> None:
    try:
        want: object = pb.ReadResponse.FromString(raw)
    except Exception as exc:
        want = type(exc)
    try:
        got: object = decode_read(raw)
    except Exception as exc:
        got = type(exc)
    if isinstance(got, RawChunk):  # only for bytes protobuf reads as exactly one chunk part
        assert isinstance(want, pb.ReadResponse) and want.part.chunk == bytes(got.data)
        assert want.progress == got.progress
    else:
        assert got == want


def test_serialize_read_passes_pre_encoded_bytes_through() -> None:
    raw = encode_chunk(b"abc", 7)
    assert serialize_read(raw) is raw

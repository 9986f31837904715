"""The bytes of a blob chunk on the read path, encoded and decoded by hand.

A 100 MB read is a hundred `ReadResponse{part: DataPart{chunk}, progress}` messages. Built as protobuf
objects, each chunk is copied into the message, again when it is serialized, again when the client
parses it and once more when the client reads the field. Here the daemon frames the chunk it read from
disk with the few bytes protobuf would put around it, and the client takes the chunk as a memoryview of
the received message: the same wire format (any protobuf parser reads these messages), half the copies.
Every other message goes through protobuf as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from udmf.v1 import udmf_pb2 as pb

_PART = 0x0A  # ReadResponse.part: field 1, length-delimited
_CHUNK = 0x1A  # DataPart.chunk: field 3, length-delimited
_PROGRESS = 0x10  # ReadResponse.progress: field 2, varint


@dataclass(frozen=True, slots=True)
class RawChunk:
    """A blob chunk read straight from a ReadResponse's bytes."""

    data: memoryview
    progress: int


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """The varint at `i` and the index after it; (-1, i) if it runs past the end or past 10 bytes."""
    n = shift = 0
    for j in range(i, min(len(buf), i + 10)):
        b = buf[j]
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, j + 1
        shift += 7
    return -1, i


def encode_chunk(chunk: bytes, progress: int) -> bytes:
    """The serialized `ReadResponse(part=DataPart(chunk=chunk), progress=progress)`."""
    inner = len(chunk)
    head = bytes([_PART]) + _varint(1 + len(_varint(inner)) + inner) + bytes([_CHUNK]) + _varint(inner)
    tail = bytes([_PROGRESS]) + _varint(progress) if progress else b""
    return b"".join((head, chunk, tail))


def serialize_read(message: Any) -> bytes:
    """The daemon's serializer of ReadResponse: chunks come pre-encoded as bytes."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()  # type: ignore[no-any-return]


def decode_read(raw: bytes) -> pb.ReadResponse | RawChunk:
    """The client's deserializer of ReadResponse: a chunk as a RawChunk, anything else parsed."""
    if raw[:1] == bytes([_PART]):
        length, i = _read_varint(raw, 1)
        end = i + length
        if length > 0 and end <= len(raw) and raw[i] == _CHUNK:
            size, j = _read_varint(raw, i + 1)
            if size >= 0 and j + size == end:
                progress, k = 0, end
                if k < len(raw) and raw[k] == _PROGRESS:
                    progress, k = _read_varint(raw, k + 1)
                if k == len(raw) and progress >= 0:
                    return RawChunk(memoryview(raw)[j:end], progress)
    return pb.ReadResponse.FromString(raw)

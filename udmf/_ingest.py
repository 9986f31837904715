"""Reading one UnifiedData from a write stream (header, entries, chunks) into rows and blob files.

Every part is checked as it arrives (`validate.DataChecker`); sizes are counted as entries announce
them, so data over `max_data_bytes` fails with RESOURCE_EXHAUSTED at the entry that crosses the limit,
before its bytes are taken. Blobs over the inline threshold go to files chunk by chunk; any failure
(including a cancelled call) removes the files written so far, so nothing of the data is stored.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import errno
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from udmf import _parts
from udmf._blobs import BlobDir, BlobWriter
from udmf.config import UdmfConfig
from udmf.errors import InvalidArgument, ResourceExhausted
from udmf.store import EntryRow
from udmf.utd import UtdRegistry
from udmf.v1 import udmf_pb2 as pb
from udmf.validate import DataChecker, has_blob


@dataclass(slots=True)
class Ingested:
    """A checked UnifiedData: its header as sent, its entries, the blob files they name, its summary."""

    header: pb.DataHeader
    entries: list[EntryRow] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)
    total_size: int = 0


class _Blob:
    """The blob of the entry being received: in memory up to the inline threshold, else a file."""

    def __init__(self, entry: pb.Entry, where: str, blobs: BlobDir, inline_limit: int) -> None:
        self.entry = entry
        self.where = where
        self.remaining = entry.blob_size
        self.writer: BlobWriter | None = blobs.writer() if entry.blob_size > inline_limit else None
        self.buffer = bytearray()
        self._text = codecs.getincrementaldecoder("utf-8")() if entry.blob_text else None

    async def add(self, chunk: bytes) -> None:
        if len(chunk) > self.remaining:
            raise InvalidArgument(
                f"{self.where}: more blob bytes than its blob_size of {self.entry.blob_size}"
            )
        self.remaining -= len(chunk)
        if self._text is not None:
            self._decode(chunk, final=False)
        if self.writer is not None:
            await self.writer.write(chunk)
        else:
            self.buffer += chunk

    def _decode(self, chunk: bytes, final: bool) -> None:
        assert self._text is not None
        try:
            self._text.decode(chunk, final)
        except UnicodeDecodeError:
            raise InvalidArgument(f"{self.where}: blob_text is set but the bytes are not UTF-8") from None

    async def finish(self) -> EntryRow:
        if self.remaining:
            got = self.entry.blob_size - self.remaining
            raise InvalidArgument(
                f"{self.where}: blob_size is {self.entry.blob_size} but {got} bytes came before the next part"
            )
        if self._text is not None:
            self._decode(b"", final=True)
        e = self.entry
        row = EntryRow(e.record, e.type, e.value.SerializeToString(), e.blob_size, e.blob_field, e.blob_text)
        if self.writer is None:
            return dataclasses.replace(row, blob=bytes(self.buffer))
        await self.writer.finish()
        return dataclasses.replace(row, blob_file=self.writer.name)


Room = Callable[[int, int], str | None]
"""Why data of `total` bytes, `new` of them announced just now, may not be stored (the writer's quota,
the disk's floor), or None."""


async def ingest(
    parts: AsyncIterator[pb.DataPart],
    registry: UtdRegistry,
    config: UdmfConfig,
    blobs: BlobDir,
    room: Room | None = None,
) -> Ingested:
    """Reads header, entries and chunks until `parts` ends. Nothing stays on disk if it fails. `room`
    is asked as each entry announces its size, before its bytes are taken."""
    checker = DataChecker(registry, config)
    done: Ingested | None = None
    blob: _Blob | None = None
    try:
        async for part in parts:
            which = part.WhichOneof("part")
            if done is None:
                if which != "header":
                    raise InvalidArgument(
                        f"the data starts with a header part, not {which or 'an empty part'}"
                    )
                checker.header(part.header)
                _parts.share_options(part.header.properties.share_options)
                done = Ingested(part.header)
            elif which == "header":
                raise InvalidArgument("a second header part: one write carries one UnifiedData")
            elif which == "entry":
                if blob is not None:
                    _add(done, await blob.finish())
                    blob = None
                blob = _entry(done, checker, part.entry, config, blobs, room)
            elif which == "chunk":
                if blob is None:
                    raise InvalidArgument("a chunk part without an entry announcing a blob (blob_size)")
                await blob.add(part.chunk)
            else:
                raise InvalidArgument("an empty data part")
        if done is None:
            raise InvalidArgument("no data: the stream ended before the header part")
        if blob is not None:
            _add(done, await blob.finish())
            blob = None
        checker.finish()
        if done.files:
            await asyncio.to_thread(blobs.sync)
        return done
    except BaseException as exc:
        await _discard(blob, done, blobs)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise ResourceExhausted("no space left on the device for the data's blobs") from None
        raise


def _entry(
    done: Ingested,
    checker: DataChecker,
    entry: pb.Entry,
    config: UdmfConfig,
    blobs: BlobDir,
    room: Room | None = None,
) -> _Blob | None:
    checker.entry(entry)
    size = entry.value.ByteSize() + entry.blob_size
    if done.total_size + size > config.max_data_bytes:
        raise ResourceExhausted(
            f"record {entry.record}, type {entry.type!r}: the data passes {config.max_data_bytes} bytes, "
            "the most one UnifiedData may hold"
        )
    if room is not None and (refused := room(done.total_size + size, size)) is not None:
        raise ResourceExhausted(refused)
    done.total_size += size
    done.summary[entry.type] = done.summary.get(entry.type, 0) + size
    where = f"record {entry.record}, type {entry.type!r}"
    if has_blob(entry):
        return _Blob(entry, where, blobs, config.inline_blob_bytes)
    done.entries.append(EntryRow(entry.record, entry.type, entry.value.SerializeToString()))
    return None


def _add(done: Ingested, row: EntryRow) -> None:
    done.entries.append(row)
    if row.blob_file is not None:
        done.files.append(row.blob_file)


async def _discard(blob: _Blob | None, done: Ingested | None, blobs: BlobDir) -> None:
    """Removes every file of a failed write; shielded, so a cancelled call cleans up too."""
    try:
        if blob is not None and blob.writer is not None:
            await blob.writer.discard()
    finally:
        if done is not None and done.files:
            await asyncio.shield(asyncio.to_thread(blobs.remove, list(done.files)))


async def discard(ingested: Ingested, blobs: BlobDir) -> None:
    """Removes the files of data that was read but will not be stored."""
    if ingested.files:
        await asyncio.shield(asyncio.to_thread(blobs.remove, list(ingested.files)))


async def first(request_iterator: AsyncIterator[Any]) -> tuple[Any, AsyncIterator[Any]]:
    """The first message of a request stream and the rest. It is read before anything can fail:
    aborting while the client is still writing its first message makes grpc report "Internal error
    from Core" instead of our status."""
    incoming = aiter(request_iterator)
    return await anext(incoming, None), incoming


def write_stream(
    first: pb.WriteRequest | None, incoming: AsyncIterator[pb.WriteRequest], options_required: bool = True
) -> tuple[pb.WriteOptions, AsyncIterator[pb.DataPart]]:
    """The WriteOptions that open a write stream, and the data parts after them."""
    if first is not None and first.WhichOneof("msg") == "options":
        options, head = first.options, None
    elif options_required:
        raise InvalidArgument("a write stream opens with WriteRequest{options}, then the data's parts")
    else:
        options, head = pb.WriteOptions(), first

    async def parts() -> AsyncIterator[pb.DataPart]:
        if head is not None:
            yield head.part
        async for msg in incoming:
            if msg.WhichOneof("msg") != "part":
                raise InvalidArgument("WriteOptions come once, first; then only data parts")
            yield msg.part

    return options, parts()

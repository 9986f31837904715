"""Streaming stored data out: its header, then each entry followed by its blob in chunks, with progress.

Entries are read a page at a time and blob files a chunk at a time, each off the event loop, so a
200 MB read holds about one chunk in memory. Chunks go out pre-encoded (`udmf._fastwire`). Progress
is the share of the data's bytes (`total_size`: values plus blobs) sent so far, 0 at the header and
100 at the last part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from udmf import _parts
from udmf._fastwire import encode_chunk
from udmf.store import DataRow, EntryRow, UdmfStore
from udmf.v1 import udmf_pb2 as pb

RunDb = Callable[..., Awaitable[Any]]


async def stream_data(
    row: DataRow, store: UdmfStore, read: RunDb, chunk_bytes: int
) -> AsyncIterator[pb.ReadResponse]:
    total = row.total_size
    sent = 0

    def progress() -> int:
        return 100 if total <= 0 else min(100, sent * 100 // total)

    yield pb.ReadResponse(part=pb.DataPart(header=_parts.header(row)), progress=progress())
    after = -1
    while page := await read(store.entries, row.key, after):
        for seq, e in page:
            after = seq
            sent += len(e.value)
            yield pb.ReadResponse(part=pb.DataPart(entry=_entry(e)), progress=progress())
            async for chunk in _blob_chunks(e, store, chunk_bytes):
                sent += len(chunk)
                yield encode_chunk(chunk, progress())  # type: ignore[misc]  # pre-encoded: see _fastwire


def _entry(e: EntryRow) -> pb.Entry:
    return pb.Entry(
        record=e.record,
        type=e.type,
        value=pb.Value.FromString(e.value),
        blob_size=e.blob_size,
        blob_field=e.blob_field,
        blob_text=e.blob_text,
    )


async def _blob_chunks(e: EntryRow, store: UdmfStore, chunk_bytes: int) -> AsyncIterator[bytes]:
    if e.blob_file is not None:
        async for chunk in store.blobs.chunks(e.blob_file, chunk_bytes):
            yield chunk
    elif e.blob:
        for start in range(0, len(e.blob), chunk_bytes):
            yield e.blob[start : start + chunk_bytes]

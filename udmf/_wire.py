"""UnifiedData as a stream of `DataPart`s and back, without holding a large value twice.

`encode` yields a header, then an `Entry` per entry. A str or bytes value, or the largest str/bytes
field of an object value, of at least `blob_threshold` bytes is sent as a blob: the Entry carries its
size (and the object's other fields) and `chunk` parts of `chunk_bytes` follow, sliced from a
memoryview of the value. The `Assembler` takes the parts (or `ReadResponse`s, with progress) one at a
time and builds the UnifiedData objects, several in a row for QueryData; a `blob_sink` can send each
blob to a file instead of memory. Also here: the proto forms of enums, properties and summaries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, NamedTuple

from udmf import values
from udmf._fastwire import RawChunk
from udmf.data import (
    EPOCH,
    Intention,
    Runtime,
    ShareOptions,
    Summary,
    UnifiedData,
    UnifiedDataProperties,
    UnifiedRecord,
    Visibility,
    _default_registry,
)
from udmf.errors import InvalidArgument, UdmfError
from udmf.v1 import udmf_pb2 as pb

BLOB_THRESHOLD = 64 * 1024
CHUNK_BYTES = 1024 * 1024
MAX_DATA_SIZE = 200 * 1024 * 1024  # OpenHarmony's UnifiedData::MAX_DATA_SIZE

_INTENTION_TO_PB = {
    Intention.DATA_HUB: pb.INTENTION_DATA_HUB,
    Intention.DRAG: pb.INTENTION_DRAG,
    Intention.SYSTEM_SHARE: pb.INTENTION_SYSTEM_SHARE,
    Intention.PICKER: pb.INTENTION_PICKER,
    Intention.MENU: pb.INTENTION_MENU,
}
_INTENTION_FROM_PB = {v: k for k, v in _INTENTION_TO_PB.items()}


# ---- enums, properties, summaries ----


def intention_to_proto(intention: Intention | str | None) -> int:
    return pb.INTENTION_UNSPECIFIED if intention is None else _INTENTION_TO_PB[Intention(intention)]


def intention_from_proto(value: int) -> Intention | None:
    return _INTENTION_FROM_PB.get(value)  # type: ignore[call-overload]


def visibility_to_proto(visibility: Visibility) -> int:
    return int(Visibility(visibility)) + 1  # the proto's values are ours shifted past UNSPECIFIED


def share_options_to_proto(options: ShareOptions) -> int:
    return int(ShareOptions(options)) + 1


def share_options_from_proto(value: int) -> ShareOptions:
    return ShareOptions(value - 1) if value else ShareOptions.CROSS_APP


def properties_to_proto(props: UnifiedDataProperties) -> pb.Properties:
    msg = pb.Properties(
        tag=props.tag,
        timestamp_ms=(props.timestamp - EPOCH) // timedelta(milliseconds=1),
        share_options=share_options_to_proto(props.share_options),  # type: ignore[arg-type]
    )
    values.map_to_proto(msg.extras, props.extras)
    return msg


def properties_from_proto(msg: pb.Properties) -> UnifiedDataProperties:
    return UnifiedDataProperties._read(
        msg.tag,
        {key: values.from_proto(item) for key, item in msg.extras.items()},
        share_options_from_proto(msg.share_options),
        EPOCH + timedelta(milliseconds=msg.timestamp_ms),
    )


def summary_to_proto(summary: Summary) -> pb.Summary:
    return pb.Summary(summary=summary.summary, total_size=summary.total_size)


def summary_from_proto(msg: pb.Summary) -> Summary:
    return Summary(dict(msg.summary), msg.total_size)


# ---- encoding ----


def encode(
    data: UnifiedData, *, blob_threshold: int = BLOB_THRESHOLD, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.DataPart]:
    """The parts of `data`: header, entries, and the chunks of each blob right after its entry."""
    if blob_threshold < 1 or chunk_bytes < 1:
        raise InvalidArgument("blob_threshold and chunk_bytes must be at least 1")
    records = data.get_records()
    header = pb.DataHeader(properties=properties_to_proto(data.properties), record_count=len(records))
    yield pb.DataPart(header=header)
    for index, record in enumerate(records):
        for type_id, value in record.get_entries().items():
            yield from _entry_parts(index, type_id, values.plain(value), blob_threshold, chunk_bytes)


def _entry_parts(index: int, type_id: str, value: Any, threshold: int, chunk: int) -> Iterator[pb.DataPart]:
    entry = pb.Entry(record=index, type=type_id)
    values.check(value)
    blob, blob_field, text = _pick_blob(value, threshold)
    if blob is None:
        entry.value.CopyFrom(values.to_proto_unchecked(value))
        yield pb.DataPart(entry=entry)
        return
    if blob_field:
        rest = {k: v for k, v in value.items() if k != blob_field}
        entry.value.object_value.CopyFrom(values.object_to_proto(rest))
    entry.blob_size, entry.blob_field, entry.blob_text = blob.nbytes, blob_field, text
    yield pb.DataPart(entry=entry)
    for offset in range(0, blob.nbytes, chunk):
        yield pb.DataPart(chunk=bytes(blob[offset : offset + chunk]))


def _as_blob(value: Any, threshold: int) -> memoryview | None:
    if isinstance(value, str):
        if len(value) * 4 < threshold:  # UTF-8 takes at most 4 bytes a character: no need to encode
            return None
        view = memoryview(value.encode())
    elif isinstance(value, (bytes, bytearray, memoryview)):
        view = memoryview(value).cast("B")
    else:
        return None
    return view if view.nbytes >= threshold else None


def _pick_blob(value: Any, threshold: int) -> tuple[memoryview | None, str, bool]:
    """The blob to stream (the value, or its largest large field), its field name and whether text.

    An Entry has one blob: a second large field of the same object travels inline, and so does a
    field named "" (blob_field "" means the value itself).
    """
    own = _as_blob(value, threshold)
    if own is not None:
        return own, "", isinstance(value, str)
    best: tuple[memoryview | None, str, bool] = (None, "", False)
    if isinstance(value, Mapping):
        for key, item in value.items():
            blob = _as_blob(item, threshold) if key else None
            if blob is not None and (best[0] is None or blob.nbytes > best[0].nbytes):
                best = (blob, key, isinstance(item, str))
    return best


# ---- assembling ----


class BlobInfo(NamedTuple):
    """What a blob sink is told about the blob to place: where it belongs, its size, whether text."""

    key: str
    record: int
    type: str
    field: str
    size: int
    text: bool


BlobSink = Callable[[BlobInfo], Path]
"""Returns the file to write a blob to; the blob's value in the data becomes that Path."""


@dataclass(slots=True)
class _Blob:
    entry: pb.Entry
    info: BlobInfo
    received: int = 0
    chunks: list[bytes | memoryview] = field(default_factory=list)
    path: Path | None = None
    file: IO[bytes] | None = None


def blob_path(out_dir: Path, record: int, type_id: str, field: str, text: bool) -> Path:
    """Where `get --out` puts a value: `{record}-{type}[-{field}]{ext}`, ext the type's first
    extension (for a whole value), else .txt or .bin."""
    extensions = (
        () if field else getattr(_default_registry().get_type_descriptor(type_id), "filename_extensions", ())
    )
    ext = extensions[0] if extensions else (".txt" if text else ".bin")
    name = f"{record}-{type_id}" + (f"-{field}" if field else "") + ext
    return out_dir / re.sub(r"[^A-Za-z0-9._-]", "_", name)


def file_sink(out_dir: Path) -> BlobSink:
    """A blob sink writing each blob to its `blob_path` in `out_dir` (made if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return lambda info: blob_path(out_dir, info.record, info.type, info.field, info.text)


def _broken(what: str) -> UdmfError:
    error = UdmfError(f"malformed data stream: {what}")
    error.code = "DATA_LOSS"
    return error


class Assembler:
    """Builds UnifiedData from parts fed in order; `finish()` returns all of them once the stream ends.

    `progress` is the last ReadResponse's. With `blob_sink`, each blob goes to the file it names;
    `abort()` closes and removes the files of a transfer that did not finish.
    """

    def __init__(self, blob_sink: BlobSink | None = None) -> None:
        self.progress = 0
        self._sink = blob_sink
        self._done: list[UnifiedData] = []
        self._data: UnifiedData | None = None
        self._record_count = 0
        self._blob: _Blob | None = None
        self._files: list[Path] = []

    def feed(self, message: pb.ReadResponse | pb.DataPart | RawChunk) -> None:
        if isinstance(message, RawChunk):
            self.progress = message.progress
            self._chunk(message.data)
            return
        if isinstance(message, pb.ReadResponse):
            self.progress = message.progress
            if not message.HasField("part"):
                return
            message = message.part
        kind = message.WhichOneof("part")
        if kind != "chunk" and self._blob is not None:
            raise _broken(f"a {kind} part before the blob of {self._blob.info.type} was complete")
        if kind == "header":
            self._close_data()
            self._start(message.header)
        elif kind == "entry":
            self._entry(message.entry)
        elif kind == "chunk":
            self._chunk(message.chunk)

    def finish(self) -> list[UnifiedData]:
        """Every UnifiedData of the stream; a stream that ends mid-blob is malformed."""
        if self._blob is not None:
            raise _broken(f"the stream ended inside the blob of {self._blob.info.type}")
        self._close_data()
        done, self._done = self._done, []
        return done

    def abort(self) -> None:
        """Closes the open blob file and removes every file this assembler wrote."""
        if self._blob is not None and self._blob.file is not None:
            self._blob.file.close()
        self._blob = None
        for path in self._files:
            path.unlink(missing_ok=True)
        self._files.clear()

    # -- internals ------------------------------------------------------------------------------

    def _start(self, header: pb.DataHeader) -> None:
        data = UnifiedData()
        data.properties = properties_from_proto(header.properties)
        if header.key:
            data.runtime = Runtime(
                header.key,
                intention_from_proto(header.intention),
                header.writer,
                summary_from_proto(header.summary),
                header.device,
            )
        self._data, self._record_count = data, header.record_count

    def _close_data(self) -> None:
        data = self._data
        if data is None:
            return
        missing = self._record_count - len(data._records)
        if missing < 0:
            raise _broken(f"{len(data._records)} records, the header said {self._record_count}")
        data._records.extend(UnifiedRecord() for _ in range(missing))  # records without entries
        self._done.append(data)
        self._data = None

    def _record(self, index: int) -> UnifiedRecord:
        data = self._data
        if data is None:
            raise _broken("an entry before the first header")
        records = data._records
        if index < len(records) - 1 or index >= self._record_count:
            raise _broken(f"entry of record {index} out of order or past the header's record count")
        while len(records) <= index:
            records.append(UnifiedRecord())
        return records[index]

    def _entry(self, entry: pb.Entry) -> None:
        record = self._record(entry.record)
        if entry.type in record._entries:
            raise _broken(f"record {entry.record} has two {entry.type} entries")
        if not entry.blob_size:
            record._put(entry.type, values.from_proto(entry.value))
            return
        if entry.blob_size > MAX_DATA_SIZE:
            raise _broken(f"a blob of {entry.blob_size} bytes is larger than {MAX_DATA_SIZE}")
        key = self._data.runtime.key if self._data and self._data.runtime else ""
        info = BlobInfo(key, entry.record, entry.type, entry.blob_field, entry.blob_size, entry.blob_text)
        blob = _Blob(entry, info)
        if self._sink is not None:
            blob.path = self._sink(info)
            blob.file = blob.path.open("wb")
            self._files.append(blob.path)
        self._blob = blob

    def _chunk(self, chunk: bytes | memoryview) -> None:
        blob = self._blob
        if blob is None:
            raise _broken("a chunk outside a blob")
        blob.received += len(chunk)
        if blob.received > blob.info.size:
            raise _broken(f"more than the {blob.info.size} bytes of the blob of {blob.info.type}")
        if blob.file is not None:
            blob.file.write(chunk)
        else:
            blob.chunks.append(chunk)
        if blob.received == blob.info.size:
            self._blob = None
            self._complete(blob)

    def _complete(self, blob: _Blob) -> None:
        value: Any
        if blob.file is not None:
            blob.file.close()
            value = blob.path
        else:
            raw = b"".join(blob.chunks)
            blob.chunks.clear()
            try:
                value = raw.decode() if blob.info.text else raw
            except UnicodeDecodeError:
                raise _broken(f"the text blob of {blob.info.type} is not UTF-8") from None
        if blob.info.field:
            fields = values.object_from_proto(blob.entry.value.object_value)
            fields[blob.info.field] = value
            value = fields
        self._record(blob.info.record)._put(blob.info.type, value)

"""A sequence's KV cache as portable bytes: exported by one engine, shipped, restored by another.

`KvState` holds llama.cpp's per-sequence state (llama_state_seq_get_data: each cell's position, K
and V) with what it takes to restore it safely elsewhere: the sha256 of the GGUF that computed it,
the KV cache type, and the token ids it holds (the importer checks they begin its prompt). It is
only valid on the same model file and cache type: `check` refuses any other with
FailedPrecondition, naming the mismatch.

On the wire (`to_chunks`): a header chunk, then the data in chunks of at most `chunk_bytes`. The
header is MAGIC, a format version, the cache type, the digest, the token ids, the data's length and
its CRC-32, so a truncated or corrupted transfer is refused (InvalidArgument) rather than restored.
CRC-32 costs ~12 ms per 1,000 f16 tokens (23 MB), a quarter of llama.cpp's own save.

Not compressed, because it does not pay: measured on 1,000 tokens of English prose with the built-in
model, zlib level 1 shrinks an f16 state to 0.926 of its size (0.869 with the bytes of each f16
shuffled apart first) and a q8_0 state to 0.965, at ~31 MB/s here — 0.7 ms of CPU per f16 token,
on the cores that run inference, to save 1.7 KB (3 KB shuffled). That pays only on links slower
than ~2-4 MB/s; q8_0 (`ai.cache_type`) halves the bytes instead (12.3 vs 23.1 KB a token).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aicap.errors import FailedPrecondition, InvalidArgument

MAGIC = b"AKVS"
VERSION = 1
CHUNK_BYTES = 1 << 20  # data per chunk by default: well under gRPC's 4 MiB message limit
_HEAD = struct.Struct("<4sBB32sIQI")  # magic, version, len(cache type), digest, n tokens, data length, CRC-32
_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime ns) → sha256 hex


def model_digest(path: Path) -> str:
    """The sha256 (hex) of a model file, read once per (path, size, mtime): ~0.2 s for the built-in
    model's 98 MB, too slow to repeat per request."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        digest = _digests[key] = h.hexdigest()
    return digest


@dataclass(frozen=True, slots=True)
class KvState:
    """The KV of `tokens` (positions 0..len-1) computed by the model whose file's sha256 is
    `model_digest`, in a `cache_type` KV cache; `data` is llama.cpp's state of that one sequence."""

    model_digest: str
    cache_type: str
    tokens: tuple[int, ...]
    data: bytes

    def check(self, model_digest: str, cache_type: str) -> None:
        """Raises FailedPrecondition unless the state can be restored into a context of that model
        file and cache type."""
        if self.model_digest != model_digest:
            raise FailedPrecondition(
                f"the KV state is of another model (sha256 {self.model_digest[:16]}..., "
                f"this one is {model_digest[:16]}...)"
            )
        if self.cache_type != cache_type:
            raise FailedPrecondition(
                f"the KV state's cache type is {self.cache_type}, this model's KV cache is {cache_type}"
            )

    def to_chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The header, then the data in chunks of at most `chunk_bytes`."""
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        kind = self.cache_type.encode()
        digest = bytes.fromhex(self.model_digest)
        head = _HEAD.pack(
            MAGIC, VERSION, len(kind), digest, len(self.tokens), len(self.data), zlib.crc32(self.data)
        )
        yield head + kind + struct.pack(f"<{len(self.tokens)}i", *self.tokens)
        view = memoryview(self.data)
        for i in range(0, len(self.data), chunk_bytes):
            yield bytes(view[i : i + chunk_bytes])

    @classmethod
    def from_chunks(cls, chunks: Iterable[bytes]) -> KvState:
        """The state `to_chunks` sent (chunked any way); InvalidArgument if it is not one, is cut
        short, runs long or was corrupted on the way."""
        it = iter(chunks)
        head = next(it, None)
        if head is None or len(head) < _HEAD.size:
            raise InvalidArgument("not a KV state: its header is missing or short")
        magic, version, kind_len, digest, n_tokens, size, crc = _HEAD.unpack_from(head)
        if magic != MAGIC:
            raise InvalidArgument("not a KV state (wrong magic)")
        if version != VERSION:
            raise InvalidArgument(f"KV state format {version} is not supported (this daemon reads {VERSION})")
        if len(head) != _HEAD.size + kind_len + 4 * n_tokens:
            raise InvalidArgument("KV state header: its length does not match its token count")
        at = _HEAD.size + kind_len
        kind = head[_HEAD.size : at].decode(errors="replace")
        tokens = struct.unpack_from(f"<{n_tokens}i", head, at)
        parts, got = [], 0
        for chunk in it:
            got += len(chunk)
            if got > size:
                raise InvalidArgument(f"KV state data runs past its announced {size} bytes")
            parts.append(chunk)
        if got < size:
            raise InvalidArgument(f"KV state data cut short: {got} of {size} bytes")
        data = b"".join(parts)
        if zlib.crc32(data) != crc:
            raise InvalidArgument("KV state data corrupted (CRC-32 mismatch)")
        return cls(digest.hex(), kind, tokens, data)

"""The KV state's wire format and checks, without a model: chunking round-trips, damage is refused,
a state is restorable only where model digest and cache type match, digests are cached per file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aicap import kv_state
from aicap.errors import FailedPrecondition, InvalidArgument
from aicap.kv_state import KvState, model_digest

DIGEST = hashlib.sha256(b"model").hexdigest()
STATE = KvState(DIGEST, "f16", (1, 2, 3, 49151), bytes(range(256)) * 40)


@given(
    tokens=st.lists(st.integers(0, 2**31 - 1), max_size=50),
    data=st.binary(max_size=3000),
    chunk=st.integers(1, 4000),
    cache_type=st.sampled_from(["f16", "q8_0"]),
)
def test_chunks_round_trip(tokens: list[int], data: bytes, chunk: int, cache_type: str) -> None:
    state = KvState(DIGEST, cache_type, tuple(tokens), data)
    chunks = list(state.to_chunks(chunk))
    assert all(len(c) <= chunk for c in chunks[1:])
    assert len(chunks) == 1 + -(-len(data) // chunk)
    assert KvState.from_chunks(chunks) == state


def test_data_may_be_rechunked_on_the_way() -> None:
    head, *data = STATE.to_chunks(1000)
    whole = b"".join(data)
    assert KvState.from_chunks([head, whole[:7], whole[7:]]) == STATE


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: [], "header is missing"),
        (lambda c: [c[0][:10], *c[1:]], "header is missing or short"),
        (lambda c: [b"XXXX" + c[0][4:], *c[1:]], "wrong magic"),
        (lambda c: [c[0][:4] + b"\x09" + c[0][5:], *c[1:]], "format 9"),
        (lambda c: [c[0][:-1], *c[1:]], "does not match its token count"),
        (lambda c: c[:-1], "cut short"),
        (lambda c: [*c, b"x"], "runs past"),
        (lambda c: [*c[:-1], bytes([c[-1][0] ^ 1]) + c[-1][1:]], "CRC-32"),
    ],
)
def test_a_damaged_state_is_refused(damage: object, message: str) -> None:
    chunks = list(STATE.to_chunks(4096))
    with pytest.raises(InvalidArgument, match=message):
        KvState.from_chunks(damage(chunks))  # type: ignore[operator]


def test_check_names_the_mismatch() -> None:
    STATE.check(DIGEST, "f16")
    other = hashlib.sha256(b"other model").hexdigest()
    with pytest.raises(FailedPrecondition, match="another model"):
        STATE.check(other, "f16")
    with pytest.raises(FailedPrecondition, match="cache type is f16, this model's KV cache is q8_0"):
        STATE.check(DIGEST, "q8_0")


def test_model_digest_is_the_files_sha256_read_once_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"x" * (3 << 20))
    assert model_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    reads = []
    real_open = Path.open

    def counting_open(self: Path, *a: object, **kw: object) -> object:
        reads.append(self)
        return real_open(self, *a, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", counting_open)
    model_digest(path)
    assert reads == []  # cached
    path.write_bytes(b"y" * (3 << 20))  # same size, new content: its mtime moves
    st_ = path.stat()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000))
    reads.clear()  # write_bytes opened it
    assert model_digest(path) == hashlib.sha256(b"y" * (3 << 20)).hexdigest()
    assert reads == [path]
    assert len(kv_state._digests) >= 2

"""datamgr._stream: how the SDKs split a batch into messages and how the daemon reads them back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from datamgr import _stream
from datamgr.errors import InvalidArgument, TooLarge
from datamgr.v1 import kv_pb2 as pb
from datamgr.v1 import types_pb2

KiB = 1024


def batch(sizes: list[int]) -> tuple[list[pb.KvEntry], object]:
    entries = [
        pb.KvEntry(key=f"k{i}", value=types_pb2.Value(bytes_value=b"x" * n)) for i, n in enumerate(sizes)
    ]

    def build(lo: int, hi: int) -> pb.PutBatchRequest:
        return pb.PutBatchRequest(store="s", entries=entries[lo:hi])

    return entries, build


@pytest.mark.parametrize(
    "sizes",
    [
        [],
        [10],
        [100 * KiB] * 3,
        [100 * KiB] * 40,
        [1000 * KiB] + [1 * KiB] * 50,
        [5000 * KiB, 10, 3000 * KiB],
    ],
    ids=["empty", "one", "fits", "even", "uneven", "items-over-target"],
)
def test_split_keeps_every_entry_in_order_under_the_target(sizes: list[int]) -> None:
    target = 1000 * KiB
    entries, build = batch(sizes)
    messages = _stream.split(build, len(entries), target)  # type: ignore[arg-type]
    assert [e for m in messages for e in m.entries] == entries
    assert all(m.ByteSize() <= target or len(m.entries) == 1 for m in messages)
    whole = pb.PutBatchRequest(store="s", entries=entries)
    if whole.ByteSize() <= target:
        assert messages == [whole]  # a batch that fits is one message, as before
    elif len(set(sizes)) == 1:  # even items: about as many messages as the bytes need
        assert len(messages) <= whole.ByteSize() // target + 2


async def _iterate(messages: list[pb.PutBatchRequest], limit: int) -> list[pb.PutBatchRequest]:
    async def stream() -> AsyncIterator[pb.PutBatchRequest]:
        for m in messages:
            yield m

    head, others = await _stream.first(stream())
    return [head, *[m async for m in _stream.rest(head, others, limit, "kv.max_batch_bytes", "the batch")]]


def test_rest_reads_up_to_the_limit_and_refuses_past_it_naming_the_setting() -> None:
    _, build = batch([100 * KiB] * 4)
    messages = [build(i, i + 1) for i in range(4)]
    size = sum(m.ByteSize() for m in messages)
    assert asyncio.run(_iterate(messages, size)) == messages
    with pytest.raises(TooLarge, match=r"kv\.max_batch_bytes"):
        asyncio.run(_iterate(messages, size - 1))


def test_an_empty_stream_and_another_target_are_invalid() -> None:
    with pytest.raises(InvalidArgument, match="no request message"):
        asyncio.run(_iterate([], 1 << 20))
    _stream.same("store", "a", "")
    _stream.same("store", "a", "a")
    with pytest.raises(InvalidArgument, match="names store 'b'"):
        _stream.same("store", "a", "b")

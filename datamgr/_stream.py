"""Client-streamed batches (DataShare BatchInsert, KV PutBatch): one logical request in several messages.

A batch larger than one message (`max_message_bytes`) arrives as a stream: the first message carries
what a one-message batch carries, later ones more rows or entries, with the same target (their target
fields empty or equal to the first's). The servicer checks the caller on the first message, before
reading the rest; `rest` then reads them while counting bytes, and refuses the batch as soon as its
total passes the limit, without reading further. A one-message batch costs one more read (of EOF).
The SDKs `split` what they send into messages of about `SEND_BYTES` (one when it fits).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, TypeVar

from datamgr.errors import InvalidArgument, TooLarge

M = TypeVar("M", bound=Any)  # a protobuf message


async def first(requests: AsyncIterable[Any]) -> tuple[Any, AsyncIterator[Any]]:
    """The stream's first message and the iterator of the others; INVALID_ARGUMENT for an empty stream."""
    it = aiter(requests)
    try:
        return await anext(it), it
    except StopAsyncIteration:
        raise InvalidArgument("the call carried no request message") from None


def same(field: str, first: str, later: str) -> None:
    """A later message's target `field` is empty or the first's."""
    if later and later != first:
        raise InvalidArgument(
            f"a later message of the batch names {field} {later!r}, the first {first!r}: "
            f"one batch, one {field}"
        )


async def rest(
    head: Any, others: AsyncIterator[Any], limit: int, setting: str, what: str
) -> AsyncIterator[Any]:
    """The messages after `head`, counted with it; RESOURCE_EXHAUSTED naming `setting` once their bytes
    pass `limit` (the message that passes it is the last one read)."""
    total = -1  # the head's size, counted only when a second message comes (a one-message batch: free)
    async for message in others:
        total = (head.ByteSize() if total < 0 else total) + message.ByteSize()
        if total > limit:
            raise TooLarge(f"{what} passed {limit} bytes ({setting}) in its messages; none of it was applied")
        yield message


MESSAGE_BYTES = 5 * 1024 * 1024  # the daemon's max_message_bytes by default
SEND_BYTES = 4 * 1024 * 1024  # what the SDKs put in one message of a batch: under MESSAGE_BYTES


def split(build: Callable[[int, int], M], n: int, target: int = SEND_BYTES) -> list[M]:
    """The messages of a batch of `n` items, `build(lo, hi)` making the one of items lo..hi: one message
    when the whole fits `target` bytes, else slices of about `target` (an item larger than it alone)."""
    whole = build(0, n)
    size = whole.ByteSize()
    if size <= target or n <= 1:
        return [whole]
    parts = -(-size // target) + 1  # a little more than needed: items are seldom even
    bounds = [n * i // parts for i in range(parts + 1)]
    out: list[M] = []
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            out.extend(_split(build, lo, hi, target))
    return out


def _split(build: Callable[[int, int], M], lo: int, hi: int, target: int) -> list[M]:
    message = build(lo, hi)
    if hi - lo <= 1 or message.ByteSize() <= target:
        return [message]
    mid = (lo + hi) // 2
    return [*_split(build, lo, mid, target), *_split(build, mid, hi, target)]

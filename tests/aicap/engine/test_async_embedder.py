"""The embedding engine on the real inference thread, with a fake runner (no model): vectors in order and
unit length, a failed batch, a caller that leaves, and the engine's stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from aicap.engine.async_embedder import AsyncEmbedder
from aicap.engine.async_engine import EngineClosed

FAIL = 666  # a text starting with this token makes the fake runner raise


class FakeRunner:
    """Row of a text: (first token, length, 1, 0) before normalizing. `gate`, when set, holds each
    call until it is released (so calls can be queued behind one in progress)."""

    n_ctx, dim = 64, 4

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.closed = False

    def embed(self, texts: Sequence[Sequence[int]]) -> np.ndarray:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        self.batches.append([list(t) for t in texts])
        if any(t[0] == FAIL for t in texts):
            raise RuntimeError("llama_encode returned -1")
        return np.array([[t[0], len(t), 1, 0] for t in texts], dtype=np.float32)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def embedder(runner: FakeRunner) -> Iterator[AsyncEmbedder]:
    e = AsyncEmbedder(lambda: runner, batch_tokens=8)  # type: ignore[arg-type, return-value]
    yield e
    if runner.gate is not None:
        runner.gate.set()
    if not runner.closed:
        e.close()


def unit(first: int, length: int) -> np.ndarray:
    v = np.array([first, length, 1, 0], dtype=np.float32)
    return v / np.linalg.norm(v)


def test_vectors_in_order_and_unit_length(embedder: AsyncEmbedder, runner: FakeRunner) -> None:
    async def main() -> list[np.ndarray]:
        return await asyncio.gather(
            embedder.embed([[1, 1], [2, 2, 2], [3]], "a"),
            embedder.embed([[7] * 6, [8]], "b"),
            embedder.embed([[9, 9]], "\0daemon", background=True),
        )

    a, b, c = asyncio.run(main())
    assert np.allclose(a, [unit(1, 2), unit(2, 3), unit(3, 1)])
    assert np.allclose(b, [unit(7, 6), unit(8, 1)])
    assert np.allclose(c, [unit(9, 2)])
    assert all(sum(map(len, batch)) <= 8 or len(batch) == 1 for batch in runner.batches)
    stats = embedder.stats()
    assert (stats.texts, stats.tokens, stats.batches) == (6, 15, len(runner.batches))
    assert stats.texts_waiting == 0


def test_texts_that_do_not_fit_are_refused_before_queueing(
    embedder: AsyncEmbedder, runner: FakeRunner
) -> None:
    with pytest.raises(ValueError, match="text 1 has 65 tokens"):
        asyncio.run(embedder.embed([[1], [1] * 65], "a"))
    with pytest.raises(ValueError, match="text 0 has 0 tokens"):
        asyncio.run(embedder.embed([[]], "a"))
    assert runner.batches == []
    assert asyncio.run(embedder.embed([], "a")).shape == (0, 4)


def test_a_failed_batch_fails_its_calls_not_the_engine(embedder: AsyncEmbedder) -> None:
    with pytest.raises(RuntimeError, match="llama_encode"):
        asyncio.run(embedder.embed([[FAIL]], "a"))
    assert np.allclose(asyncio.run(embedder.embed([[5]], "a")), [unit(5, 1)])


def test_a_caller_that_leaves_drops_its_texts(embedder: AsyncEmbedder, runner: FakeRunner) -> None:
    runner.gate = threading.Event()

    async def main() -> np.ndarray:
        first = asyncio.ensure_future(embedder.embed([[1]], "a"))
        await asyncio.to_thread(runner.entered.wait, 30)  # the inference thread is inside a batch
        leaving = asyncio.ensure_future(embedder.embed([[2]] * 10, "b"))
        await asyncio.sleep(0.05)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        runner.gate.set()  # type: ignore[union-attr]
        return await first

    assert np.allclose(asyncio.run(main()), [unit(1, 1)])
    assert np.allclose(asyncio.run(embedder.embed([[3]], "c")), [unit(3, 1)])  # the engine goes on
    assert [t for batch in runner.batches for t in batch if t == [2]] == []


def test_close_fails_waiting_calls(embedder: AsyncEmbedder, runner: FakeRunner) -> None:
    runner.gate = threading.Event()

    async def main() -> None:
        first = asyncio.ensure_future(embedder.embed([[1]], "a"))
        await asyncio.to_thread(runner.entered.wait, 30)
        waiting = asyncio.ensure_future(embedder.embed([[2]], "b"))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(asyncio.to_thread(embedder.close))
        await asyncio.sleep(0.05)
        runner.gate.set()  # type: ignore[union-attr]
        await closing
        assert np.allclose(await first, [unit(1, 1)])  # its batch was running: it completes
        with pytest.raises(EngineClosed):
            await waiting

    asyncio.run(main())
    assert runner.closed

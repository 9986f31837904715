"""The inference thread and its asyncio front end with the real model: concurrency and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from aicap.config import EngineConfig, RunnerConfig
from aicap.engine.async_engine import AsyncEngine
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.model_runner import ModelRunner, default_model_path
from aicap.engine.sampler import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.model]


@pytest.fixture
def engine() -> Iterator[AsyncEngine]:
    def make() -> LLMEngine:
        runner = ModelRunner(RunnerConfig(default_model_path(), n_ctx=512, n_seq_max=4, n_batch=256))
        return LLMEngine(runner, EngineConfig(max_batch_tokens=256))

    e = AsyncEngine(make)
    yield e
    e.close()
    assert e.engine is not None
    e.engine.runner.close()


def test_concurrent_requests_stream_their_tokens(engine: AsyncEngine) -> None:
    assert engine.engine is not None
    tok = engine.engine.runner.tokenize

    async def collect(text: str, n: int) -> list[int]:
        return [t async for t in engine.generate(tok(text), SamplingParams(max_tokens=n, ignore_eos=True))]

    async def main() -> list[list[int]]:
        return await asyncio.gather(collect("The capital of France is", 10), collect("Once upon a time", 6))

    a, b = asyncio.run(main())
    assert (len(a), len(b)) == (10, 6)


def test_leaving_the_stream_aborts_and_frees_the_kv(engine: AsyncEngine) -> None:
    assert engine.engine is not None
    inner = engine.engine
    prompt = inner.runner.tokenize("Count slowly from one to one thousand:")

    async def main() -> None:
        got = 0
        stream = engine.generate(prompt, SamplingParams(max_tokens=400, ignore_eos=True))
        async with contextlib.aclosing(stream):  # what a cancelled RPC handler does
            async for _ in stream:
                got += 1
                if got == 3:
                    break
        for _ in range(100):  # the inference thread frees it before its next step
            if not inner.has_work():
                break
            await asyncio.sleep(0.02)

    asyncio.run(main())
    assert not inner.has_work()
    assert inner.blocks.num_free_blocks == len(inner.blocks.blocks)


def test_a_prompt_that_cannot_fit_is_an_error_for_its_caller(engine: AsyncEngine) -> None:
    async def main() -> None:
        async for _ in engine.generate([1] * 600, SamplingParams(max_tokens=10)):
            pass

    with pytest.raises(ValueError, match="exceeds the context"):
        asyncio.run(main())


def test_every_model_runs_on_one_inference_thread() -> None:
    """One OS thread runs llama.cpp for every engine (a second OpenMP team would slow both, see
    _InferenceThread); each gets its steps, one stopping leaves the others, the thread ends with the last."""
    threads: list[int] = []

    def make() -> LLMEngine:
        threads.append(threading.get_ident())
        runner = ModelRunner(RunnerConfig(default_model_path(), n_ctx=512, n_seq_max=4, n_batch=256))
        return LLMEngine(runner, EngineConfig(max_batch_tokens=256))

    def broken() -> LLMEngine:
        raise RuntimeError("no such model")

    async def collect(e: AsyncEngine, n: int) -> int:
        assert e.engine is not None
        prompt = e.engine.runner.tokenize("Once upon a time")
        return len([t async for t in e.generate(prompt, SamplingParams(max_tokens=n, ignore_eos=True))])

    async def both(a: AsyncEngine, b: AsyncEngine) -> list[int]:
        return await asyncio.gather(collect(a, 12), collect(b, 7))

    a, b = AsyncEngine(make), AsyncEngine(make)
    try:
        assert len(threads) == 2 and threads[0] == threads[1]
        assert asyncio.run(both(a, b)) == [12, 7]
        with pytest.raises(RuntimeError, match="no such model"):
            AsyncEngine(broken)
        b.close()
        b._inbox.put(("abort", 1))  # a late message for a stopped engine: ignored
        assert asyncio.run(collect(a, 5)) == 5
    finally:
        for e in (a, b):
            e.close()
            assert e.engine is not None
            e.engine.runner.close()
    for _ in range(100):
        if not any(t.name == "aicap-engine" for t in threading.enumerate()):
            break
        time.sleep(0.02)
    assert not any(t.name == "aicap-engine" for t in threading.enumerate())

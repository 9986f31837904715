"""A request's one queue (Generation) on the inference thread, with the fake runner (no model): its
tokens and end, an engine's refusal, and `kill` reaching a reader that waits while the engine decodes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from aicap.config import EngineConfig
from aicap.engine.async_engine import AsyncEngine
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.sampler import SamplingParams
from tests.aicap.engine.fake_runner import FakeRunner, reference

CONFIG = EngineConfig(block_size=8, max_batch_tokens=64, max_running=4)


class GatedRunner(FakeRunner):
    """Each decode waits for `gate` (so a test knows the engine is busy and its reader waits)."""

    def __init__(self) -> None:
        super().__init__(n_ctx=256, n_seq_max=8)
        self.gate = threading.Event()
        self.gate.set()

    def decode(
        self, work: Sequence[tuple[int, Sequence[int], int, int]], lone: bool = False
    ) -> dict[int, np.ndarray]:
        assert self.gate.wait(10), "the test never opened the gate"
        return super().decode(work, lone)


def start(runner: GatedRunner) -> AsyncEngine:
    return AsyncEngine(lambda: LLMEngine(runner, CONFIG))  # type: ignore[arg-type]


def test_tokens_then_the_end_come_through_the_queue() -> None:
    engine = start(GatedRunner())
    try:

        async def main() -> list[int]:
            gen = engine.generate([3] * 10, SamplingParams(max_tokens=5, ignore_eos=True))
            tokens = []
            while (ev := await gen.next()) is not None:
                tokens.append(ev.token)
            assert await gen.next() is None
            await gen.aclose()
            assert gen.closed.is_set()
            return tokens

        assert asyncio.run(main()) == reference([3] * 10, 5, False)
    finally:
        engine.close()


def test_a_refused_request_raises_for_its_reader() -> None:
    engine = start(GatedRunner())
    try:

        async def main() -> None:
            await engine.generate([3] * 300, SamplingParams(max_tokens=5)).next()

        with pytest.raises(ValueError, match="exceeds the context"):
            asyncio.run(main())
    finally:
        engine.close()


def test_kill_reaches_a_waiting_reader_at_once_and_frees_the_kv() -> None:
    runner = GatedRunner()
    engine = start(runner)
    try:
        runner.gate.clear()

        async def main() -> None:
            gen = engine.generate([3] * 10, SamplingParams(max_tokens=20, ignore_eos=True))
            reader = asyncio.create_task(gen.next())
            await asyncio.sleep(0.05)
            assert not reader.done()  # the engine is held in its first decode
            gen.kill(RuntimeError("the model was removed"))
            with pytest.raises(RuntimeError, match="the model was removed"):
                await asyncio.wait_for(reader, 1)
            assert await gen.next() is None
            await gen.aclose()

        asyncio.run(main())
        runner.gate.set()
        inner = engine.engine
        assert inner is not None
        for _ in range(200):
            if not inner.has_work():
                break
            time.sleep(0.01)
        assert not inner.has_work() and inner.blocks.num_free_blocks == len(inner.blocks.blocks)
    finally:
        runner.gate.set()
        engine.close()

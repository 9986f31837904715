"""The remote KV store through the AsyncEngine (the inference thread hands moves to the event loop and
gets their answers through its inbox), on the fake runner: swapped states leave and come back, a store
that fails or is missing means recompute, an ended generation's state is dropped there, and every
stream completes with the tokens of running it alone."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence

from aicap.config import EngineConfig
from aicap.engine.async_engine import AsyncEngine
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.remote_swap import KvKeeper
from aicap.engine.sampler import SamplingParams
from aicap.errors import Unavailable
from aicap.kv_state import KvState
from tests.aicap.engine.fake_runner import FakeRunner, reference

PROMPTS = [[i + 1] * 20 for i in range(4)]
LONG = SamplingParams(max_tokens=40, ignore_eos=True)


class Keeper:
    """An in-memory store on the event loop; `fail` refuses every put, `lose` every get."""

    def __init__(self, fail: bool = False, lose: bool = False, corrupt: bool = False) -> None:
        self.fail, self.lose, self.corrupt = fail, lose, corrupt
        self.kept: dict[int, KvState] = {}
        self.apps: list[str] = []
        self.puts = self.gets = self.drops = 0
        self._ids = itertools.count(1)

    async def keep_kv(self, state: KvState, app: str) -> int:
        await asyncio.sleep(0.001)
        self.puts += 1
        if self.fail:
            raise Unavailable("no paired device keeps KV state now")
        handle = next(self._ids)
        self.kept[handle] = state
        self.apps.append(app)
        return handle

    async def return_kv(self, handle: int) -> KvState:
        await asyncio.sleep(0.001)
        self.gets += 1
        state = self.kept.pop(handle)
        if self.lose:
            raise Unavailable("the device was lost")
        if self.corrupt:
            return KvState(state.model_digest, state.cache_type, state.tokens, b"x" + state.data[1:])
        return state

    async def drop_kv(self, handle: int) -> None:
        self.drops += 1
        del self.kept[handle]


class SlowRunner(FakeRunner):
    """A decode takes a few milliseconds, as a real one does: the store answers between steps."""

    def decode(self, work: Sequence[tuple[int, Sequence[int], int, int]], lone: bool = False) -> dict:
        time.sleep(0.005)
        return super().decode(work, lone)


def _make() -> LLMEngine:
    return LLMEngine(
        SlowRunner(128, 12),  # type: ignore[arg-type]
        EngineConfig(block_size=8, max_batch_tokens=64, max_running=4, swap_budget_tokens=0),
    )


async def _engine(keeper: Callable[[], KvKeeper | None] | None) -> AsyncEngine:
    return AsyncEngine(_make, keeper, asyncio.get_running_loop())


async def _collect(engine: AsyncEngine, prompt: list[int], may_leave: bool = True) -> list[int]:
    return [ev.token async for ev in engine.generate(prompt, LONG, "com.a", may_leave=may_leave)]


async def _all(engine: AsyncEngine, may_leave: bool = True) -> list[list[int]]:
    return await asyncio.gather(*(_collect(engine, p, may_leave) for p in PROMPTS))


async def _settled(engine: AsyncEngine) -> None:
    """Until the engine is idle and its moves are made."""
    for _ in range(500):
        if not engine.has_work() and not engine._moving:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("moves still under way")


def _run(keeper: Keeper | None, may_leave: bool = True) -> tuple[list[list[int]], AsyncEngine]:
    async def main() -> tuple[list[list[int]], AsyncEngine]:
        engine = await _engine((lambda: keeper) if keeper is not None else None)
        try:
            out = await _all(engine, may_leave)
            await _settled(engine)
            return out, engine
        finally:
            engine.close()

    return asyncio.run(main())


def test_states_go_to_the_keeper_and_come_back() -> None:
    keeper = Keeper()
    out, engine = _run(keeper)
    assert out == [reference(p, 40, False) for p in PROMPTS]
    s = engine.stats()
    assert s.preemptions_remote > 0 and s.preemptions_recompute == 0 and s.remote_kv_failures == 0
    assert keeper.puts == s.preemptions_remote and keeper.gets + keeper.drops == keeper.puts
    assert s.remote_kv_bytes_received > 0 and not keeper.kept
    assert set(keeper.apps) == {"com.a"}


def test_a_keeper_that_refuses_loses_or_changes_states_means_recompute() -> None:
    for keeper in (Keeper(fail=True), Keeper(lose=True), Keeper(corrupt=True)):
        out, engine = _run(keeper)
        assert out == [reference(p, 40, False) for p in PROMPTS]
        s = engine.stats()
        assert s.preemptions_remote > 0 and s.remote_kv_failures > 0
        assert not keeper.kept


def test_no_keeper_now_means_recompute_and_none_at_all_means_todays_behaviour() -> None:
    async def main() -> None:
        engine = await _engine(lambda: None)  # the daemon has not attached its paired devices yet
        try:
            assert await _all(engine) == [reference(p, 40, False) for p in PROMPTS]
            s = engine.stats()
            assert s.preemptions_remote > 0 and s.remote_kv_failures == s.preemptions_remote
        finally:
            engine.close()

    asyncio.run(main())
    for keeper, may_leave in ((None, True), (Keeper(), False)):  # no store; requests that stay here
        out, engine = _run(keeper, may_leave)
        assert out == [reference(p, 40, False) for p in PROMPTS]
        s = engine.stats()
        assert s.preemptions_remote == 0 and s.preemptions_recompute > 0


def test_a_generation_left_while_its_state_is_away_drops_it_there() -> None:
    keeper = Keeper()

    async def main() -> None:
        engine = await _engine(lambda: keeper)
        try:
            streams = [engine.generate(p, LONG, "com.a", may_leave=True) for p in PROMPTS]
            readers = [asyncio.ensure_future(_read(s)) for s in streams]
            for _ in range(1000):  # until some state is kept away
                if keeper.kept:
                    break
                await asyncio.sleep(0.002)
            assert keeper.kept
            for r in readers:
                r.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for s in streams:
                await s.aclose()
            await _settled(engine)
            assert not keeper.kept and keeper.drops + keeper.gets == keeper.puts
            inner = engine.engine
            assert inner is not None and inner.blocks.num_free_blocks == len(inner.blocks.blocks)
        finally:
            engine.close()

    async def _read(stream: object) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            async for _ in stream:  # type: ignore[attr-defined]
                pass

    asyncio.run(main())

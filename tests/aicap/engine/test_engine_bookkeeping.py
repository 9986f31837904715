"""The engine's KV bookkeeping against a fake runner that models llama.cpp's cells (fake_runner.py):
any mix of requests with shared prefixes, n > 1 samples, aborts, stops and preemption (swap and
recompute) gives every sample exactly the tokens of running it alone, never overfills the cells,
and leaks neither blocks nor cells."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicap.config import EngineConfig
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.sampler import SamplingParams
from tests.aicap.engine.fake_runner import FakeRunner, reference

PREFIXES = [[3] * 20, [4, 5] * 12, [6, 7, 8] * 9, []]


def make(n_ctx: int = 256, n_seq_max: int = 12, swap: int = 64, **kw: object) -> LLMEngine:
    return LLMEngine(
        FakeRunner(n_ctx, n_seq_max),  # type: ignore[arg-type]
        EngineConfig(block_size=8, max_batch_tokens=64, max_running=4, swap_budget_tokens=swap, **kw),  # type: ignore[arg-type]
    )


def check_cells(engine: LLMEngine) -> None:
    runner: FakeRunner = engine.runner  # type: ignore[assignment]
    assert len(runner.cells) <= runner.config.n_ctx
    engine.blocks.check_invariants()


def drain(engine: LLMEngine, out: dict[tuple[int, int], list[int]], limit: int = 5000) -> None:
    steps = 0
    while engine.has_work():
        for ev in engine.step():
            out.setdefault((ev.seq_id, ev.index), []).append(ev.token)
        check_cells(engine)
        steps += 1
        assert steps < limit, "no progress"


request = st.tuples(
    st.sampled_from(range(len(PREFIXES))),
    st.lists(st.integers(1, 31), min_size=1, max_size=12),  # suffix
    st.integers(1, 30),  # max_tokens
    st.integers(1, 3),  # n
    st.booleans(),  # stop at EOG
    st.sampled_from(["com.a", "com.b"]),
)
op = st.one_of(
    st.tuples(st.just("add"), request),
    st.tuples(st.just("step"), st.integers(1, 6)),
    st.tuples(st.just("abort"), st.integers(0, 20)),
    st.tuples(st.just("stop"), st.integers(0, 20), st.integers(0, 2)),
)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(op, max_size=40),
    swap=st.sampled_from([0, 64, 10_000]),
    isolate=st.booleans(),
    n_ctx=st.sampled_from([96, 128, 256]),
)
def test_any_mix_of_operations_keeps_the_bookkeeping_exact(
    ops: list, swap: int, isolate: bool, n_ctx: int
) -> None:
    engine = make(n_ctx=n_ctx, swap=swap, isolate_apps=isolate)
    runner: FakeRunner = engine.runner  # type: ignore[assignment]
    out: dict[tuple[int, int], list[int]] = {}
    expected: dict[int, tuple[list[int], int, bool, int]] = {}
    cut: set[tuple[int, int]] = set()  # samples aborted or stopped: their output is a prefix
    rid = 0
    for o in ops:
        if o[0] == "add":
            prefix, suffix, max_tokens, n, stop, app = o[1]
            prompt = PREFIXES[prefix] + suffix
            engine.add(rid, prompt, SamplingParams(max_tokens=max_tokens, n=n, ignore_eos=not stop), app)
            expected[rid] = (prompt, max_tokens, stop, n)
            rid += 1
        elif o[0] == "step":
            for _ in range(o[1]):
                for ev in engine.step():
                    out.setdefault((ev.seq_id, ev.index), []).append(ev.token)
                check_cells(engine)
        elif o[0] == "abort":
            engine.abort(o[1])
            cut.update((o[1], i) for i in range(3))
        else:
            engine.stop(o[1], o[2])
            cut.add((o[1], o[2]))
        check_cells(engine)
    drain(engine, out)
    for r, (prompt, max_tokens, stop, n) in expected.items():
        want = reference(prompt, max_tokens, stop)
        for i in range(n):
            got = out.get((r, i), [])
            if (r, i) in cut:
                assert got == want[: len(got)]
            else:
                assert got == want, (r, i)
    # nothing leaked: every block free, and the only cells left are those of cached blocks
    assert engine.blocks.num_free_blocks == len(engine.blocks.blocks)
    assert all(not engine._samples for _ in [0])
    held = {seq for _, _, seqs in runner.cells.values() for seq in seqs}
    assert held <= set(engine.cells.holders)
    assert len(runner.cells) == len(engine.cells.holder_of) * engine.blocks.block_size


def test_a_shared_prefix_is_computed_once() -> None:
    engine = make(n_ctx=512)
    prompt = [3] * 40 + [9]
    out: dict[tuple[int, int], list[int]] = {}
    engine.add(0, prompt, SamplingParams(max_tokens=5))
    drain(engine, out)
    engine.add(1, [3] * 40 + [10], SamplingParams(max_tokens=5))
    drain(engine, out)
    assert engine.blocks.prefix_hits == 40  # five full blocks of the second prompt
    assert out[(1, 0)] == reference([3] * 40 + [10], 5, True)


def test_n_samples_share_the_prompt_blocks() -> None:
    engine = make(n_ctx=512)
    prompt = list(range(1, 31)) * 2  # 60 tokens: 7 full blocks
    out: dict[tuple[int, int], list[int]] = {}
    engine.add(0, prompt, SamplingParams(max_tokens=4, n=3))
    drain(engine, out)
    assert engine.blocks.prefix_hits == 2 * 56  # samples 1 and 2 took the first one's blocks
    assert [out[(0, i)] for i in range(3)] == [reference(prompt, 4, True)] * 3


def test_isolated_apps_do_not_share_prefixes() -> None:
    engine = make(n_ctx=512, isolate_apps=True)
    out: dict[tuple[int, int], list[int]] = {}
    for rid, app in enumerate(["com.a", "com.b", "com.a"]):
        engine.add(rid, [3] * 40 + [9], SamplingParams(max_tokens=2), app)
        drain(engine, out)
    assert engine.blocks.prefix_hits == 40  # only the second request of com.a


def test_no_kv_slot_from_llama_decode_is_survived() -> None:
    engine = make(n_ctx=512)
    runner: FakeRunner = engine.runner  # type: ignore[assignment]
    out: dict[tuple[int, int], list[int]] = {}
    engine.add(0, [3] * 40 + [9], SamplingParams(max_tokens=3))
    drain(engine, out)
    engine.add(1, [5] * 30, SamplingParams(max_tokens=6))
    for ev in engine.step():
        out.setdefault((ev.seq_id, ev.index), []).append(ev.token)
    runner.fail_next_decode = True
    assert engine.step() == []  # nothing computed, nothing lost
    drain(engine, out)
    assert out[(1, 0)] == reference([5] * 30, 6, True)
    assert out[(0, 0)] == reference([3] * 40 + [9], 3, True)


@pytest.mark.parametrize("swap", [0, 10_000])
def test_preemption_under_pressure_keeps_every_output(swap: int) -> None:
    engine = make(n_ctx=128, swap=swap)
    out: dict[tuple[int, int], list[int]] = {}
    prompts = [[i + 1] * 20 for i in range(4)]
    for i, p in enumerate(prompts):
        engine.add(i, p, SamplingParams(max_tokens=40, ignore_eos=True))
    drain(engine, out)
    kind = "swap" if swap else "recompute"
    assert engine.scheduler.preemptions[kind] > 0
    for i, p in enumerate(prompts):
        assert out[(i, 0)] == reference(p, 40, False)

"""Prefill on one engine, import on another, against the fake runner (fake_runner.py), whose logits
depend on exactly the tokens a sequence's cells hold: an imported request generates what running its
prompt alone does, the exported state holds the prompt but its last token, refusals change nothing,
and the bookkeeping (blocks, cells, the prefix cache) stays exact."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicap.config import EngineConfig
from aicap.engine.llm_engine import LLMEngine, TokenEvent
from aicap.engine.sampler import SamplingParams
from aicap.errors import FailedPrecondition, InvalidArgument, NotFound
from aicap.kv_state import KvState
from tests.aicap.engine.fake_runner import FakeRunner, reference

PROMPT = [3, 4, 5, 6, 7, 8, 9, 10] * 3 + [11, 12, 13]  # 27 tokens: three full blocks and a partial one
GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)


def make(n_ctx: int = 256, **kw: object) -> LLMEngine:
    cfg = {"block_size": 8, "max_batch_tokens": 64, "max_running": 4, **kw}
    return LLMEngine(FakeRunner(n_ctx, 12), EngineConfig(**cfg))  # type: ignore[arg-type]


def drain(engine: LLMEngine) -> list[TokenEvent]:
    events: list[TokenEvent] = []
    while engine.has_work():
        events += engine.step()
        engine.blocks.check_invariants()
    return events


def prefill(engine: LLMEngine, tokens: list[int], request_id: int = 100) -> KvState:
    engine.prefill(request_id, tokens)
    (ev,) = [e for e in drain(engine) if e.seq_id == request_id]
    assert (ev.token, ev.finished, ev.finish_reason) == (-1, True, "prefilled")
    assert ev.state is not None
    return ev.state


def tokens_of(events: list[TokenEvent], request_id: int) -> list[int]:
    return [e.token for e in events if e.seq_id == request_id]


def idle(engine: LLMEngine) -> bool:
    runner: FakeRunner = engine.runner  # type: ignore[assignment]
    holders = set(engine.cells.holders)
    private = [c for c in runner.cells.values() if not c[2] <= holders]  # cells a slot still holds
    return not engine.has_work() and not private and not engine._samples


def test_an_imported_request_generates_what_the_prompt_alone_does() -> None:
    a, b = make(), make()
    state = prefill(a, PROMPT)
    assert state.tokens == tuple(PROMPT[:-1])
    assert state.model_digest == "fa" * 32 and state.cache_type == "f16"
    assert sorted(pickle.loads(state.data)) == list(enumerate(PROMPT[:-1]))  # positions 0..k-1
    assert idle(a)
    b.add(1, PROMPT, GREEDY, imported=state)
    events = drain(b)
    assert tokens_of(events, 1) == reference(PROMPT, 12, False)
    assert events[0].cached_tokens == 0
    assert idle(b)


def test_the_import_computes_only_the_tokens_after_the_state() -> None:
    b = make()
    state = prefill(make(), PROMPT[:20])  # the state holds 19 tokens
    decoded: list[int] = []
    real = b.runner.decode

    def counting(work, lone=False):  # type: ignore[no-untyped-def]
        decoded.extend(len(w[1]) for w in work)
        return real(work, lone)

    b.runner.decode = counting  # type: ignore[method-assign]
    b.add(1, PROMPT, SamplingParams(max_tokens=1), imported=state)
    assert tokens_of(drain(b), 1) == reference(PROMPT, 1, False)
    assert decoded == [len(PROMPT) - 19]


def test_a_prefill_is_batched_with_running_requests_and_uses_the_prefix_cache() -> None:
    a = make(isolate_apps=False)
    a.add(1, [*PROMPT, 20, 21], GREEDY)
    first = a.step()  # request 1's prompt is computed and its full blocks cached
    a.prefill(2, PROMPT)
    events = a.step()
    assert sorted((e.seq_id, e.token == -1) for e in events) == [(1, False), (2, True)]  # one decode
    (done,) = [e for e in events if e.seq_id == 2]
    assert done.cached_tokens == 24  # three blocks from request 1
    state = done.state
    assert state is not None and sorted(pickle.loads(state.data)) == list(enumerate(PROMPT[:-1]))
    rest = drain(a)
    assert tokens_of(first + events + rest, 1) == reference([*PROMPT, 20, 21], 12, False)
    b = make()
    b.add(3, PROMPT, GREEDY, imported=state)
    assert tokens_of(drain(b), 3) == reference(PROMPT, 12, False)


def test_n_samples_import_once_and_share_through_the_prefix_cache() -> None:
    b = make()
    state = prefill(make(), PROMPT)
    params = SamplingParams(max_tokens=6, n=3, temperature=1.0, seed=3, ignore_eos=True)
    b.add(1, PROMPT, params, imported=state)
    samples = b._samples[1]
    assert samples[0].imported is state and samples[1].imported is None is samples[2].imported
    events = drain(b)
    assert len(tokens_of(events, 1)) == 18
    assert b.blocks.prefix_hits >= 2 * 24  # samples 1 and 2 took the imported blocks from the cache
    assert idle(b)


def test_a_state_llama_cpp_refuses_is_computed_instead() -> None:
    b = make()
    state = prefill(make(), PROMPT)
    b.runner.refuse_restore = True  # type: ignore[attr-defined]
    b.add(1, PROMPT, GREEDY, imported=state)
    assert tokens_of(drain(b), 1) == reference(PROMPT, 12, False)
    assert idle(b)


def test_an_import_preempted_for_recompute_computes_every_token() -> None:
    # 64 cells: the import (27 + 30 tokens) and a rival of the same size cannot both finish
    b = make(n_ctx=64, swap_budget_tokens=0, max_batch_tokens=32)
    state = prefill(make(), PROMPT)
    b.add(1, PROMPT, SamplingParams(max_tokens=30, ignore_eos=True), imported=state)
    b.add(2, [9] * 27, SamplingParams(max_tokens=30, ignore_eos=True))
    events = drain(b)
    assert b.scheduler.preemptions["recompute"] > 0
    assert tokens_of(events, 1) == reference(PROMPT, 30, False)
    assert tokens_of(events, 2) == reference([9] * 27, 30, False)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"model_digest": "ab" * 32}, FailedPrecondition, "another model"),
        ({"cache_type": "q8_0"}, FailedPrecondition, "cache type is q8_0"),
        ({"tokens": (*PROMPT[:5], 99)}, InvalidArgument, "not a proper prefix"),
        ({"tokens": tuple(PROMPT)}, InvalidArgument, "not a proper prefix"),  # nothing left to compute
    ],
)
def test_a_state_that_does_not_fit_is_refused_and_changes_nothing(
    change: dict[str, object], error: type[Exception], message: str
) -> None:
    b = make()
    state = dataclasses.replace(prefill(make(), PROMPT), **change)  # type: ignore[arg-type]
    free = b.blocks.num_free_blocks
    with pytest.raises(error, match=message):
        b.add(1, PROMPT, GREEDY, imported=state)
    assert idle(b) and b.blocks.num_free_blocks == free and not b.runner.cells  # type: ignore[attr-defined]
    b.add(1, PROMPT, GREEDY)  # the request id is still free
    assert tokens_of(drain(b), 1) == reference(PROMPT, 12, False)


def test_a_prefill_needs_a_token_to_leave_and_can_be_aborted() -> None:
    a = make()
    with pytest.raises(InvalidArgument, match="at least 2 tokens"):
        a.prefill(1, [5])
    a.prefill(1, PROMPT)
    a.abort(1)  # before it ran
    assert idle(a) and drain(a) == []


def continue_elsewhere(source: LLMEngine, rid: int, max_tokens: int) -> list[int]:
    """Exports request `rid` from `source` and runs it to the end on a new engine; all its output."""
    state, tokens = source.export(rid)
    assert state.tokens == tuple(tokens[:-1])  # every token but the last sampled one
    assert not source.has_request(rid)
    output = tokens[len(PROMPT) :]
    target = make()
    target.add(
        rid, tokens, SamplingParams(max_tokens=max_tokens - len(output), ignore_eos=True), imported=state
    )
    return output + tokens_of(drain(target), rid)


def test_an_exported_generation_continues_on_another_engine() -> None:
    a = make()
    a.add(1, PROMPT, GREEDY)
    a.add(2, [7] * 9, GREEDY)  # a neighbour that keeps running here
    events = a.step() + a.step() + a.step()
    assert len(tokens_of(events, 1)) == 3
    assert continue_elsewhere(a, 1, 12) == reference(PROMPT, 12, False)
    assert tokens_of(events + drain(a), 2) == reference([7] * 9, 12, False)
    assert idle(a)


def test_a_swapped_out_generation_exports_its_saved_state() -> None:
    a = make(n_ctx=64, swap_budget_tokens=1000, max_batch_tokens=32)
    a.add(1, PROMPT, SamplingParams(max_tokens=30, ignore_eos=True))
    a.add(2, [9] * 27, SamplingParams(max_tokens=30, ignore_eos=True))
    events: list[TokenEvent] = []
    while not a.scheduler.swapped:
        events += a.step()
    (swapped,) = a.scheduler.swapped
    rid = swapped.request_id
    prompt = PROMPT if rid == 1 else [9] * 27
    state, tokens = a.export(rid)
    assert state.tokens == tuple(tokens[: len(state.tokens)]) and tokens[: len(prompt)] == prompt
    target = make()
    out = tokens[len(prompt) :]
    target.add(rid, tokens, SamplingParams(max_tokens=30 - len(out), ignore_eos=True), imported=state)
    assert out + tokens_of(drain(target), rid) == reference(prompt, 30, False)
    other = 3 - rid
    assert tokens_of(events + drain(a), other) == reference(PROMPT if other == 1 else [9] * 27, 30, False)
    assert idle(a) and not a.scheduler.swapped_tokens


def test_what_cannot_be_exported_is_refused_and_keeps_running() -> None:
    a = make(max_running=1)
    a.add(1, PROMPT, GREEDY)
    a.add(2, PROMPT, GREEDY)
    a.step()
    with pytest.raises(NotFound):
        a.export(9)
    with pytest.raises(FailedPrecondition, match="no KV yet"):
        a.export(2)  # waiting for the one running slot
    events = drain(a)
    assert tokens_of(events, 1)[-11:] == reference(PROMPT, 12, False)[-11:]
    assert tokens_of(events, 2) == reference(PROMPT, 12, False)
    a.add(3, PROMPT, SamplingParams(max_tokens=4, n=2, temperature=1.0, ignore_eos=True))
    a.step()
    with pytest.raises(InvalidArgument, match="one sample"):
        a.export(3)
    a.prefill(4, PROMPT)
    with pytest.raises(InvalidArgument, match="one sample"):
        a.export(4)


prompt_st = st.tuples(
    st.sampled_from([PROMPT[:9], PROMPT, [4, 5] * 12]), st.lists(st.integers(1, 31), max_size=6)
)
kv_op = st.one_of(
    st.tuples(st.just("add"), prompt_st, st.integers(1, 20)),
    st.tuples(st.just("prefill"), prompt_st, st.integers(1, 20)),
    st.tuples(st.just("step"), st.integers(1, 5), st.integers(0, 3).map(lambda x: x == 0)),  # 1/4 refused
    st.tuples(st.just("migrate"), st.integers(0, 30)),
)


class Chains:
    """Requests whose output may come in links: a prefill's state imported by a new request, a
    generation exported and continued by a new request (on the same engine: any engine of the
    model imports). What each whole chain must produce is its first prompt's reference output."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.wanted: dict[int, tuple[list[int], int]] = {}  # first link → (prompt, max_tokens)
        self.then: dict[int, int] = {}  # link → the request that continues it
        self.first: dict[int, int] = {}  # link → its chain's first link
        self.prefills: dict[int, tuple[list[int], int]] = {}  # prefill → what imports its state
        self.out: dict[int, list[int]] = {}
        self.ids = 0

    def add(self, prompt: list[int], max_tokens: int, imported: KvState | None = None) -> None:
        self.ids += 1
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        self.engine.add(self.ids, prompt, params, imported=imported)
        self.wanted[self.ids] = (prompt, max_tokens)
        self.first[self.ids] = self.ids

    def prefill(self, prompt: list[int], max_tokens: int) -> None:
        self.ids += 1
        self.engine.prefill(self.ids, prompt)
        self.prefills[self.ids] = (prompt, max_tokens)

    def step(self) -> None:
        for ev in self.engine.step():
            if ev.state is None:
                self.out.setdefault(ev.seq_id, []).append(ev.token)
            else:
                self.add(*self.prefills.pop(ev.seq_id), imported=ev.state)
        self.engine.blocks.check_invariants()

    def migrate(self, pick: int) -> None:
        live = sorted(r for r in self.engine._samples if r in self.first)
        if not live:
            return
        old = live[pick % len(live)]
        try:
            state, tokens = self.engine.export(old)
        except FailedPrecondition:
            return  # not started: it stays
        first = self.first[old]
        prompt, max_tokens = self.wanted[first]
        self.ids += 1
        left = SamplingParams(max_tokens=max_tokens - (len(tokens) - len(prompt)), ignore_eos=True)
        self.engine.add(self.ids, tokens, left, imported=state)
        self.then[old], self.first[self.ids] = self.ids, first

    def check(self) -> None:
        for r, (prompt, max_tokens) in self.wanted.items():
            got, link = list(self.out.get(r, [])), r
            while link in self.then:
                link = self.then[link]
                got += self.out.get(link, [])
            assert got == reference(prompt, max_tokens, False), r


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(kv_op, max_size=30), swap=st.sampled_from([0, 64, 10_000]), n_ctx=st.sampled_from([96, 256])
)
def test_prefills_imports_and_migrations_in_any_order_keep_every_output(
    ops: list, swap: int, n_ctx: int
) -> None:
    """Interleaved with steps under preemption (swap and recompute) and refused restores, every chain
    of prefill, import, export and continuation produces exactly its prompt's tokens alone, and
    nothing is left behind: no block, no slot's cell, no request."""
    engine = make(n_ctx=n_ctx, swap_budget_tokens=swap, max_running=3)
    runner: FakeRunner = engine.runner  # type: ignore[assignment]
    chains = Chains(engine)
    for o in ops:
        if o[0] in ("add", "prefill"):
            (base, suffix), max_tokens = o[1], o[2]
            (chains.add if o[0] == "add" else chains.prefill)(base + suffix, max_tokens)
        elif o[0] == "step":
            runner.refuse_restore = o[2]
            for _ in range(o[1]):
                chains.step()
            runner.refuse_restore = False
        else:
            chains.migrate(o[1])
    while engine.has_work():
        chains.step()
    chains.check()
    assert engine.blocks.num_free_blocks == len(engine.blocks.blocks) and not engine._samples
    assert {s for _, _, seqs in runner.cells.values() for s in seqs} <= set(engine.cells.holders)

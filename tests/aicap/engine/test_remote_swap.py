"""Swapping preempted sequences to a remote KV store (remote_swap.py) against the fake runner and an
in-memory store whose answers the tests deliver when they choose (now, later, or as failures): every
sample still gets exactly the tokens of running it alone, a failed put or get falls back to recompute,
an ended sequence's state is dropped from the store, and nothing is left anywhere."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicap.config import EngineConfig
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.remote_swap import Drop, Get, Move, Put
from aicap.engine.sampler import SamplingParams
from aicap.engine.sequence import Away, Status
from aicap.errors import FailedPrecondition
from aicap.kv_state import KvState
from tests.aicap.engine.fake_runner import FakeRunner, reference

LONG = SamplingParams(max_tokens=40, ignore_eos=True)


class Store:
    """The remote store: the states it keeps, and the moves whose answers are not delivered yet."""

    def __init__(self) -> None:
        self.kept: dict[int, KvState] = {}
        self.pending: list[Move] = []
        self._ids = itertools.count(1)
        self.dropped: list[Any] = []

    def collect(self, engine: LLMEngine) -> None:
        self.pending += engine.take_moves()

    def settle(
        self,
        engine: LLMEngine,
        n: int | None = None,
        put_ok: bool = True,
        get_ok: bool = True,
        gets: bool = True,
    ) -> None:
        """Answers the first `n` pending moves (all by default, and the drops they cause; no Get
        unless `gets`)."""
        self.collect(engine)
        todo = self.pending if n is None else self.pending[:n]
        self.pending = [] if n is None else self.pending[n:]
        if not gets:
            self.pending += [m for m in todo if isinstance(m, Get)]
            todo = [m for m in todo if not isinstance(m, Get)]
        self._answer(engine, todo, put_ok, get_ok)
        self.collect(engine)
        if n is None and any(isinstance(m, Drop) for m in self.pending):
            self.settle(engine, None, put_ok, get_ok, gets)

    def _answer(self, engine: LLMEngine, todo: list[Move], put_ok: bool, get_ok: bool) -> None:
        for move in todo:
            if isinstance(move, Put):
                handle = next(self._ids) if put_ok else None
                if handle is not None:
                    self.kept[handle] = move.state
                engine.kept(move.ticket, handle)
            elif isinstance(move, Get):
                state = self.kept.pop(move.handle)  # given back, it is forgotten here
                engine.returned(move.ticket, state if get_ok else None)
            else:
                assert isinstance(move, Drop)
                assert move.handle in self.kept, "a drop of a state the store does not hold"
                del self.kept[move.handle]
                self.dropped.append(move.handle)


def make(n_ctx: int = 128, swap: int = 0, remote: bool = True) -> LLMEngine:
    engine = LLMEngine(
        FakeRunner(n_ctx, 12),  # type: ignore[arg-type]
        EngineConfig(block_size=8, max_batch_tokens=64, max_running=4, swap_budget_tokens=swap),
    )
    if remote:
        engine.use_remote_store()
    return engine


def record(out: dict[tuple[int, int], list[int]], engine: LLMEngine) -> None:
    for ev in engine.step():
        out.setdefault((ev.seq_id, ev.index), []).append(ev.token)
    engine.blocks.check_invariants()


def drain(engine: LLMEngine, store: Store, out: dict[tuple[int, int], list[int]], **answers: bool) -> None:
    steps = 0
    while engine.has_work() or store.pending or engine.remote.moves:
        if engine.has_work():
            record(out, engine)
        store.settle(engine, **answers)
        for seq in engine.scheduler.swapped:  # a state kept away is not kept here too
            if seq.away is Away.AWAY:
                assert seq.seq_id not in engine.cells._swapped
        steps += 1
        assert steps < 5000, "no progress"


def assert_clean(engine: LLMEngine, store: Store) -> None:
    assert not store.kept and not store.pending, "a state left in the store"
    assert not engine.cells._swapped
    assert engine.blocks.num_free_blocks == len(engine.blocks.blocks)
    assert not engine._samples


def add_four(engine: LLMEngine, may_leave: bool = True) -> list[list[int]]:
    prompts = [[i + 1] * 20 for i in range(4)]
    for i, p in enumerate(prompts):
        engine.add(i, p, LONG, may_leave=may_leave)
    return prompts


def test_sequences_preempted_beyond_the_budget_go_to_the_store_and_come_back() -> None:
    engine, store, out = make(), Store(), {}
    prompts = add_four(engine)
    drain(engine, store, out)
    for i, p in enumerate(prompts):
        assert out[(i, 0)] == reference(p, 40, False)
    s = engine.stats()
    assert s.preemptions_remote > 0 and s.preemptions_recompute == 0 and s.preemptions_swap == 0
    assert s.remote_kv_failures == 0
    assert s.remote_kv_bytes_sent > 0 and s.remote_kv_bytes_received == s.remote_kv_bytes_sent
    assert_clean(engine, store)


def test_the_local_budget_is_used_first() -> None:
    engine, store, out = make(n_ctx=128, swap=10_000), Store(), {}
    add_four(engine)
    drain(engine, store, out)
    s = engine.stats()
    assert s.preemptions_swap > 0 and s.preemptions_remote == 0
    assert_clean(engine, store)


@pytest.mark.parametrize("remote", [False, True])
def test_without_a_store_or_for_a_request_that_stays_here_it_is_recompute(remote: bool) -> None:
    engine, store, out = make(remote=remote), Store(), {}
    prompts = add_four(engine, may_leave=not remote)
    drain(engine, store, out)
    for i, p in enumerate(prompts):
        assert out[(i, 0)] == reference(p, 40, False)
    s = engine.stats()
    assert s.preemptions_recompute > 0 and s.preemptions_remote == 0
    assert not store.dropped and s.remote_kv_bytes_sent == 0
    assert_clean(engine, store)


@pytest.mark.parametrize("failing", ["put_ok", "get_ok"])
def test_a_store_that_fails_falls_back_to_recompute(failing: str) -> None:
    engine, store, out = make(), Store(), {}
    prompts = add_four(engine)
    drain(engine, store, out, **{failing: False})
    for i, p in enumerate(prompts):
        assert out[(i, 0)] == reference(p, 40, False)
    s = engine.stats()
    assert s.preemptions_remote > 0 and s.remote_kv_failures > 0
    if failing == "put_ok":
        assert s.remote_kv_bytes_sent == 0
    else:
        assert s.remote_kv_bytes_sent > 0 and s.remote_kv_bytes_received == 0
    assert_clean(engine, store)


def _until(engine: LLMEngine, store: Store, away: Away, out: dict) -> Any:
    """Steps (answering every move) until a sequence's state is `away`; returns the sequence."""
    for _ in range(500):
        for seq in engine.scheduler.swapped:
            if seq.away is away:
                return seq
        record(out, engine)
        if away is not Away.SHIPPING:
            store.settle(engine)
    raise AssertionError(f"no sequence got {away}")


def test_a_state_that_comes_back_changed_is_refused() -> None:
    engine, store, out = make(), Store(), {}
    prompts = add_four(engine)
    seq = _until(engine, store, Away.AWAY, out)
    for h, state in store.kept.items():
        store.kept[h] = KvState(state.model_digest, state.cache_type, state.tokens[:-1], state.data)
    drain(engine, store, out)
    assert engine.stats().remote_kv_failures >= 1
    assert out[(seq.request_id, 0)] == reference(prompts[seq.request_id], 40, False)
    assert_clean(engine, store)


def test_while_a_state_is_fetched_the_sequence_waits_and_blocks_no_running_one() -> None:
    engine, store, out = make(), Store(), {}
    prompts = add_four(engine)
    seq = _until(engine, store, Away.AWAY, out)
    # step without answering: once its blocks are free it is asked back, and waits
    for _ in range(200):
        record(out, engine)
        store.collect(engine)
        if seq.away is Away.FETCHING:
            break
    assert seq.away is Away.FETCHING and any(isinstance(m, Get) for m in store.pending)
    engine.add(9, [7] * 20, LONG, may_leave=True)  # new requests wait behind it
    steps = 0
    while engine.has_work():
        assert seq.away is Away.FETCHING
        record(out, engine)  # the running ones go on
        store.settle(engine, gets=False)
        assert all(s.request_id != 9 for s in engine.scheduler.running)
        steps += 1
        assert steps < 500
    # nothing to do but wait for the state: the inference thread sleeps until it comes
    assert not engine.scheduler.running and engine.scheduler.waiting
    store.settle(engine)
    assert engine.has_work()
    drain(engine, store, out)
    for i, p in enumerate(prompts):
        assert out[(i, 0)] == reference(p, 40, False)
    assert out[(9, 0)] == reference([7] * 20, 40, False)
    assert_clean(engine, store)


def test_an_ended_request_drops_its_state_from_the_store() -> None:
    engine, store, out = make(), Store(), {}
    add_four(engine)
    seq = _until(engine, store, Away.AWAY, out)
    kept = set(store.kept)
    engine.abort(seq.request_id)
    store.settle(engine)
    assert store.dropped and set(store.dropped) <= kept
    drain(engine, store, out)
    assert_clean(engine, store)


def test_a_request_ended_while_its_state_ships_or_comes_back_leaves_nothing() -> None:
    engine, store, out = make(), Store(), {}
    add_four(engine)
    shipping = _until(engine, store, Away.SHIPPING, out)
    engine.abort(shipping.request_id)  # the store answers after: it drops what it kept
    store.settle(engine)
    assert store.dropped
    fetching = _until(engine, store, Away.AWAY, out)
    for _ in range(200):
        record(out, engine)
        store.collect(engine)
        if fetching.away is Away.FETCHING:
            break
    assert fetching.away is Away.FETCHING
    engine.abort(fetching.request_id)
    store.settle(engine)  # its state comes back to nobody
    drain(engine, store, out)
    assert_clean(engine, store)


def test_a_sequence_swapped_in_while_its_state_ships_drops_the_stores_copy() -> None:
    engine, store, out = make(), Store(), {}
    prompts = add_four(engine)
    seq = _until(engine, store, Away.SHIPPING, out)
    for _ in range(200):  # no answers: its state is still here, and it swaps in from here
        record(out, engine)
        store.collect(engine)
        if seq.status == Status.RUNNING:
            break
    assert seq.status == Status.RUNNING
    puts = sum(isinstance(m, Put) for m in store.pending)
    store.settle(engine)
    assert len(store.dropped) >= 1 and len(store.dropped) <= puts
    drain(engine, store, out)
    assert out[(seq.request_id, 0)] == reference(prompts[seq.request_id], 40, False)
    assert_clean(engine, store)


def test_a_request_whose_state_is_away_cannot_be_exported() -> None:
    engine, store, out = make(), Store(), {}
    add_four(engine)
    seq = _until(engine, store, Away.AWAY, out)
    with pytest.raises(FailedPrecondition, match="another device"):
        engine.export(seq.request_id)
    drain(engine, store, out)
    assert_clean(engine, store)


request = st.tuples(st.integers(1, 31), st.integers(16, 40), st.integers(10, 50), st.booleans())
op = st.one_of(
    st.tuples(st.just("add"), request),
    st.tuples(st.just("step"), st.integers(1, 6)),
    st.tuples(st.just("answer"), st.integers(0, 4), st.booleans(), st.booleans()),
    st.tuples(st.just("abort"), st.integers(0, 12)),
)


@settings(max_examples=150, deadline=None)
@given(
    first=st.lists(request, min_size=3, max_size=6),
    ops=st.lists(op, max_size=50),
    swap=st.sampled_from([0, 24]),
    n_ctx=st.sampled_from([96, 128]),
    last=st.sampled_from([(True, True), (False, True), (True, False)]),
)
def test_any_interleaving_of_steps_answers_failures_and_aborts_keeps_every_output(
    first: list, ops: list, swap: int, n_ctx: int, last: tuple[bool, bool]
) -> None:
    engine, store = make(n_ctx=n_ctx, swap=swap), Store()
    out: dict[tuple[int, int], list[int]] = {}
    expected: dict[int, tuple[list[int], int]] = {}
    aborted: set[int] = set()
    for o in [("add", r) for r in first] + ops:
        if o[0] == "add":
            tok, length, max_tokens, leave = o[1]
            rid = len(expected)
            expected[rid] = ([tok] * length, max_tokens)
            params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
            engine.add(rid, [tok] * length, params, may_leave=leave)
        elif o[0] == "step":
            for _ in range(o[1]):
                if engine.has_work():
                    record(out, engine)
                store.collect(engine)
        elif o[0] == "answer":
            store.settle(engine, o[1], put_ok=o[2], get_ok=o[3])
        else:
            engine.abort(o[1])
            aborted.add(o[1])
    drain(engine, store, out, put_ok=last[0], get_ok=last[1])
    for rid, (prompt, max_tokens) in expected.items():
        want = reference(prompt, max_tokens, False)
        got = out.get((rid, 0), [])
        assert got == (want[: len(got)] if rid in aborted else want), rid
    assert_clean(engine, store)

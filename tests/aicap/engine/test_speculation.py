"""Speculation (aicap/engine/speculation.py): the n-gram drafter on its own, and the engine with and
without drafts on FakeRunner models, one that copies its input (drafts are accepted) and one that
does not (they are rejected): every sample's tokens are exactly those of plain decoding, greedy and
seeded alike, under preemption, stop tokens, n > 1 and max_tokens; the KV cells of rejected drafts
and their blocks go back; the counters count."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from fake_runner import EOG, VOCAB, FakeRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from aicap.config import EngineConfig
from aicap.engine.llm_engine import LLMEngine, TokenEvent
from aicap.engine.sampler import SamplingParams
from aicap.engine.speculation import Drafter

PERIOD = 5


class CopyingRunner(FakeRunner):
    """A "model" that repeats what it read `PERIOD` tokens back (so drafts from the prompt hit), and
    now and then something else (so some miss): a deterministic function of the history, like the
    real one, so plain and speculative decoding must agree token for token."""

    def logits_for(self, history: Sequence[int]) -> np.ndarray:
        out = np.full(VOCAB, -2.0, dtype=np.float32)
        n = len(history)
        nxt = history[-PERIOD] if n >= PERIOD else 1
        if n % 11 == 0:  # a change of subject
            nxt = 1 + (nxt + n) % (VOCAB - 1)
        out[nxt] = 4.0
        out[1 + (nxt + 3) % (VOCAB - 1)] = 3.0  # a close second, for sampled runs
        out[EOG] = 2.5 if n % 13 == 0 else -3.0
        return out


def make(copying: bool, draft: int, n_ctx: int = 512, **kw: object) -> LLMEngine:
    # a drafted token costs a twentieth of a step here (the fake runner's steps are too quick to measure)
    cfg = {"block_size": 8, "max_batch_tokens": 64, "max_running": 4, "spec_draft_max": draft, **kw}
    cfg.setdefault("spec_token_cost", 0.05)
    runner = CopyingRunner(n_ctx, 12) if copying else FakeRunner(n_ctx, 12)
    return LLMEngine(runner, EngineConfig(**cfg))  # type: ignore[arg-type]


def run(engine: LLMEngine, requests: list[tuple[list[int], SamplingParams]]) -> tuple[dict, int]:
    """Each request's samples' tokens (by request and sample) and the steps it took; checks the
    blocks after every step and that nothing is left at the end."""
    for rid, (prompt, params) in enumerate(requests):
        engine.add(rid, prompt, params)
    out: dict[tuple[int, int], list[int]] = {}
    ends: dict[tuple[int, int], str | None] = {}
    steps = 0
    while engine.has_work():
        events: list[TokenEvent] = engine.step()
        steps += 1
        engine.blocks.check_invariants()
        for ev in events:
            key = (ev.seq_id, ev.index)
            assert key not in ends, f"a token after the end of {key}"
            out.setdefault(key, []).append(ev.token)
            if ev.finished:
                ends[key] = ev.finish_reason
    assert set(ends) == set(out)
    runner: FakeRunner = engine.runner  # type: ignore[assignment]
    holders = set(engine.cells.holders)
    assert all(seqs <= holders for _, _, seqs in runner.cells.values()), "a slot kept cells"
    assert engine.blocks.num_free_blocks == len(engine.blocks.blocks) and not engine._samples
    return out, steps


PATTERN = [7, 3, 9, 4, 12]


def test_the_drafter_proposes_what_followed_the_latest_longest_match() -> None:
    d = Drafter()
    tokens = [1, 2, 3, 4, 5, 9, 2, 3, 6, 7, 8, 2, 3]
    assert d.propose(tokens, 0.0, 4) == [6, 7, 8, 2]  # no earlier "8 2 3"; "2 3" last came before 6
    tokens += [6, 7, 8, 2, 3]
    assert d.propose(tokens, 0.0, 2) == [6, 7]  # the latest earlier "8 2 3", indexed as the tokens grew
    tokens += [4]
    assert d.propose(tokens, 0.0, 9) == [5, 9, 2, 3, 6, 7, 8, 2, 3]  # "2 3 4": the start; up to the end
    assert Drafter().propose([5, 6, 7], 0.0, 3) == []  # nothing repeats
    assert Drafter().propose([8, 8], 0.0, 3) == []  # one token of context is not enough
    assert Drafter().propose([8, 8, 8], 0.0, 3) == [8]  # "8 8" followed by 8: the suffix never matches itself
    assert Drafter().propose([1, 2, 3, 1, 2], 0.0, 0) == []


def test_a_draft_is_as_long_as_its_acceptance_rate_pays_for() -> None:
    d = Drafter()
    assert d.rate == pytest.approx(0.9)
    assert d.length(0.0, 8) == 8 and d.length(1.0, 8) == 0
    assert d.length(0.5, 8) == 6  # 0.9^6 = 0.53 > 0.5 > 0.9^7
    for _ in range(10):  # a sequence that copies its input
        d.accepted(8, 8)
    assert d.rate > 0.97 and d.length(0.85, 8) == 8 and d.length(0.85, 4) == 4
    misses = 0
    while d.length(0.5, 8):  # then writes its own text: every draft is rejected at once
        d.accepted(0, 5)
        misses += 1
    assert misses <= 6 and d.rate <= 0.5
    for _ in range(4):  # drafts of one token that missed too
        d.accepted(0, 1)
    steps = 0
    while d.length(0.5, 8) == 0:  # without drafts the evidence fades: it tries again, later
        steps += 1
    assert 5 < steps < 60
    assert d.length(0.5, 8) == 1


def test_drafts_at_seams_missing_do_not_shorten_the_copies_of_a_span() -> None:
    """Rates are kept by how far the match goes back: a 2-token match (a JSON key between copied
    values) that keeps missing stops drafting, while a draft inside a copied span (12 tokens agree)
    is still as long as the prior pays for."""
    d = Drafter()
    tokens = [*range(100, 130), 5, 6, 9, 7, 5, 6]  # "5 6" seen once before, after 129
    for _ in range(6):
        draft = d.propose(tokens, 0.5, 8)
        if draft:
            d.accepted(0, len(draft))
    assert d.propose(tokens, 0.5, 8) == []
    tokens += [1, *range(100, 114)]  # copying the span from its start
    assert d.propose(tokens, 0.5, 8) == list(range(114, 120))  # 0.9^6 = 0.53 > 0.5 > 0.9^7
    assert Drafter().propose([5, 6, 7], 0.5, 8) == []  # nothing repeats


def test_copied_text_takes_fewer_steps_for_exactly_the_same_tokens() -> None:
    prompt = PATTERN * 6
    params = SamplingParams(max_tokens=40, ignore_eos=True)
    plain, plain_steps = run(make(True, 0), [(prompt, params)])
    spec_engine = make(True, 4)
    spec, spec_steps = run(spec_engine, [(prompt, params)])
    assert spec == plain and len(plain[(0, 0)]) == 40
    stats = spec_engine.stats()
    assert stats.spec_draft_tokens > 0 and 0 < stats.spec_accepted_tokens <= stats.spec_draft_tokens
    assert stats.generation_tokens_total == 40
    assert spec_steps < plain_steps * 0.6, (spec_steps, plain_steps)


def test_drafts_stay_within_the_steps_token_limit() -> None:
    engine = make(True, 4, spec_max_batch_tokens=6)
    seen = []
    real = engine.runner.decode

    def counting(work, lone=False):  # type: ignore[no-untyped-def]
        seen.append(sum(len(w[1]) for w in work) if all(len(w[1]) == w[3] for w in work) else 0)
        return real(work, lone)

    engine.runner.decode = counting  # type: ignore[method-assign]
    params = SamplingParams(max_tokens=30, ignore_eos=True)
    run(engine, [([*PATTERN * 4, i], params) for i in range(3)])
    assert max(seen) <= 6 and max(seen) > 3  # three decodes and at most three drafted tokens


def test_drafts_that_cannot_pay_are_not_made() -> None:
    engine = make(True, 8, spec_token_cost=1.0)
    run(engine, [(PATTERN * 6, SamplingParams(max_tokens=30, ignore_eos=True))])
    assert engine.stats().spec_draft_tokens == 0


request = st.tuples(
    st.lists(st.sampled_from([*PATTERN, 20, 21]), min_size=1, max_size=40),
    st.integers(1, 30),  # max_tokens
    st.sampled_from([0.0, 0.8]),  # temperature
    st.integers(1, 2),  # n
    st.booleans(),  # ignore_eos
)


@settings(max_examples=120, deadline=None)
@given(
    reqs=st.lists(request, min_size=1, max_size=5),
    copying=st.booleans(),
    n_ctx=st.sampled_from([96, 512]),  # 96: preemption by recompute and swap
    draft=st.integers(1, 5),
    limit=st.sampled_from([4, 8, 64]),
)
def test_speculation_never_changes_a_token(
    reqs: list, copying: bool, n_ctx: int, draft: int, limit: int
) -> None:
    requests = [
        (prompt, SamplingParams(max_tokens=m, temperature=t, n=n, seed=11 * i, ignore_eos=eos))
        for i, (prompt, m, t, n, eos) in enumerate(reqs)
    ]
    requests = [(p, sp) for p, sp in requests if len(p) + sp.max_tokens <= n_ctx // 2]
    plain, _ = run(make(copying, 0, n_ctx, swap_budget_tokens=64), requests)
    spec, _ = run(make(copying, draft, n_ctx, swap_budget_tokens=64, spec_max_batch_tokens=limit), requests)
    assert spec == plain

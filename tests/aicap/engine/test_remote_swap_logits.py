"""Remote swap on the real model: sequences preempted with no local swap budget go to an in-memory
remote store (test_remote_swap.Store) and come back; their logits after coming back match evaluating
the same tokens alone, within test_engine_logits' tolerance (a wrong or stale KV state would not)."""

from __future__ import annotations

import numpy as np
import pytest

from aicap.engine.model_runner import ModelRunner
from aicap.engine.sampler import SamplingParams
from tests.aicap.engine.test_engine_logits import TEXT, assert_match, engine_for, runner, solo
from tests.aicap.engine.test_remote_swap import Store

pytestmark = [pytest.mark.slow, pytest.mark.model]
__all__ = ["runner", "solo"]  # the fixtures, shared with test_engine_logits


def test_remotely_swapped_sequences_match_alone(runner: ModelRunner, solo: ModelRunner) -> None:
    # as test_preempted_sequences_match_alone: 32 blocks for four ~140-token sequences
    engine = engine_for(runner, swap_budget_tokens=0, spec_draft_max=0)  # that schedule, without drafts
    engine.use_remote_store()
    store = Store()
    requests = {i: runner.tokenize(f"{i}: {TEXT}")[:50] for i in range(4)}
    engine.trace = []
    for rid, prompt in requests.items():
        engine.add(
            rid, prompt, SamplingParams(max_tokens=90, ignore_eos=True), f"com.app{rid % 2}", may_leave=True
        )
    tokens: dict[tuple[int, int], list[int]] = {}
    steps = 0
    while engine.has_work() or store.pending or engine.remote.moves:
        if engine.has_work():
            for ev in engine.step():
                tokens.setdefault((ev.seq_id, ev.index), []).append(ev.token)
        store.settle(engine)
        steps += 1
        assert steps < 2000
    s = engine.stats()
    assert s.preemptions_remote > 0 and s.preemptions_recompute == 0, s
    assert s.remote_kv_bytes_received > 0 and s.remote_kv_failures == 0
    assert not store.kept
    logits: dict[tuple[int, int], list[np.ndarray]] = {}
    for rid, index, lg in engine.trace:
        logits.setdefault((rid, index), []).append(lg)
    assert_match(solo, requests, {k: (tokens[k], logits[k]) for k in tokens})

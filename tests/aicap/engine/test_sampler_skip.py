"""A generation continued elsewhere draws what it would have drawn where it began: the seeded stream
skips the draws already made (one per sampled token)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from aicap.engine.llm_engine import _generator
from aicap.engine.sampler import SamplingParams, draw


@given(seed=st.integers(0, 2**63 - 1), made=st.integers(0, 40), vocab=st.integers(2, 50))
def test_skipping_the_draws_made_continues_the_same_stream(seed: int, made: int, vocab: int) -> None:
    logits = np.linspace(0.0, 3.0, vocab).astype(np.float32)
    p = SamplingParams(max_tokens=64, temperature=0.9, top_p=0.95, top_k=vocab // 2)
    whole = _generator(seed, 0)
    tokens = [draw(logits, p, whole) for _ in range(made + 8)]
    moved = _generator(seed, made)
    assert [draw(logits, p, moved) for _ in range(8)] == tokens[made:]


def test_no_skip_is_the_plain_seeded_generator() -> None:
    assert _generator(7, 0).random() == np.random.default_rng(7).random()

"""The sampler on fixed logits: greedy, the repeat penalty, top_k / top_p / min_p, seeded draws and
log-probabilities under the model's own distribution."""

from __future__ import annotations

import numpy as np

from aicap.engine.sampler import SamplingParams, sample
from aicap.engine.sequence import Sequence

# softmax: 0.084, 0.624, 0.229, 0.011, 0.051
LOGITS = np.array([1.0, 3.0, 2.0, -1.0, 0.5], dtype=np.float32)


def seq(params: SamplingParams, history: list[int] | None = None, seed: int = 0) -> Sequence:
    rng = np.random.default_rng(seed)
    return Sequence(1, "com.a", history or [4], params.max_tokens, params=params, rng=rng)


def log_softmax(logits: np.ndarray, tok: int) -> float:
    lg = logits.astype(np.float64)
    return float(lg[tok] - lg.max() - np.log(np.exp(lg - lg.max()).sum()))


def draws(params: SamplingParams, n: int = 200, seed: int = 0) -> list[int]:
    s = seq(params, seed=seed)
    return [sample(s, LOGITS)[0] for _ in range(n)]


def test_greedy_takes_the_argmax_without_touching_the_generator() -> None:
    s = seq(SamplingParams(max_tokens=1, logprobs=True))
    state = s.rng.bit_generator.state
    tok, logprob = sample(s, LOGITS)
    assert tok == 1
    assert logprob is not None and abs(logprob - log_softmax(LOGITS, 1)) < 1e-9
    assert s.rng.bit_generator.state == state
    assert sample(seq(SamplingParams(max_tokens=1)), LOGITS) == (1, None)


def test_the_repeat_penalty_lowers_recent_tokens_only() -> None:
    p = SamplingParams(max_tokens=1, repeat_penalty=2.0, repeat_last_n=2, logprobs=True)
    tok, logprob = sample(seq(p, [1, 4]), LOGITS)  # 3.0 / 2 = 1.5 < 2.0
    assert tok == 2
    assert logprob is not None and abs(logprob - log_softmax(LOGITS, 2)) < 1e-9  # unpenalized
    assert sample(seq(p, [1, 4, 4]), LOGITS)[0] == 1  # token 1 is 3 tokens back: not penalized
    everything = SamplingParams(max_tokens=1, repeat_penalty=2.0, repeat_last_n=-1)
    assert sample(seq(everything, [1, 4, 4, 4]), LOGITS)[0] == 2
    off = SamplingParams(max_tokens=1, repeat_penalty=2.0, repeat_last_n=0)
    assert sample(seq(off, [1]), LOGITS)[0] == 1
    assert LOGITS.tolist() == [1.0, 3.0, 2.0, -1.0, 0.5]  # the caller's logits are not changed


def test_a_negative_logit_is_multiplied_by_the_penalty() -> None:
    p = SamplingParams(max_tokens=1, repeat_penalty=2.0)
    assert sample(seq(p, [0]), np.array([-1.0, -1.5], dtype=np.float32))[0] == 1  # -2.0 < -1.5


def test_top_k_top_p_and_min_p_bound_the_candidates() -> None:
    hot = {"max_tokens": 1, "temperature": 1.5}
    assert set(draws(SamplingParams(**hot))) == {0, 1, 2, 3, 4}
    assert set(draws(SamplingParams(**hot, top_k=2))) == {1, 2}
    assert set(draws(SamplingParams(**hot, top_k=1))) == {1}
    assert set(draws(SamplingParams(**hot, top_p=0.8))) == {1, 2}  # 0.624 + 0.229 reach 0.8
    assert set(draws(SamplingParams(**hot, top_p=0.5))) == {1}
    assert set(draws(SamplingParams(**hot, min_p=0.3))) == {1, 2}  # 0.229 >= 0.3 * 0.624
    assert set(draws(SamplingParams(**hot, min_p=1.0))) == {1}


def test_a_seed_fixes_the_draws_and_temperature_sharpens_them() -> None:
    p = SamplingParams(max_tokens=1, temperature=1.0)
    assert draws(p, 50, seed=7) == draws(p, 50, seed=7)
    assert draws(p, 50, seed=7) != draws(p, 50, seed=8)
    cold = draws(SamplingParams(max_tokens=1, temperature=0.2), 400)
    warm = draws(SamplingParams(max_tokens=1, temperature=1.0), 400)
    assert cold.count(1) > warm.count(1) > 400 * 0.5

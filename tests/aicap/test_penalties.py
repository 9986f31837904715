"""Presence and frequency penalties as llama.cpp applies them beside the repeat penalty (over the last
repeat_last_n tokens of prompt and output), and their range in a request."""

from __future__ import annotations

import numpy as np
import pytest

from aicap.config import AiConfig
from aicap.engine.sampler import SamplingParams, penalize, sample
from aicap.engine.sequence import Sequence
from aicap.errors import InvalidArgument
from aicap.sampling import sampling

LOGITS = np.array([1.0, 3.0, 2.0, -1.0, 0.5], dtype=np.float32)


def seq(params: SamplingParams, history: list[int]) -> Sequence:
    return Sequence(1, "com.a", history, params.max_tokens, params=params, rng=np.random.default_rng(0))


def test_frequency_counts_and_presence_once_over_the_window() -> None:
    p = SamplingParams(max_tokens=1, frequency_penalty=0.5, presence_penalty=0.25, repeat_last_n=4)
    out = penalize(seq(p, [0, 1, 1, 1, 2]), LOGITS)  # the window is [1, 1, 1, 2]: token 0 is out of it
    assert out.tolist() == pytest.approx([1.0, 3.0 - 1.5 - 0.25, 2.0 - 0.5 - 0.25, -1.0, 0.5])
    assert LOGITS.tolist() == [1.0, 3.0, 2.0, -1.0, 0.5]  # the caller's logits are not changed


def test_with_the_repeat_penalty_first_and_negative_penalties_favour_repeats() -> None:
    p = SamplingParams(max_tokens=1, repeat_penalty=2.0, frequency_penalty=0.5)
    assert penalize(seq(p, [1, 3]), LOGITS).tolist() == pytest.approx([1.0, 1.0, 2.0, -2.5, 0.5])
    favour = SamplingParams(max_tokens=1, presence_penalty=-2.0)
    assert sample(seq(favour, [0]), LOGITS)[0] == 0  # 1 + 2 = 3.0 ties 3.0: the lower index wins
    assert sample(seq(SamplingParams(max_tokens=1, frequency_penalty=2.0), [1]), LOGITS)[0] == 2


def test_off_by_default_and_with_no_window() -> None:
    assert penalize(seq(SamplingParams(max_tokens=1), [1]), LOGITS) is LOGITS
    no_window = SamplingParams(max_tokens=1, presence_penalty=1.0, repeat_last_n=0)
    assert penalize(seq(no_window, [1]), LOGITS) is LOGITS


def test_a_request_may_set_them_within_openais_range() -> None:
    config = AiConfig()
    req = sampling({"presence_penalty": 0.5, "frequency_penalty": -1.0}, config, 10, 512, "m")
    assert (req.params.presence_penalty, req.params.frequency_penalty) == (0.5, -1.0)
    unset = sampling({}, config, 10, 512, "m").params
    assert (unset.presence_penalty, unset.frequency_penalty) == (0.0, 0.0)
    for name in ("presence_penalty", "frequency_penalty"):
        with pytest.raises(InvalidArgument, match=name):
            sampling({name: 2.5}, config, 10, 512, "m")

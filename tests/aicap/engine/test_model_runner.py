"""The llama.cpp runner with the real bundled model: KV bookkeeping checked through logits.

llama.cpp's numerics change with batch composition, so logits are compared within a tolerance."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from aicap.engine.model_runner import ModelRunner, RunnerConfig, default_model_path

pytestmark = pytest.mark.slow
TOL = 0.05  # max absolute logit difference; observed differences here are ~0 to 1e-3, logits ~20


@pytest.fixture(scope="module")
def runner() -> Iterator[ModelRunner]:
    r = ModelRunner(RunnerConfig(default_model_path(), n_ctx=2048, n_seq_max=8))
    yield r
    r.close()


def alone(runner: ModelRunner, tokens: list[int], slot: int = 7) -> np.ndarray:
    runner.drop(slot)
    logits = runner.decode([(slot, tokens, 0)])[slot]
    runner.drop(slot)
    return logits


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).max()) <= TOL


def test_batched_logits_match_alone(runner: ModelRunner) -> None:
    a = runner.tokenize("The capital of France is")
    b = runner.tokenize("Once upon a time, in a land far away, there lived a")
    out = runner.decode([(0, a, 0), (1, b, 0)])
    assert close(out[0], alone(runner, a)) and close(out[1], alone(runner, b))
    assert not close(out[0], out[1])  # the comparison can fail
    runner.drop(0)
    runner.drop(1)


def test_a_shared_prefix_matches_computing_it_alone(runner: ModelRunner) -> None:
    prompt = runner.tokenize(
        "Paris is the capital and most populous city of France, with an estimated population"
    )
    runner.decode([(0, prompt, 0)])
    k = len(prompt) - 3
    runner.share(0, 1, k)  # slot 1 reuses the first k cells of slot 0
    shared = runner.decode([(1, prompt[k:], k)])[1]
    assert close(shared, alone(runner, prompt))
    runner.drop(0)
    runner.drop(1)


def test_swap_out_and_in_restores_the_state_exactly(runner: ModelRunner) -> None:
    prompt = runner.tokenize("The quick brown fox jumps over the lazy dog because")
    first = runner.decode([(2, prompt, 0)])[2]
    nxt = int(first.argmax())
    state = runner.save(2)
    runner.drop(2)
    runner.decode([(2, runner.tokenize("something else entirely"), 0)])  # the slot is reused meanwhile
    runner.drop(2)
    runner.restore(2, state)
    assert runner.save(2) == state  # bit for bit
    runner.restore(3, state)  # into another slot as well
    resumed = runner.decode([(2, [nxt], len(prompt)), (3, [nxt], len(prompt))])
    expected = alone(runner, [*prompt, nxt])
    assert close(resumed[2], expected) and close(resumed[3], expected)
    for slot in (2, 3):
        runner.drop(slot)

"""The llama.cpp runner with the real bundled model: KV bookkeeping checked through logits.

llama.cpp's numerics change with batch composition, so logits are compared within a tolerance."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from aicap.config import RunnerConfig
from aicap.engine.model_runner import ModelRunner, default_model_path

pytestmark = [pytest.mark.slow, pytest.mark.model]
TOL = 0.05  # max absolute logit difference; observed differences here are ~0 to 1e-3, logits ~20


@pytest.fixture(scope="module")
def runner() -> Iterator[ModelRunner]:
    r = ModelRunner(RunnerConfig(default_model_path(), n_ctx=2048, n_seq_max=8))
    yield r
    r.close()


def alone(runner: ModelRunner, tokens: list[int], slot: int = 7) -> np.ndarray:
    runner.drop(slot)
    logits = runner.decode([(slot, tokens, 0, 1)])[slot][-1]
    runner.drop(slot)
    return logits


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).max()) <= TOL


def test_batched_logits_match_alone(runner: ModelRunner) -> None:
    a = runner.tokenize("The capital of France is")
    b = runner.tokenize("Once upon a time, in a land far away, there lived a")
    out = {s: rows[-1] for s, rows in runner.decode([(0, a, 0, 1), (1, b, 0, 1)]).items()}
    assert close(out[0], alone(runner, a)) and close(out[1], alone(runner, b))
    assert not close(out[0], out[1])  # the comparison can fail
    runner.drop(0)
    runner.drop(1)


def test_a_shared_prefix_matches_computing_it_alone(runner: ModelRunner) -> None:
    prompt = runner.tokenize(
        "Paris is the capital and most populous city of France, with an estimated population"
    )
    runner.decode([(0, prompt, 0, 1)])
    k = len(prompt) - 3
    runner.share(0, 1, k)  # slot 1 reuses the first k cells of slot 0
    shared = runner.decode([(1, prompt[k:], k, 1)])[1][-1]
    assert close(shared, alone(runner, prompt))
    runner.drop(0)
    runner.drop(1)


def test_swap_out_and_in_restores_the_state_exactly(runner: ModelRunner) -> None:
    prompt = runner.tokenize("The quick brown fox jumps over the lazy dog because")
    first = runner.decode([(2, prompt, 0, 1)])[2][-1]
    nxt = int(first.argmax())
    state = runner.save(2)
    runner.drop(2)
    runner.decode([(2, runner.tokenize("something else entirely"), 0, 1)])  # the slot is reused meanwhile
    runner.drop(2)
    runner.restore(2, state)
    assert runner.save(2) == state  # bit for bit
    runner.restore(3, state)  # into another slot as well
    rows = runner.decode([(2, [nxt], len(prompt), 1), (3, [nxt], len(prompt), 1)])
    resumed = {s: r[-1] for s, r in rows.items()}
    expected = alone(runner, [*prompt, nxt])
    assert close(resumed[2], expected) and close(resumed[3], expected)
    for slot in (2, 3):
        runner.drop(slot)


def test_decode_threads_give_way_to_the_hosts_busy_threads() -> None:
    """Each CPU-heavy host thread running at decode time takes one decode thread, down to one; the
    logits do not depend on it beyond llama.cpp's numerics."""
    import llama_cpp

    from aicap.engine.model_runner import usable_cores

    busy = [0]
    r = ModelRunner(RunnerConfig(default_model_path(), n_ctx=512, n_seq_max=2, n_threads=2), lambda: busy[0])
    try:
        tokens = r.tokenize("The capital of France is")
        calm = r.decode([(0, tokens, 0, 1)])[0][-1]
        assert r.threads == min(2, usable_cores())
        r.drop(0)
        busy[0] = usable_cores()  # every core taken: one thread still decodes
        loaded = r.decode([(0, tokens, 0, 1)])[0][-1]
        assert r.threads == 1 == llama_cpp.llama_n_threads(r._ctx)
        assert close(calm, loaded)
        r.drop(0)
        busy[0] = 0
        r.decode([(0, tokens, 0, 1)])
        assert r.threads == min(2, usable_cores()) == llama_cpp.llama_n_threads(r._ctx)
    finally:
        r.close()

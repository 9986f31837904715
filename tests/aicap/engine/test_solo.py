"""A lone sequence decoding on the shipped weights (aicap/engine/solo.py): a runner with a solo context
gives the logits a runner without one gives, within the tolerance two weight files of one model allow
(the built-in Q4_1 file and its Q8_0 copy), through every move of the KV between its contexts: in for
a lone decode, drafts rejected there, back for a batch, a save, or the prefix cache's blocks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from aicap import weights
from aicap.config import AiConfig, EngineConfig, RunnerConfig
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.model_runner import ModelRunner, default_model_path
from aicap.engine.sampler import SamplingParams
from aicap.engine.solo import tail_state
from aicap.models import engine_factory

pytestmark = [pytest.mark.slow, pytest.mark.model]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return weights.fast_weights(default_model_path(), tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def runners(copy: Path) -> Iterator[tuple[ModelRunner, ModelRunner]]:
    """(with a solo context on the shipped file, without one): both on the Q8_0 copy."""
    solo = ModelRunner(RunnerConfig(copy, n_ctx=2048, n_seq_max=8, solo_model_path=default_model_path()))
    plain = ModelRunner(RunnerConfig(copy, n_ctx=2048, n_seq_max=8))
    yield solo, plain
    solo.close()
    plain.close()


def near(a: np.ndarray, b: np.ndarray) -> bool:
    """The same model's logits: Q4_1 and Q8_0 kernels agree to correlation ~0.999 here."""
    return float(np.corrcoef(a, b)[0, 1]) > 0.995


def pos_max(runner: ModelRunner, slot: int) -> int:
    return int(llama_cpp.llama_memory_seq_pos_max(runner._mem, slot))


Pair = tuple[ModelRunner, ModelRunner]


def both(pair: Pair, work: list[tuple[int, list[int], int, int]], lone: bool = False) -> list[np.ndarray]:
    solo, plain = pair
    a, b = solo.decode(work, lone), plain.decode(work, lone)
    return [a[s][-1] for s, *_ in work] + [b[s][-1] for s, *_ in work]


def decode_alone(pair: Pair, text: str, tokens: list[int]) -> tuple[int, list[np.ndarray]]:
    """A prompt in slot 0 (the main context), then `tokens` decoded one by one as a lone sequence;
    the prompt's length and each step's logits from both runners."""
    prompt = pair[0].tokenize(text)
    n = len(prompt)
    both(pair, [(0, prompt, 0, 1)])
    return n, [x for j, tok in enumerate(tokens) for x in both(pair, [(0, [tok], n + j, 1)], lone=True)]


def clear(pair: tuple[ModelRunner, ModelRunner]) -> None:
    for r in pair:
        for s in range(8):
            r.drop(s)


def test_tail_state_keeps_the_cells_from_a_position(runners: tuple[ModelRunner, ModelRunner]) -> None:
    solo, _ = runners
    prompt = solo.tokenize("The distributed data service keeps each app's tables on the device.")
    solo.decode([(3, prompt, 0, 1)])
    state = solo.save(3)
    assert tail_state(state, 0) == state
    tail = tail_state(state, 5)
    per_token = (len(state) - len(tail)) / 5
    assert 20_000 < per_token < 26_000  # ~23 KB a token: five cells fewer
    assert len(tail_state(state, len(prompt))) < len(state) / len(prompt)  # no cell: the headers alone
    with pytest.raises(ValueError):
        tail_state(state[:-7], 3)
    clear(runners)


def test_a_lone_decode_runs_on_the_solo_context_and_its_cells_come_back(
    runners: Pair,
) -> None:
    solo, _ = runners
    a, b = both(runners, [(2, solo.tokenize("Once upon a time"), 0, 1)])  # a prompt of a few tokens
    assert near(a, b) and solo._solo is not None and solo._solo.slot is None  # the main context
    solo.drop(2)
    text = "Once upon a time, in a land far away, there lived a king who had three daughters"
    n, out = decode_alone(runners, text, [300 + j for j in range(12)])
    pairs = list(zip(out[0::2], out[1::2], strict=True))
    assert all(near(a, b) for a, b in pairs)
    assert sum(int(a.argmax() == b.argmax()) for a, b in pairs) >= 10
    assert solo._solo.slot == 0 and solo._solo.end == n + 12
    assert pos_max(solo, 0) == n - 1  # the main context has not seen those tokens yet
    # a second sequence joins: the batch runs on the main context, after the cells came back
    other = solo.tokenize("The capital of France is")
    a0, a1, b0, b1 = both(runners, [(0, [400], n + 12, 1), (1, other, 0, 1)])
    assert solo._solo.slot is None and pos_max(solo, 0) == n + 12
    assert near(a0, b0) and near(a1, b1)
    assert not near(a0, a1)  # the comparison can fail
    clear(runners)


def test_a_rejected_draft_on_the_solo_context_is_dropped_there(runners: Pair) -> None:
    solo, _ = runners
    prompt = solo.tokenize("Paris is the capital and most populous city of France, with an estimated")
    n = len(prompt)
    both(runners, [(0, prompt, 0, 1)])
    both(runners, [(0, [500], n, 1)], lone=True)
    # a token and a draft of four, with logits at each; the last two drafted are rejected
    work = [(0, [501, 502, 503, 504, 505], n + 1, 5)]
    a, p = solo.decode(work, lone=True), runners[1].decode(work)
    assert all(near(x, y) for x, y in zip(a[0], p[0], strict=True))
    for r in runners:
        r.drop(0, n + 4)
    assert solo._solo is not None and solo._solo.slot == 0 and solo._solo.end == n + 4
    a_next, b_next = both(runners, [(0, [506], n + 4, 1)], lone=True)
    assert near(a_next, b_next)
    state = solo.save(0)  # a save brings every cell back first
    assert pos_max(solo, 0) == n + 4
    assert state == solo.save(0)
    clear(runners)


def test_blocks_cached_during_a_solo_decode_are_tagged_once_their_cells_are_back(
    runners: Pair,
) -> None:
    solo, _ = runners
    text = "Drag and drop moves a typed record from one app to another, and only"
    n, _ = decode_alone(runners, text, [600 + j for j in range(8)])
    for r in runners:  # the prefix cache keeps the prompt and the 8 decoded tokens under holder 6
        r.share_range(0, 6, 0, n + 8)
    assert pos_max(solo, 6) == -1  # waits for the cells
    for r in runners:
        r.drop(0)  # the sequence ends: its cells come back for the holder, then go
    assert pos_max(solo, 6) == n + 7 and pos_max(solo, 0) == -1
    for r in runners:  # a new sequence hits the whole history in the cache
        r.share_range(6, 1, 0, n + 8)
    a, b = both(runners, [(1, [700], n + 8, 1)])
    assert near(a, b)
    for r in runners:
        r.drop_range(6, 0, n + 8)
    clear(runners)


def test_an_engine_with_a_solo_context_streams_what_one_without_does(copy: Path) -> None:
    """Greedy answers of two staggered requests and a third that hits the first's cached history (as
    the solo run made it): the tokens agree with a single-context engine's until numerics part them."""
    out: dict[bool, dict[int, list[int]]] = {}
    history: list[int] = []
    for with_solo in (True, False):
        runner = ModelRunner(
            RunnerConfig(
                copy, n_ctx=2048, n_seq_max=16, solo_model_path=default_model_path() if with_solo else None
            )
        )
        try:
            engine = LLMEngine(runner, EngineConfig(block_size=8, max_running=4))
            chat = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"
            first = runner.tokenize(chat)
            engine.add(1, first, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))
            got: dict[int, list[int]] = {1: [], 2: [], 3: []}
            steps = 0
            while engine.has_work():
                for ev in engine.step():
                    got[ev.seq_id].append(ev.token)
                steps += 1
                if steps == 5 and with_solo:  # the first decodes alone, on the solo context
                    assert runner._solo is not None and runner._solo.slot is not None
                if steps == 6:  # joins while the first decodes alone
                    second = runner.tokenize("<|im_start|>user\nCount to five.<|im_end|>\n")
                    engine.add(2, second, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
            history = history or first + got[1]  # the solo run's: one prompt for both
            engine.add(3, history, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
            while engine.has_work():
                for ev in engine.step():
                    got[ev.seq_id].append(ev.token)
            if with_solo:  # the history computed on the solo context was reused (its full blocks)
                assert engine.stats().prefix_cache_hits >= (len(history) - 1) // 8 * 8
            out[with_solo] = got
        finally:
            runner.close()
    for rid, n in ((1, 24), (2, 8), (3, 4)):
        assert len(out[True][rid]) == n
        assert out[True][rid][:2] == out[False][rid][:2], rid


def test_a_solo_file_that_cannot_load_leaves_one_context(
    copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="aicap.engine"):
        runner = ModelRunner(
            RunnerConfig(copy, n_ctx=512, n_seq_max=2, solo_model_path=tmp_path / "missing.gguf")
        )
    try:
        assert runner._solo is None and "no solo context" in caplog.text
        prompt = runner.tokenize("Hello there")
        runner.decode([(0, prompt, 0, 1)])
        assert runner.decode([(0, [300], len(prompt), 1)], lone=True)[0].shape == (1, runner.n_vocab)
    finally:
        runner.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aicap.engine"):  # no seq id left for it
        runner = ModelRunner(
            RunnerConfig(copy, n_ctx=256, n_seq_max=256, solo_model_path=default_model_path())
        )
    try:
        assert runner._solo is None and "no solo context" in caplog.text
    finally:
        runner.close()


def test_an_engine_is_made_with_its_speed_figures_and_no_cells_left(copy: Path) -> None:
    """engine_factory calibrates (LLMEngine.calibrate): the figures drafts are sized by exist before
    any request (a burst of chats that never leaves a step of one or two sequences drafts too), and
    the calibration's KV is gone: the first request's first token is a fresh runner's."""
    engine = engine_factory(copy, 2048, AiConfig(), None, default_model_path())()
    runner = engine.runner
    try:
        f = engine.speed.figures
        assert f.prefill_tokens_per_s > 0 and f.decode_step_s > 0 and f.draft_token_s > 0
        assert 0.0 < engine._draft_cost(1) < 1.0  # a lone sequence may draft from its first step
        assert pos_max(runner, 0) == -1 and (runner._solo is None or runner._solo.slot is None)
        prompt = runner.tokenize("<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n")
        engine.add(1, prompt, SamplingParams(max_tokens=1, temperature=0.0))
        first = [ev.token for _ in range(4) for ev in engine.step()]
    finally:
        runner.close()
    fresh = ModelRunner(RunnerConfig(copy, n_ctx=2048, n_seq_max=8))
    try:
        assert first == [int(np.argmax(fresh.decode([(0, prompt, 0, 1)])[0][-1]))]
    finally:
        fresh.close()

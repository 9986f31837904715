"""The engine's KV bookkeeping on the real model and llama.cpp, checked through logits: a sequence's
logits through the engine — batched with others, after a prefix-cache hit, after swap-out and in,
after recompute, as one of n samples — match evaluating the same tokens alone, within a tolerance.

llama.cpp's kernels (flash attention, on as in the daemon) depend on how many tokens a batch holds,
so a token decoded beside others differs from the same token decoded alone (measured here: max
|Δlogit| up to ~0.5, Pearson correlation ≥ 0.9993). Wrong KV differs more: one wrong prompt token
20 positions back gives correlation 0.983 (|Δ| 4.4), a missing block 0.989 (|Δ| 2.5). So each
step's logits must correlate at ≥ MIN_CORR with the alone ones; a sequence that is alone in every
batch (a prefix hit then decoding) must match exactly."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from aicap.config import EngineConfig, RunnerConfig
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.model_runner import ModelRunner, default_model_path
from aicap.engine.sampler import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.model]
MIN_CORR = 0.998
TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden screw press into a system that could "
    "produce books faster and more cheaply than ever before. "
)


@pytest.fixture(scope="module")
def runner() -> Iterator[ModelRunner]:
    r = ModelRunner(RunnerConfig(default_model_path(), n_ctx=512, n_seq_max=16, n_batch=256))
    yield r
    r.close()


@pytest.fixture(scope="module")
def solo() -> Iterator[ModelRunner]:
    r = ModelRunner(RunnerConfig(default_model_path(), n_ctx=1024, n_seq_max=1, n_batch=256))
    yield r
    r.close()


def alone(solo: ModelRunner, prompt: list[int], output: list[int]) -> list[np.ndarray]:
    """The logits before each output token, evaluating prompt + output alone, one token at a time."""
    solo.drop(0)
    out = [solo.decode([(0, prompt, 0, 1)])[0][-1]]
    for k, tok in enumerate(output[:-1]):
        out.append(solo.decode([(0, [tok], len(prompt) + k, 1)])[0][-1])
    solo.drop(0)
    return out


def run(engine: LLMEngine, requests: dict[int, list[int]], params: SamplingParams) -> dict:
    """Runs requests to the end; (request, sample) → (tokens, logits)."""
    engine.trace = []
    for rid, prompt in requests.items():
        engine.add(rid, prompt, params, app=f"com.app{rid % 2}")
    tokens: dict[tuple[int, int], list[int]] = {}
    while engine.has_work():
        for ev in engine.step():
            tokens.setdefault((ev.seq_id, ev.index), []).append(ev.token)
    logits: dict[tuple[int, int], list[np.ndarray]] = {}
    for rid, index, lg in engine.trace:
        logits.setdefault((rid, index), []).append(lg)
    return {k: (tokens[k], logits[k]) for k in tokens}


def assert_match(solo: ModelRunner, requests: dict[int, list[int]], result: dict) -> None:
    for (rid, _), (toks, logits) in result.items():
        want = alone(solo, requests[rid], toks)
        assert len(want) == len(logits)
        worst = min(float(np.corrcoef(a, b)[0, 1]) for a, b in zip(want, logits, strict=True))
        assert worst >= MIN_CORR, f"request {rid}: logits correlate at only {worst}"


def engine_for(runner: ModelRunner, **kw: float) -> LLMEngine:
    runner.drop(-1)  # every seq id: a fresh cache
    cfg = {"block_size": 16, "max_batch_tokens": 256, "max_running": 4, "isolate_apps": False, **kw}
    return LLMEngine(runner, EngineConfig(**cfg))  # type: ignore[arg-type]


def test_prefix_hits_batched_with_others_match_alone(runner: ModelRunner, solo: ModelRunner) -> None:
    engine = engine_for(runner)
    base = runner.tokenize(TEXT)
    first = {0: [*base, *runner.tokenize(" Its first", add_special=False)]}
    run(engine, first, SamplingParams(max_tokens=4, ignore_eos=True))
    later = {
        1: [*base, *runner.tokenize(" The press spread", add_special=False)],
        2: runner.tokenize("A completely different prompt about the sea and"),
        3: [*base, *runner.tokenize(" By 1500", add_special=False)],
    }
    hits = engine.blocks.prefix_hits
    result = run(engine, later, SamplingParams(max_tokens=12, ignore_eos=True))
    assert engine.blocks.prefix_hits - hits >= 2 * (len(base) // 16) * 16  # requests 1 and 3 hit
    assert_match(solo, later, result)


def test_a_prefix_hit_decoding_alone_matches_exactly(runner: ModelRunner, solo: ModelRunner) -> None:
    engine = engine_for(runner)
    base = runner.tokenize(TEXT)
    run(engine, {0: [*base, *runner.tokenize(" Its first", add_special=False)]}, SamplingParams(max_tokens=2))
    second = {1: [*base, *runner.tokenize(" The press spread", add_special=False)]}
    hits = engine.blocks.prefix_hits
    result = run(engine, second, SamplingParams(max_tokens=10, ignore_eos=True))
    assert engine.blocks.prefix_hits - hits == (len(base) // 16) * 16
    toks, logits = result[(1, 0)]
    for a, b in zip(alone(solo, second[1], toks), logits, strict=True):
        assert float(np.abs(a - b).max()) < 1e-3


@pytest.mark.parametrize("swap_budget", [0, 100_000])
def test_preempted_sequences_match_alone(runner: ModelRunner, solo: ModelRunner, swap_budget: int) -> None:
    # 512 cells (32 blocks) for four sequences of ~90 tokens each, each needing 6 blocks alone:
    # with holders keeping cached prefixes too, sequences get preempted
    # without speculation: drafts make sequences finish at other times, and this schedule preempts
    engine = engine_for(runner, swap_budget_tokens=swap_budget, spec_draft_max=0)
    requests = {i: runner.tokenize(f"{i}: {TEXT}")[:50] for i in range(4)}
    result = run(engine, requests, SamplingParams(max_tokens=90, ignore_eos=True))
    kind = "swap" if swap_budget else "recompute"
    assert engine.scheduler.preemptions[kind] > 0, engine.scheduler.preemptions
    assert_match(solo, requests, result)


@pytest.mark.parametrize("swap_budget", [0, 100_000])
def test_speculation_keeps_exactly_the_tokens_verification_samples_and_its_kv_matches_alone(
    runner: ModelRunner, solo: ModelRunner, swap_budget: int
) -> None:
    """Drafts from prompts the model goes on copying (a paragraph twice, cut short) ride in the batched
    step beside plain decodes, under preemption (4 x 160 tokens in 512 cells): every token is the
    argmax of the logits verification computed for its position, and every position's logits match
    evaluating the same tokens alone (so accepted drafts' KV is right and rejected ones' is gone).
    (Prompts the model answers near-deterministically, such as a list to repeat, measure batch noise
    down to a correlation of 0.994 with and without drafts alike: not these.)"""
    engine = engine_for(
        runner,
        swap_budget_tokens=swap_budget,
        spec_draft_max=4,
        spec_max_batch_tokens=16,
        spec_token_cost=0.1,
    )
    requests = {i: runner.tokenize(f"{i}: {TEXT}{TEXT}")[:100] for i in range(4)}
    result = run(engine, requests, SamplingParams(max_tokens=60, ignore_eos=True))
    stats = engine.stats()
    assert stats.spec_accepted_tokens > 50, stats
    assert sum(engine.scheduler.preemptions.values()) > 0, engine.scheduler.preemptions
    for toks, logits in result.values():
        assert toks == [int(lg.argmax()) for lg in logits]
    assert_match(solo, requests, result)


def test_n_samples_share_the_prompt_and_match_alone(runner: ModelRunner, solo: ModelRunner) -> None:
    engine = engine_for(runner)
    requests = {0: runner.tokenize(TEXT)}
    params = SamplingParams(max_tokens=8, n=3, temperature=1.0, seed=1, ignore_eos=True, logprobs=True)
    result = run(engine, requests, params)
    assert len(result) == 3
    assert engine.blocks.prefix_hits >= 2 * (len(requests[0]) // 16) * 16
    assert len({tuple(toks) for toks, _ in result.values()}) > 1  # different draws
    assert_match(solo, requests, result)


def test_logprobs_are_those_of_the_model_distribution(runner: ModelRunner) -> None:
    engine = engine_for(runner)
    engine.trace = []
    engine.add(0, runner.tokenize("The capital of France is"), SamplingParams(max_tokens=5, logprobs=True))
    events = []
    while engine.has_work():
        events += engine.step()
    for ev, (_, _, logits) in zip(events, engine.trace, strict=True):
        lg = logits.astype(np.float64)
        want = lg[ev.token] - lg.max() - np.log(np.exp(lg - lg.max()).sum())
        assert ev.logprob is not None and ev.logprob <= 0 and abs(ev.logprob - want) < 1e-6

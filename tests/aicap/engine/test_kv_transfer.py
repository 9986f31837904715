"""KV state moved between two engines (two llama.cpp contexts of the bundled model, as two devices
would hold): a prompt prefilled on engine A and imported on engine B decodes with the logits of
evaluating it alone, within a tolerance; states that do not fit are refused and change nothing; a
q8_0 KV cache stays near f16.

Measured here (2 cores, llama.cpp via llama-cpp-python 0.3.36): import vs alone, with a rival request
batched beside the prefill and beside the import, differs by max |Δlogit| 0.0 over 16 steps (logits
span ~38); test_engine_logits.py saw batch-composition effects up to 0.5 and documents what wrong KV
does (one wrong token 20 positions back: |Δ| 4.4, correlation 0.983). So f16 imports must match
within TOL. q8_0 vs f16 on the same tokens: max |Δ| 0.49-1.34, correlation ≥ 0.9986 (worst on a
5-token prompt), the same argmax; Q8_TOL and Q8_MIN_CORR leave a little room above that."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Iterator

import numpy as np
import pytest

from aicap.config import EngineConfig, RunnerConfig
from aicap.engine.async_engine import AsyncEngine
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.model_runner import ModelRunner, default_model_path
from aicap.engine.sampler import SamplingParams
from aicap.errors import FailedPrecondition, InvalidArgument
from aicap.kv_state import KvState

pytestmark = [pytest.mark.slow, pytest.mark.model]
TOL = 0.5  # max |Δlogit| of an f16 import against the prompt evaluated alone
Q8_TOL, Q8_MIN_CORR = 2.0, 0.997  # q8_0 against f16
TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden screw press into a system that could "
    "produce books faster and more cheaply than ever before. Its first"
)
RIVAL = "A completely different prompt about the sea and the ships that sail on it, far away"
GREEDY = SamplingParams(max_tokens=16, ignore_eos=True)


def make_runner(cache_type: str = "f16", n_seq_max: int = 8) -> ModelRunner:
    """One decode thread: beside other CPU-heavy work, a team of two waits at every barrier for a
    descheduled member (this module took 9 minutes instead of 20 s beside a test daemon)."""
    cfg = RunnerConfig(
        default_model_path(), n_ctx=1024, n_seq_max=n_seq_max, n_batch=256, n_threads=1, cache_type=cache_type
    )
    return ModelRunner(cfg)


@pytest.fixture(scope="module")
def runners() -> Iterator[dict[str, ModelRunner]]:
    """Device A and B (f16), Q (q8_0), and `solo` (f16) to evaluate a sequence alone."""
    made = {
        "a": make_runner(),
        "b": make_runner(),
        "q": make_runner("q8_0"),
        "solo": make_runner(n_seq_max=1),
    }
    yield made
    for r in made.values():
        r.close()


def engine_on(runner: ModelRunner) -> LLMEngine:
    runner.drop(-1)  # every seq id: a fresh cache
    return LLMEngine(runner, EngineConfig(block_size=16, max_batch_tokens=256, max_running=4))


def run(engine: LLMEngine, rid: int, start: object) -> tuple[list[int], list[np.ndarray], KvState | None]:
    """Starts a rival request, then request `rid` (`start` queues it) beside it; runs both to the
    end. Returns rid's tokens, the logits each was sampled from, and its exported state."""
    engine.trace = []
    engine.add(rid + 1000, engine.runner.tokenize(RIVAL), SamplingParams(max_tokens=40, ignore_eos=True))
    engine.step()
    start(engine)  # type: ignore[operator]
    tokens, state = [], None
    while engine.has_work():
        for ev in engine.step():
            if ev.seq_id == rid:
                tokens.append(ev.token)
                state = ev.state
    return tokens, [lg for r, _, lg in engine.trace if r == rid], state


def prefill(engine: LLMEngine, tokens: list[int], rid: int = 1) -> KvState:
    _, _, state = run(engine, rid, lambda e: e.prefill(rid, tokens))
    assert state is not None
    return state


def imported(
    engine: LLMEngine, prompt: list[int], state: KvState, rid: int = 2
) -> tuple[list[int], list[np.ndarray]]:
    tokens, logits, _ = run(engine, rid, lambda e: e.add(rid, prompt, GREEDY, imported=state))
    return tokens, logits


def alone(solo: ModelRunner, prompt: list[int], output: list[int]) -> list[np.ndarray]:
    """The logits before each output token, evaluating prompt + output alone, one token at a time."""
    solo.drop(0)
    out = [solo.decode([(0, prompt, 0, 1)])[0][-1]]
    for k, tok in enumerate(output[:-1]):
        out.append(solo.decode([(0, [tok], len(prompt) + k, 1)])[0][-1])
    solo.drop(0)
    return out


def worst(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    """The largest |Δlogit| and the lowest correlation over the steps."""
    assert len(a) == len(b) > 0
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
    corr = min(float(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b, strict=True))
    return diff, corr


def test_prefill_on_a_and_import_on_b_decode_like_the_prompt_alone(runners: dict[str, ModelRunner]) -> None:
    a, b = engine_on(runners["a"]), engine_on(runners["b"])
    prompt = runners["a"].tokenize(TEXT)
    state = prefill(a, prompt)
    assert state.tokens == tuple(prompt[:-1])
    assert not a.has_work() and a.blocks.num_free_blocks == len(a.blocks.blocks)
    tokens, logits = imported(b, prompt, state)
    assert len(tokens) == 16
    diff, _ = worst(logits, alone(runners["solo"], prompt, tokens))
    assert diff <= TOL, f"imported logits differ by {diff}"


def test_the_comparison_sees_a_wrong_state(runners: dict[str, ModelRunner]) -> None:
    """A state of other tokens, passed off as this prompt's, fails the tolerance (the test above can fail)."""
    a, b = engine_on(runners["a"]), engine_on(runners["b"])
    prompt = runners["a"].tokenize(TEXT)
    wrong = list(prompt)
    wrong[len(prompt) // 2] = runners["a"].tokenize(" banana", add_special=False)[0]
    forged = dataclasses.replace(prefill(a, wrong), tokens=tuple(prompt[:-1]))
    tokens, logits = imported(b, prompt, forged)
    diff, _ = worst(logits, alone(runners["solo"], prompt, tokens))
    assert diff > TOL


def test_a_state_survives_chunking_and_a_second_prefill_hits_the_prefix_cache(
    runners: dict[str, ModelRunner],
) -> None:
    a, b = engine_on(runners["a"]), engine_on(runners["b"])
    prompt = runners["a"].tokenize(TEXT)
    first = prefill(a, prompt, rid=1)
    hits = a.blocks.prefix_hits
    second = prefill(a, prompt, rid=3)
    rival = len(runners["a"].tokenize(RIVAL)) - 1
    assert a.blocks.prefix_hits - hits == (len(prompt) - 2) // 16 * 16 + rival // 16 * 16  # it and the rival
    shipped = KvState.from_chunks(second.to_chunks(64 * 1024))
    assert shipped == second and len(shipped.data) == len(first.data)
    tokens, logits = imported(b, prompt, shipped)
    diff, _ = worst(logits, alone(runners["solo"], prompt, tokens))
    assert diff <= TOL


def test_q8_0_logits_stay_near_f16(runners: dict[str, ModelRunner]) -> None:
    q = engine_on(runners["q"])
    prompt = runners["q"].tokenize(TEXT)
    state = prefill(q, prompt)
    assert state.cache_type == "q8_0"
    assert len(state.data) < 0.6 * len(prefill(engine_on(runners["a"]), prompt).data)
    tokens, logits = imported(engine_on(runners["q"]), prompt, state)  # q8_0 to q8_0
    diff, corr = worst(logits, alone(runners["solo"], prompt, tokens))  # against f16
    assert diff <= Q8_TOL and corr >= Q8_MIN_CORR, (diff, corr)
    assert int(logits[0].argmax()) == int(alone(runners["solo"], prompt, tokens[:1])[0].argmax())


def test_a_state_that_does_not_fit_is_refused_and_changes_nothing(runners: dict[str, ModelRunner]) -> None:
    a, q = engine_on(runners["a"]), engine_on(runners["q"])
    prompt = runners["a"].tokenize(TEXT)
    state = prefill(a, prompt)
    cases: list[tuple[LLMEngine, KvState, list[int], type[Exception], str]] = [
        (q, state, prompt, FailedPrecondition, "cache type is f16, this model's KV cache is q8_0"),
        (a, dataclasses.replace(state, model_digest="00" * 32), prompt, FailedPrecondition, "another model"),
        (a, state, prompt[1:], InvalidArgument, "not a proper prefix"),
        (a, state, prompt[:-1], InvalidArgument, "not a proper prefix"),
    ]
    for engine, s, p, error, message in cases:
        free = engine.blocks.num_free_blocks
        with pytest.raises(error, match=message):
            engine.add(9, p, GREEDY, imported=s)
        assert not engine.has_work() and not engine.has_request(9) and engine.blocks.num_free_blocks == free


def test_an_exported_generation_continues_on_b_as_if_alone(runners: dict[str, ModelRunner]) -> None:
    a, b = engine_on(runners["a"]), engine_on(runners["b"])
    prompt = runners["a"].tokenize(TEXT)
    a.add(1, prompt, GREEDY)
    a.add(2, runners["a"].tokenize(RIVAL), GREEDY)
    while len(a._samples[1][0].output) < 6:
        a.step()
    state, tokens = a.export(1)
    assert tokens[: len(prompt)] == prompt and len(tokens) == len(prompt) + 6
    assert state.tokens == tuple(tokens[:-1]) and not a.has_request(1)
    rest, logits = imported(b, tokens, state, rid=3)
    diff, _ = worst(logits, alone(runners["solo"], tokens, rest))
    assert diff <= TOL, f"logits after the migration differ by {diff}"


def test_the_runners_digest_is_the_model_files_sha256(runners: dict[str, ModelRunner]) -> None:
    assert runners["a"].digest == hashlib.sha256(default_model_path().read_bytes()).hexdigest()
    assert runners["q"].digest == runners["a"].digest  # the cache type is checked on its own


def test_the_async_engine_prefills_imports_and_exports_on_its_inference_thread() -> None:
    def make() -> LLMEngine:
        return engine_on(make_runner(n_seq_max=4))

    engines = [AsyncEngine(make), AsyncEngine(make)]
    try:
        assert engines[0].engine is not None
        prompt = engines[0].engine.runner.tokenize(TEXT)

        async def migrate() -> tuple[list[int], list[int]]:
            """3 or more tokens on engine 0, then the rest on engine 1; the stream on 0 ends."""
            params = SamplingParams(max_tokens=8, ignore_eos=True)
            first = engines[0].generate(prompt, params)
            head = [(await first.next()).token for _ in range(3)]  # type: ignore[union-attr]
            state, tokens = await engines[0].export(first)
            # the stream then gives the tokens made before the export, and ends: exactly the export's
            head += [ev.token async for ev in first]
            out = tokens[len(prompt) :]
            assert out == head
            left = SamplingParams(max_tokens=8 - len(out), ignore_eos=True)
            out += [ev.token async for ev in engines[1].generate(tokens, left, imported=state)]
            return out, [ev.token async for ev in engines[1].generate(prompt, params)]

        async def main() -> tuple[list[int], list[int]]:
            moved, here = await migrate()
            assert len(moved) == 8 and moved[:4] == here[:4]
            state = await engines[0].prefill(prompt, app="com.a")
            got = [ev.token async for ev in engines[1].generate(prompt, GREEDY, imported=state)]
            local = [ev.token async for ev in engines[1].generate(prompt, GREEDY)]
            with pytest.raises(InvalidArgument):
                async for _ in engines[1].generate(prompt[5:], GREEDY, imported=state):
                    pass
            return got, local

        got, local = asyncio.run(main())
        assert got[:4] == local[:4]  # greedy text may part later on batch numerics; logits are tested above
        assert engines[0].prefill_time.count == 1 and engines[1].ttft.count == 4
        assert not engines[0].has_work()
    finally:
        for e in engines:
            e.close()
            assert e.engine is not None
            e.engine.runner.close()

"""Constrained decoding in the engine (grammar.py) against the fake runner and a 32-token llguidance
vocabulary (tests/aicap/fake_vocab.py): every constrained sample follows its grammar, greedy or
sampled, each of n samples on its own; the grammar's end ends a sample with "stop"; end-of-generation
only where the grammar may end; log-probabilities stay the model's own; a replayed generation goes on
from the tokens its matcher has read; masks of one step are computed in one call."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from aicap import structured
from aicap.config import EngineConfig
from aicap.engine.grammar import Grammar
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.sampler import SamplingParams
from aicap.engine.sequence import Sequence
from tests.aicap.engine.fake_runner import EOG, FakeRunner, logits_for
from tests.aicap.fake_vocab import EOS, decode, encode, grammar_tokenizer

assert EOS == EOG
SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99},
        "b": {"enum": ["x", "y", "yes"]},
        "c": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3},
    },
    "required": ["a", "b", "c"],
    "additionalProperties": False,
}
PROMPTS = [[3, 4, 5], [7] * 9, [12, 13], [20, 21, 22, 23], [1], [5, 6, 7, 8, 9, 10]]


def make(max_running: int = 4) -> LLMEngine:
    return LLMEngine(
        FakeRunner(512, 12),  # type: ignore[arg-type]
        EngineConfig(block_size=8, max_batch_tokens=64, max_running=max_running, swap_budget_tokens=64),
    )


def compiled(fmt: structured.Format) -> str:
    return structured.compile_format(grammar_tokenizer(), fmt)


def run(engine: LLMEngine) -> tuple[dict[tuple[int, int], list[int]], dict[tuple[int, int], str | None]]:
    out: dict[tuple[int, int], list[int]] = {}
    reasons: dict[tuple[int, int], str | None] = {}
    for _ in range(5000):
        if not engine.has_work():
            return out, reasons
        for ev in engine.step():
            out.setdefault((ev.seq_id, ev.index), []).append(ev.token)
            if ev.finished:
                reasons[(ev.seq_id, ev.index)] = ev.finish_reason
    raise AssertionError("no progress")


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_every_sample_follows_the_schema_and_ends_with_stop(temperature: float) -> None:
    grammar = compiled(structured.Format("json_schema", json.dumps(SCHEMA)))
    engine = make()
    for rid, prompt in enumerate(PROMPTS):
        params = SamplingParams(max_tokens=60, temperature=temperature, seed=rid, n=2)
        engine.add(rid, prompt, params, matcher=structured.matcher(grammar_tokenizer(), grammar))
    out, reasons = run(engine)
    assert len(out) == 2 * len(PROMPTS)
    for key, tokens in out.items():
        assert reasons[key] == "stop", (key, decode(tokens))
        jsonschema.validate(json.loads(decode(tokens)), SCHEMA)
        assert EOS not in tokens  # the grammar's end ended it: no end-of-generation token was needed


def test_unconstrained_requests_beside_constrained_ones_sample_as_before() -> None:
    grammar = compiled(structured.Format("json_object"))
    plain = SamplingParams(max_tokens=12, ignore_eos=True)
    alone = run(_with(make(), [(0, PROMPTS[0], plain, None)]))[0][(0, 0)]
    mixed = _with(make(), [(0, PROMPTS[0], plain, None), (1, PROMPTS[1], plain, grammar)])
    out, _ = run(mixed)
    assert out[(0, 0)] == alone
    assert decode(out[(1, 0)]).startswith("{")


def _with(engine: LLMEngine, reqs: list[tuple[int, list[int], SamplingParams, str | None]]) -> LLMEngine:
    for rid, prompt, params, grammar in reqs:
        m = structured.matcher(grammar_tokenizer(), grammar) if grammar is not None else None
        engine.add(rid, prompt, params, matcher=m)
    return engine


def test_a_grammar_that_ends_ends_the_sample_and_keeps_it_short() -> None:
    grammar = compiled(structured.Format("grammar", 'root ::= "yes" | "no"'))
    out, reasons = run(_with(make(), [(0, PROMPTS[2], SamplingParams(max_tokens=30, n=3), grammar)]))
    for i in range(3):
        assert decode(out[(0, i)]) in ("yes", "no")
        assert reasons[(0, i)] == "stop"


def test_end_of_generation_is_allowed_only_where_the_grammar_may_end() -> None:
    lt = grammar_tokenizer()
    grammar = compiled(structured.Format("grammar", 'root ::= "a" "b"?'))
    seq = Sequence(1, "", [3], 8, stop_tokens=frozenset({EOS}), matcher=structured.matcher(lt, grammar))
    g = Grammar(32, 1)
    first = g.masks([seq])[0]
    assert not first[EOS] and first[encode("a")[0]] and not first[encode("b")[0]]
    g.advance(seq, encode("a")[0])
    assert not seq.ended
    after = g.masks([seq])[0]
    assert after[EOS] and after[encode("b")[0]] and not after[encode("a")[0]]
    g.advance(seq, encode("b")[0])
    assert seq.ended and seq.stopped  # nothing may follow "ab"


def test_logprobs_are_the_models_own_distribution_not_the_masked_one() -> None:
    grammar = compiled(structured.Format("json_object"))
    engine = make()
    engine.trace = []
    params = SamplingParams(max_tokens=10, logprobs=True)
    engine.add(0, PROMPTS[3], params, matcher=structured.matcher(grammar_tokenizer(), grammar))
    logprobs = []
    while engine.has_work():
        logprobs += [(ev.token, ev.logprob) for ev in engine.step()]
    assert logprobs
    for (tok, lp), (_, _, lg) in zip(logprobs, engine.trace, strict=True):
        want = lg[tok] - lg.max() - np.log(np.exp(lg - lg.max(), dtype=np.float64).sum())
        assert lp == pytest.approx(want, abs=1e-5)
        assert lp < 0  # under the mask the chosen token would often be certain


def test_a_replayed_generation_continues_from_the_tokens_its_matcher_read() -> None:
    lt = grammar_tokenizer()
    grammar = compiled(structured.Format("json_schema", json.dumps(SCHEMA)))
    done = encode('{"a": 7, "b": "y", ')
    engine = make()
    params = SamplingParams(max_tokens=40)
    engine.add(0, PROMPTS[0] + done, params, matcher=structured.matcher(lt, grammar, done))
    out, reasons = run(engine)
    assert reasons[(0, 0)] == "stop"
    whole = json.loads(decode(done + out[(0, 0)]))
    jsonschema.validate(whole, SCHEMA)
    assert (whole["a"], whole["b"]) == (7, "y")


def test_replayed_tokens_that_break_the_grammar_are_refused() -> None:
    grammar = compiled(structured.Format("json_schema", json.dumps(SCHEMA)))
    with pytest.raises(structured.InvalidArgument, match="replayed"):
        structured.matcher(grammar_tokenizer(), grammar, encode('{"x": '))


def test_one_mask_call_per_step_for_all_constrained_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    import llguidance.numpy as lln

    calls: list[int] = []
    real = lln.fill_next_token_bitmask_par

    def counted(executor: object, matchers: list[object], bits: np.ndarray) -> None:
        calls.append(len(matchers))
        real(executor, matchers, bits)  # type: ignore[arg-type]

    monkeypatch.setattr(lln, "fill_next_token_bitmask_par", counted)
    grammar = compiled(structured.Format("json_schema", json.dumps(SCHEMA)))
    engine = make(max_running=4)
    for rid in range(4):
        m = structured.matcher(grammar_tokenizer(), grammar)
        engine.add(rid, PROMPTS[rid], SamplingParams(max_tokens=40, temperature=1.0, seed=rid), matcher=m)
    steps = 0
    while engine.has_work():
        engine.step()
        steps += 1
    assert max(calls) == 4  # the four running samples' masks in one call
    assert len(calls) <= steps


def test_a_broken_matcher_ends_its_sample_and_not_the_step() -> None:
    lt = grammar_tokenizer()
    grammar = compiled(structured.Format("grammar", 'root ::= "yes"'))
    broken = structured.matcher(lt, grammar)
    broken.consume_token(encode("no")[0])  # refused: an error state it never leaves
    assert broken.is_error()
    engine = make()
    engine.add(0, PROMPTS[0], SamplingParams(max_tokens=10), matcher=broken)
    engine.add(1, PROMPTS[1], SamplingParams(max_tokens=5, ignore_eos=True))
    out, reasons = run(engine)
    assert reasons[(0, 0)] == "stop" and len(out[(0, 0)]) == 1
    assert len(out[(1, 0)]) == 5


def test_fake_logits_favour_tokens_the_grammar_forbids() -> None:
    """The check above means something: unconstrained, the fake model writes no JSON."""
    tokens = list(PROMPTS[0])
    for _ in range(5):
        tokens.append(int(logits_for(tokens).argmax()))
    with pytest.raises(json.JSONDecodeError):
        json.loads(decode(tokens[len(PROMPTS[0]) :]))


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.5])
@pytest.mark.parametrize("allowed_count", [1, 3, 40, 5000])
def test_drawing_among_the_allowed_tokens_is_drawing_with_the_others_at_minus_infinity(
    temperature: float, allowed_count: int
) -> None:
    from aicap.engine.sampler import sample

    gen = np.random.default_rng(allowed_count)
    for trial in range(20):
        logits = gen.standard_normal(8000).astype(np.float32) * 3
        allowed = np.zeros(8000, dtype=bool)
        allowed[gen.choice(8000, allowed_count, replace=False)] = True
        params = SamplingParams(max_tokens=1, temperature=temperature, top_k=40, top_p=0.9, min_p=0.05)
        a = Sequence(1, "", [1], 1, params=params, rng=np.random.default_rng(trial))
        b = Sequence(1, "", [1], 1, params=params, rng=np.random.default_rng(trial))
        tok, _ = sample(a, logits, allowed)
        want, _ = sample(b, np.where(allowed, logits, -np.inf))
        assert tok == want and allowed[tok]

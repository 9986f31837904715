"""Constrained decoding with the real bundled model and its real vocabulary (llguidance's view of it
from the GGUF): batched answers follow their schemas, each of n samples on its own, and a generation
replayed on another engine from the tokens already streamed finishes valid."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest

from aicap import structured
from aicap.chat import render_chat
from aicap.config import EngineConfig, RunnerConfig
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.model_runner import ModelRunner, default_model_path
from aicap.engine.sampler import SamplingParams
from aicap.engine.tokenizer import Tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.model]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}
QUESTIONS = ["Describe Alice.", "Invent a character.", "Who lives next door?", "Tell me about Bob."]


@pytest.fixture(scope="module")
def tok() -> Iterator[Tokenizer]:
    t = Tokenizer(default_model_path())
    yield t
    t.close()


@pytest.fixture(scope="module")
def runner() -> Iterator[ModelRunner]:
    r = ModelRunner(RunnerConfig(default_model_path(), n_ctx=2048, n_seq_max=16, n_batch=512))
    yield r
    r.close()


def chat(tok: Tokenizer, text: str) -> list[int]:
    return tok.tokenize(
        render_chat(tok.chat_template() or "", [{"role": "user", "content": text}], "", ""), False
    )


def run(engine: LLMEngine) -> dict[tuple[int, int], tuple[list[int], str | None]]:
    out: dict[tuple[int, int], list[int]] = {}
    reasons: dict[tuple[int, int], str | None] = {}
    for _ in range(2000):
        if not engine.has_work():
            return {k: (v, reasons[k]) for k, v in out.items()}
        for ev in engine.step():
            out.setdefault((ev.seq_id, ev.index), []).append(ev.token)
            if ev.finished:
                reasons[(ev.seq_id, ev.index)] = ev.finish_reason
    raise AssertionError("no progress")


def test_batched_answers_and_each_of_n_samples_follow_the_schema(tok: Tokenizer, runner: ModelRunner) -> None:
    lt = tok.grammar_tokenizer()
    grammar = structured.compile_format(lt, structured.Format("json_schema", json.dumps(PERSON)))
    engine = LLMEngine(runner, EngineConfig(block_size=16, max_batch_tokens=512, max_running=12))
    for rid, q in enumerate(QUESTIONS):
        params = SamplingParams(max_tokens=120, temperature=0.9, top_k=40, seed=rid, n=3)
        engine.add(rid, chat(tok, q), params, matcher=structured.matcher(lt, grammar))
    answers = run(engine)
    assert len(answers) == 3 * len(QUESTIONS)
    for key, (tokens, reason) in answers.items():
        assert reason == "stop", (key, tok.detokenize(tokens))
        jsonschema.validate(json.loads(tok.detokenize(tokens)), PERSON)


def test_a_replay_elsewhere_reads_the_streamed_tokens_and_finishes_valid(
    tok: Tokenizer, runner: ModelRunner
) -> None:
    lt = tok.grammar_tokenizer()
    grammar = structured.compile_format(lt, structured.Format("json_schema", json.dumps(PERSON)))
    prompt = chat(tok, QUESTIONS[0])
    first = LLMEngine(runner, EngineConfig(block_size=16, max_batch_tokens=512))
    first.add(0, prompt, SamplingParams(max_tokens=120), matcher=structured.matcher(lt, grammar))
    whole, _ = run(first)[(0, 0)]
    done = whole[:7]  # streamed before the device was lost
    second = LLMEngine(runner, EngineConfig(block_size=16, max_batch_tokens=512))
    params = SamplingParams(max_tokens=120 - len(done), skip_draws=len(done))
    second.add(0, prompt + done, params, matcher=structured.matcher(lt, grammar, done))
    rest, reason = run(second)[(0, 0)]
    assert reason == "stop"
    jsonschema.validate(json.loads(tok.detokenize(done + rest)), PERSON)

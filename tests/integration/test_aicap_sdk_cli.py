"""The aicap SDK (AiClient, AsyncAiClient) and `datamgr ai ...` against the real daemon and model."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from harness import Daemon

from aicap import AiClient, AsyncAiClient, EngineStats, Sampling
from aicap.engine.model_runner import default_model_path
from datamgr.cli import main
from datamgr.errors import (
    DatamgrError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
MODEL = "smollm2-135m"
ENV = {
    "DATAMGR_AI__N_CTX": "1024",
    "DATAMGR_AI__N_SEQ_MAX": "8",
    "DATAMGR_AI__MAX_RUNNING": "4",
    "DATAMGR_AI__MAX_TOKENS_LIMIT": "128",
}
LONG: Sampling = {
    "max_tokens": 100,
    "ignore_eos": True,
}  # long enough to still be running when the test leaves


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ai-sdk") / "data", env=ENV).start(service="aicap.v1.AiService")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def token(daemon: Daemon) -> str:
    return daemon.add_app("com.example.writer", USE_AI)


@pytest.fixture
def ai(daemon: Daemon, token: str) -> Iterator[AiClient]:
    with AiClient.connect(daemon.address, token) as client:
        yield client


def engine(ai: AiClient) -> EngineStats:
    return next(e for e in ai.stats().engines if e.model == MODEL)


def wait_kv_free(ai: AiClient, timeout: float = 3.0) -> EngineStats:
    """The engine's stats once no request runs and no KV block is used; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        e = engine(ai)
        if (e.kv_blocks_used, e.requests_running, e.requests_waiting) == (0, 0, 0):
            return e
        assert time.monotonic() < deadline, f"KV still used {timeout} s after the stream was left: {e}"
        time.sleep(0.05)


# ---- the sync client ----


def test_complete_returns_text_tokens_logprobs_and_usage(ai: AiClient) -> None:
    c = ai.complete("The capital of France is", max_tokens=6, temperature=0, logprobs=True, ignore_eos=True)
    (sample,) = c.samples
    assert len(sample.tokens) == 6 and len(sample.logprobs) == 6
    assert all(lp <= 0 for lp in sample.logprobs)
    assert sample.finish_reason == "length"
    assert sample.usage is not None and sample.usage.completion_tokens == 6
    assert sample.usage.prompt_tokens == len(ai.tokenize("The capital of France is"))
    assert ai.detokenize(sample.tokens) == c.text != ""


def test_streamed_chunks_add_up_to_the_completion_and_only_the_last_one_finishes(ai: AiClient) -> None:
    chunks = list(ai.stream_complete("Once upon a time", max_tokens=5, seed=7, ignore_eos=True))
    assert {c.index for c in chunks} == {0}
    assert [c.finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert chunks[-1].usage is not None and all(c.usage is None for c in chunks[:-1])
    assert sum(len(c.token_ids) for c in chunks) == 5 and not any(c.logprobs for c in chunks)
    again = ai.complete("Once upon a time", max_tokens=5, seed=7, ignore_eos=True)  # a seed reproduces
    assert again.text == "".join(c.text for c in chunks)


def test_n_samples_and_a_stop_string(ai: AiClient) -> None:
    c = ai.complete("My favourite fruit is", n=2, max_tokens=4, seed=1, ignore_eos=True)
    assert [s.index for s in c.samples] == [0, 1]
    assert all(len(s.tokens) == 4 and s.usage is not None for s in c.samples)
    greedy = ai.complete("Count: 1, 2, 3,", max_tokens=12, temperature=0)
    assert " 5" in greedy.text
    stopped = ai.complete("Count: 1, 2, 3,", max_tokens=12, temperature=0, stop=" 5")
    assert stopped.finish_reason == "stop"
    assert stopped.text == greedy.text[: greedy.text.index(" 5")]


def test_chat_takes_dicts_or_pairs(ai: AiClient) -> None:
    as_dicts = ai.chat(
        [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hi"}],
        max_tokens=4,
        temperature=0,
    )
    as_pairs = ai.chat([("system", "Answer in one word."), ("user", "Hi")], max_tokens=4, temperature=0)
    assert as_dicts.text and as_pairs.text
    assert as_dicts.usage is not None and as_pairs.usage is not None
    assert as_dicts.usage.prompt_tokens == as_pairs.usage.prompt_tokens > 10  # the template wraps them
    streamed = list(ai.stream_chat([("user", "Hi")], max_tokens=3))
    assert streamed[-1].finish_reason is not None


def test_tokenize_detokenize_round_trip(ai: AiClient) -> None:
    text = "Hello, wörld! 日本語 ✓"
    tokens = ai.tokenize(text, add_special=False)
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert ai.detokenize(tokens) == text
    assert len(ai.tokenize(text)) >= len(tokens)


def test_models_and_stats(ai: AiClient) -> None:
    (model,) = [m for m in ai.models() if m.name == MODEL]
    assert model.is_default and model.loaded and model.n_ctx == 1024 and "im_start" in model.chat_template
    ai.complete("Warm", max_tokens=2)
    stats = ai.stats()
    e = engine(ai)
    assert e.kv_blocks_total > 0 and e.kv_block_size == 8 and e.requests_finished >= 1
    assert e.time_to_first_token.count >= 1 and e.time_to_first_token.p50 > 0
    assert "aicap_" in stats.prometheus


def test_leaving_a_stream_cancels_it_and_frees_the_kv(ai: AiClient) -> None:
    before = engine(ai).generation_tokens_total
    for seen, _ in enumerate(ai.stream_complete("Count from one to one hundred:", **LONG)):
        if seen == 2:
            break
    e = wait_kv_free(ai)
    assert e.generation_tokens_total - before < 20, "the request kept generating after the stream was left"
    with ai.stream_complete("Count from one to one hundred:", **LONG) as stream:
        next(iter(stream))
    wait_kv_free(ai)


def test_leaving_a_stream_frees_the_kv_shortly_after(ai: AiClient) -> None:
    for seen, _ in enumerate(ai.stream_complete("Count from one to one hundred:", **LONG)):
        if seen == 2:
            break
    wait_kv_free(ai)


def test_errors_are_datamgr_errors(daemon: Daemon, ai: AiClient) -> None:
    with pytest.raises(InvalidArgument, match="role 'robot'") as info:
        ai.chat([("robot", "beep")])
    assert info.value.code == "INVALID_ARGUMENT"
    with pytest.raises(InvalidArgument, match="limit of 128"):
        ai.complete("x", max_tokens=129)
    with pytest.raises(InvalidArgument, match="context"):
        ai.complete("hi " * 1100, max_tokens=1)
    with pytest.raises(InvalidArgument):  # refused before it is sent
        ai.complete("x", n=-1)
    with pytest.raises(NotFound, match="nope"):
        ai.complete("x", model="nope")
    with pytest.raises(DeadlineExceeded):
        ai.complete("Count from one to one hundred:", timeout=0.3, **LONG)
    with pytest.raises(PermissionDenied, match="admin"):
        ai.remove_model(MODEL)
    outsider = daemon.add_app("com.example.game")
    with AiClient.connect(daemon.address, outsider) as other, pytest.raises(PermissionDenied, match=USE_AI):
        other.complete("x", max_tokens=1)
    with AiClient.connect(daemon.address, "dmapp_unknown") as other, pytest.raises(Unauthenticated):
        other.tokenize("x")


# ---- the asyncio client ----


def test_async_client(daemon: Daemon, token: str) -> None:
    async def main() -> None:
        async with AsyncAiClient.connect(daemon.address, token) as ai:
            c = await ai.complete("The sky is", max_tokens=4, ignore_eos=True, logprobs=True)
            assert len(c.tokens) == 4 == len(c.logprobs) and c.finish_reason == "length"
            chunks = [ch async for ch in ai.stream_complete("The sky is", max_tokens=3, ignore_eos=True)]
            assert sum(len(ch.token_ids) for ch in chunks) == 3 and chunks[-1].finish_reason == "length"
            chat = await ai.chat([("user", "Hi")], max_tokens=3)
            assert chat.usage is not None and chat.usage.completion_tokens <= 3
            tokens = await ai.tokenize("async ✓", add_special=False)
            assert await ai.detokenize(tokens) == "async ✓"
            assert MODEL in [m.name for m in await ai.models()]

            async with ai.stream_complete("Count from one to one hundred:", **LONG) as stream:
                async for _ in stream:
                    break
            async for _ in ai.stream_chat([("user", "Count to one hundred.")], **LONG):
                break  # no `async with`: cancelled when the loop's iterator is finalized
            await asyncio.sleep(0.2)
            for _ in range(60):
                e = next(e for e in (await ai.stats()).engines if e.model == MODEL)
                if (e.kv_blocks_used, e.requests_running) == (0, 0):
                    break
                await asyncio.sleep(0.05)
            assert (e.kv_blocks_used, e.requests_running) == (0, 0), e

            with pytest.raises(InvalidArgument):
                await ai.complete("x", max_tokens=129)
            with pytest.raises(DeadlineExceeded):
                await ai.complete("Count from one to one hundred:", timeout=0.3, **LONG)

    asyncio.run(main())


# ---- the command line ----


@pytest.fixture
def cli(daemon: Daemon, token: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("DATAMGR_CONFIG", "DATAMGR_ADDRESS", "DATAMGR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATAMGR_DATA_DIR", str(daemon.data_dir))  # where `models add` finds the admin token
    return CliRunner(env={"DATAMGR_ADDRESS": daemon.address, "DATAMGR_TOKEN": token})


def run(cli: CliRunner, *args: str, code: int = 0, **kwargs: Any) -> Any:
    result = cli.invoke(main, ["ai", *args], catch_exceptions=False, **kwargs)
    assert result.exit_code == code, result.output
    return result


def test_cli_complete_streams_text_and_json(cli: CliRunner) -> None:
    result = run(cli, "complete", "The capital of France is", "--max-tokens", "5", "--temperature", "0")
    assert result.stdout.strip() and "finish" in result.stderr
    data = json.loads(
        run(cli, "complete", "The capital of France is", "--max-tokens", "5", "--n", "2", "--json").stdout
    )
    assert [s["index"] for s in data["samples"]] == [0, 1]
    assert all(len(s["tokens"]) <= 5 and s["usage"]["prompt_tokens"] > 0 for s in data["samples"])
    result = run(
        cli, "complete", "Count: 1, 2, 3,", "--max-tokens", "12", "--temperature", "0", "--stop", " 5"
    )
    assert " 5" not in result.stdout and "finish stop" in result.stderr
    result = run(cli, "complete", "Hi", "--max-tokens", "3", "--logprobs", "--ignore-eos", "--seed", "3")
    assert "logprob" in result.stderr and "-" in result.stderr


def test_cli_temperature_0_is_greedy(cli: CliRunner, ai: AiClient) -> None:
    """A 0 given on the command line is sent (it was dropped, so the daemon sampled at 0.8)."""
    prompt = "Write a list of ten words at random:"
    greedy = ai.complete(prompt, max_tokens=24, temperature=0, ignore_eos=True).text
    args = ["complete", prompt, "--max-tokens", "24", "--ignore-eos", "--json"]
    for extra in (["--temperature", "0"], ["--temperature", "0", "--seed", "0", "--top-k", "0"]):
        sample = json.loads(run(cli, *args, *extra).stdout)["samples"][0]
        assert sample["text"] == greedy


def test_cli_chat_one_shot_stdin_and_interactive(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(cli, "chat", "Say hi.", "--system", "Be brief.", "--max-tokens", "4")
    assert result.stdout.strip()
    assert run(cli, "chat", "--max-tokens", "3", input="What is 2+2?").stdout.strip()

    # datamgr.cli's attribute `ai` is the command group: the module is in sys.modules
    monkeypatch.setattr(importlib.import_module("datamgr.cli.ai"), "_stdin_is_tty", lambda: True)
    result = run(cli, "chat", "--max-tokens", "4", "--temperature", "0", input="Hi\n\nWho are you?\n")
    prompts = [int(n) for n in re.findall(r"(\d+) prompt", result.stderr)]
    assert len(prompts) == 2 and prompts[1] > prompts[0] + 4, "the second turn carries the first"


def test_cli_tokens_models_and_stats(cli: CliRunner) -> None:
    ids = run(cli, "tokenize", "Hello world", "--no-special").stdout.split()
    assert run(cli, "detokenize", *ids).stdout == "Hello world\n"
    assert json.loads(run(cli, "tokenize", "Hello world", "--no-special", "--json").stdout) == [
        int(i) for i in ids
    ]
    models = json.loads(run(cli, "models", "--json").stdout)
    assert any(m["name"] == MODEL and m["is_default"] for m in models)
    assert MODEL in run(cli, "models").stdout
    table = run(cli, "stats").stdout
    assert "KV blocks used" in table and "prefix cache hit rate" in table and "p50 / p99" in table
    (engine_json,) = [e for e in json.loads(run(cli, "stats", "--json").stdout) if e["model"] == MODEL]
    assert engine_json["kv_blocks_total"] > 0 and "p99" in engine_json["time_to_first_token"]
    assert "# TYPE aicap_" in run(cli, "stats", "--prometheus").stdout


def test_cli_models_add_and_remove_with_the_admin_token(cli: CliRunner, tmp_path: Any) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}\n{% endfor %}")
    result = run(
        cli,
        "models",
        "add",
        "tiny",
        str(default_model_path()),
        "--n-ctx",
        "256",
        "--chat-template",
        str(template),
    )
    assert "tiny" in result.stdout
    (tiny,) = [m for m in json.loads(run(cli, "models", "--json").stdout) if m["name"] == "tiny"]
    assert tiny["n_ctx"] == 256 and tiny["chat_template"] == template.read_text()
    # the text may be whitespace (sampled tokens): a finished sample says that the model answered
    answer = json.loads(run(cli, "complete", "Hi", "--model", "tiny", "--max-tokens", "2", "--json").stdout)
    assert answer["samples"][0]["finish_reason"] and len(answer["samples"][0]["tokens"]) <= 2
    run(cli, "models", "remove", "tiny")
    assert "tiny" not in [m["name"] for m in json.loads(run(cli, "models", "--json").stdout)]


def test_cli_errors(cli: CliRunner, daemon: Daemon) -> None:
    result = run(cli, "complete", "x", "--max-tokens", "129", code=1)
    assert "error: INVALID_ARGUMENT" in result.stderr and "limit of 128" in result.stderr
    result = run(cli, "complete", "x", "--model", "nope", code=1)
    assert "error: NOT_FOUND" in result.stderr
    assert "Invalid value" in run(cli, "complete", "x", "--temperature", "-1", code=2).stderr
    assert "Invalid value" in run(cli, "detokenize", "abc", code=2).stderr
    outsider = daemon.add_app("com.example.clioutsider")
    result = run(cli, "complete", "x", "--token", outsider, code=1)
    assert (
        f"error: PERMISSION_DENIED: app com.example.clioutsider lacks the permission {USE_AI}"
        in result.stderr
    )
    result = cli.invoke(main, ["ai", "complete", "x"], env={"DATAMGR_TOKEN": None})
    assert result.exit_code == 1 and "no app token" in result.stderr


def test_sdk_address_and_token_from_the_environment(
    daemon: Daemon, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAMGR_ADDRESS", raising=False)
    monkeypatch.delenv("DATAMGR_CONFIG", raising=False)
    monkeypatch.setenv("DATAMGR_DATA_DIR", str(daemon.data_dir))
    monkeypatch.setenv("DATAMGR_TOKEN", token)
    with AiClient.connect() as ai:
        assert ai.detokenize(ai.tokenize("env", add_special=False)) == "env"


def test_no_token_is_refused_before_any_call(monkeypatch: pytest.MonkeyPatch, daemon: Daemon) -> None:
    monkeypatch.delenv("DATAMGR_TOKEN", raising=False)
    with pytest.raises(DatamgrError, match="DATAMGR_TOKEN"):
        AiClient.connect(daemon.address)

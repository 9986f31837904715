"""Sessions, pinned contexts and the daily token quota in the real daemon with the real model: the KV
of earlier turns reused token for token, one turn at a time, other apps kept out, holds given up under
memory pressure (the session recomputed), a pinned prefix hit, bad input, revocation, and the quota
over HTTP and across a restart."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from click.testing import CliRunner
from harness import Daemon

from aicap import errors as aicap_errors
from aicap.client import AiClient, AsyncAiClient
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc
from datamgr.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
AI_SERVICE = "aicap.v1.AiService"
BS = 8  # ai.block_size
QUOTA = 4000
ENV = {
    "DATAMGR_AI__N_CTX": "512",  # 64 blocks: one long request fills the cache
    "DATAMGR_AI__N_SEQ_MAX": "16",
    "DATAMGR_AI__MAX_RUNNING": "4",
    "DATAMGR_AI__MAX_TOKENS_LIMIT": "64",
    "DATAMGR_AI__MAX_CONCURRENT_PER_APP": "2",
    "DATAMGR_AI__MAX_SESSIONS_PER_APP": "2",
    "DATAMGR_AI__MAX_PINNED_PER_APP": "2",
    "DATAMGR_AI__MAX_PINNED_CHARS": "2000",
    "DATAMGR_AI__TOKENS_PER_DAY_PER_APP": str(QUOTA),
}
GREEDY = {"temperature": 0.0}
INSTRUCTIONS = "You are a terse assistant. Answer in one short sentence."
WORDS = (  # noqa: SIM905
    "garden lamp river quietly yellow seventeen tomorrow engine basket whisper orbit velvet ladder "
    "crimson harbor puzzle melody canyon frost pillow thunder maple saddle rocket violet meadow anchor "
    "lantern pepper glacier ribbon tunnel marble falcon biscuit compass"
).split()


class Ai:
    """A stub with one token's metadata."""

    def __init__(self, daemon: Daemon, token: str) -> None:
        self.channel = grpc.insecure_channel(daemon.address)
        self.stub = pb_grpc.AiServiceStub(self.channel)
        self.md = [("authorization", f"Bearer {token}")]

    def create(self, instructions: str = INSTRUCTIONS, model: str = "") -> pb.Session:
        req = pb.CreateSessionRequest(model=model, instructions=instructions)
        return self.stub.CreateSession(req, metadata=self.md)

    def get(self, session_id: str) -> pb.Session:
        return self.stub.GetSession(pb.GetSessionRequest(id=session_id), metadata=self.md)

    def close(self, session_id: str) -> None:
        self.stub.CloseSession(pb.CloseSessionRequest(id=session_id), metadata=self.md)

    def stream(
        self, text: str, session: str = "", pinned: str = "", role: str = "user", **params: Any
    ) -> Any:
        req = pb.ChatRequest(
            messages=[pb.ChatMessage(role=role, content=text)],
            session=session,
            pinned_context=pinned,
            params=pb.SamplingParams(**params),
        )
        return self.stub.Chat(req, metadata=self.md, timeout=60)

    def chat(self, text: str, session: str = "", pinned: str = "", **params: Any) -> list[pb.CompletionChunk]:
        return list(self.stream(text, session, pinned, **{**GREEDY, **params}))

    def pin(self, name: str, text: str) -> pb.PinnedContext:
        return self.stub.PinContext(pb.PinContextRequest(name=name, text=text), metadata=self.md)

    def unpin(self, name: str) -> None:
        self.stub.UnpinContext(pb.UnpinContextRequest(name=name), metadata=self.md)

    def complete(self, prompt: str, **params: Any) -> list[pb.CompletionChunk]:
        req = pb.CompleteRequest(prompt=prompt, params=pb.SamplingParams(**params))
        return list(self.stub.Complete(req, metadata=self.md, timeout=60))

    def tokenize(self, text: str) -> list[int]:
        return list(
            self.stub.Tokenize(pb.TokenizeRequest(text=text, add_special=True), metadata=self.md).tokens
        )

    def stats(self) -> pb.GetStatsResponse:
        return self.stub.GetStats(pb.GetStatsRequest(), metadata=self.md)

    def engine(self) -> pb.EngineStats:
        return self.stats().engines[0]


def usage(chunks: list[pb.CompletionChunk]) -> pb.Usage:
    last = chunks[-1]
    assert last.finish_reason, "the stream ended without a last chunk"
    return last.usage


def text(chunks: list[pb.CompletionChunk]) -> str:
    return "".join(c.text for c in chunks)


def code_of(fn: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def until(what: Any, timeout: float = 10.0) -> Any:
    """`what()` once it is truthy (the holds are placed just after a turn's last chunk)."""
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ai") / "data", env=ENV).start(service=AI_SERVICE)
    yield d
    d.stop()


def app(daemon: Daemon, bundle: str, *permissions: str) -> Ai:
    return Ai(daemon, daemon.add_app(bundle, USE_AI, *permissions))


def test_turns_reuse_the_previous_turns_kv_token_for_token(daemon: Daemon) -> None:
    ai = app(daemon, "com.example.multiturn")
    s = ai.create()
    assert s.id and s.model == "smollm2-135m" and s.instructions == INSTRUCTIONS and not s.transcript
    questions = ["What is the capital of France?", "And of Italy?", "Which of the two is larger?"]
    answers: list[str] = []
    prev: pb.Usage | None = None
    for q in questions:
        chunks = ai.chat(q, s.id, max_tokens=24)
        u = usage(chunks)
        if prev is not None:
            # the prompt begins with the previous prompt and answer tokens exactly: every full block of
            # them whose KV was computed (all but the last sampled token) is a prefix-cache hit
            assert u.cached_tokens == (prev.prompt_tokens + prev.completion_tokens - 1) // BS * BS
            assert u.prompt_tokens > prev.prompt_tokens + prev.completion_tokens
        answers.append(text(chunks))
        prev = u
    got = ai.get(s.id)
    assert [(m.role, m.content) for m in got.transcript] == [
        (role, content)
        for q, a in zip(questions, answers, strict=True)
        for role, content in (("user", q), ("assistant", a))
    ]
    assert not got.responding
    until(lambda: ai.engine().kv_blocks_held > 0)
    ai.close(s.id)
    assert code_of(lambda: ai.get(s.id))[0] == grpc.StatusCode.NOT_FOUND


def test_a_stateless_chat_resending_its_history_finds_it_cached_token_for_token(daemon: Daemon) -> None:
    """A client that keeps no session resends the answers as text; the daemon remembers each answer's
    tokens (aicap.answers) and the second turn continues them: every second turn finds its first
    turn's prompt and answer cached token for token (remembered tokens that were not the computed ones
    would miss). That an answer whose text tokenizes back otherwise (" hel" "lo") comes back as
    written is test_prompts' (the model rarely writes one on these prompts)."""
    ai = app(daemon, "com.example.stateless")
    rng = random.Random(7)
    for _ in range(8):
        messages = [pb.ChatMessage(role="user", content=" ".join(rng.choice(WORDS) for _ in range(12)))]
        first = list(
            ai.stub.Chat(
                pb.ChatRequest(
                    messages=messages, params=pb.SamplingParams(max_tokens=32, **GREEDY, ignore_eos=True)
                ),
                metadata=ai.md,
                timeout=60,
            )
        )
        u1 = usage(first)
        messages += [
            pb.ChatMessage(role="assistant", content=text(first)),
            pb.ChatMessage(role="user", content="And then?"),
        ]
        second = list(
            ai.stub.Chat(
                pb.ChatRequest(messages=messages, params=pb.SamplingParams(max_tokens=1)),
                metadata=ai.md,
                timeout=60,
            )
        )
        assert usage(second).cached_tokens == (u1.prompt_tokens + u1.completion_tokens - 1) // BS * BS


def test_one_turn_at_a_time_and_a_cancelled_turn_is_not_kept(daemon: Daemon) -> None:
    ai = app(daemon, "com.example.concurrent")
    s = ai.create()
    ai.chat("Say hello.", s.id, max_tokens=8)
    before = list(ai.get(s.id).transcript)
    long = ai.stream("Count from one to fifty.", s.id, max_tokens=64, ignore_eos=True)
    next(long)  # the turn is running
    assert ai.get(s.id).responding
    code, details = code_of(lambda: ai.chat("Another question", s.id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "responding" in details
    long.cancel()
    until(lambda: not ai.get(s.id).responding)
    assert list(ai.get(s.id).transcript) == before  # the cancelled turn left the transcript alone
    assert usage(ai.chat("Say goodbye.", s.id, max_tokens=8)).completion_tokens > 0
    assert len(ai.get(s.id).transcript) == len(before) + 2
    ai.close(s.id)


def test_another_app_cannot_see_or_use_a_session(daemon: Daemon) -> None:
    owner = app(daemon, "com.example.owner")
    other = app(daemon, "com.example.intruder")
    s = owner.create()
    for call in (
        lambda: other.get(s.id),
        lambda: other.chat("hi", s.id),
        lambda: other.close(s.id),
        lambda: owner.get("sess_doesnotexist"),
    ):
        code, details = code_of(call)
        assert code == grpc.StatusCode.NOT_FOUND and "no session" in details
    assert owner.get(s.id).id == s.id  # untouched
    owner.close(s.id)


def test_memory_pressure_drops_idle_holds_and_the_session_is_recomputed(daemon: Daemon) -> None:
    ai = app(daemon, "com.example.pressured")
    other = app(daemon, "com.example.flood")
    s = ai.create()
    ai.chat("Name a colour.", s.id, max_tokens=12)
    u2 = usage(ai.chat("Name another one.", s.id, max_tokens=12))
    assert u2.cached_tokens > 0
    until(lambda: ai.engine().kv_blocks_held > 0)
    dropped = ai.engine().holds_dropped
    # another app's request that needs every KV block of the context (512 cells): holds give way
    n = len(other.tokenize(" hello" * 480))
    other.complete(" hello" * 480, max_tokens=512 - n, ignore_eos=True, temperature=0.0)
    assert ai.engine().holds_dropped > dropped
    chunks = ai.chat("And a third?", s.id, max_tokens=12)
    u3 = usage(chunks)
    assert u3.cached_tokens == 0  # every block was taken: the transcript was computed again
    assert u3.completion_tokens > 0 and len(ai.get(s.id).transcript) == 6
    until(lambda: ai.engine().kv_blocks_held > 0)  # and it is held again
    ai.close(s.id)


def test_a_pinned_context_is_the_system_message_and_hits_the_cache(daemon: Daemon) -> None:
    ai = app(daemon, "com.example.pinner")
    other = app(daemon, "com.example.notpinner")
    system = "You are the help desk of a bakery. " * 6 + "Answer briefly."
    p = ai.pin("desk", system)
    assert (p.name, p.model) == ("desk", "smollm2-135m") and p.tokens > 2 * BS
    u = usage(ai.chat("When do you open?", pinned="desk", max_tokens=8))
    assert u.cached_tokens == p.tokens // BS * BS  # every full block of the pinned prefix
    # the same system message sent by hand renders the same prefix
    code, _ = code_of(lambda: other.chat("When do you open?", pinned="desk"))
    assert code == grpc.StatusCode.NOT_FOUND  # pinned contexts are per app
    assert code_of(lambda: ai.chat("hi", pinned="nosuch"))[0] == grpc.StatusCode.NOT_FOUND
    # bounds: text size, name, how many per app (re-pinning a name replaces it)
    code, details = code_of(lambda: ai.pin("big", "x" * 2001))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ai.max_pinned_chars" in details
    assert code_of(lambda: ai.pin("bad name!", "x"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: ai.pin("empty", ""))[0] == grpc.StatusCode.INVALID_ARGUMENT
    ai.pin("second", "You are a poet.")
    assert ai.pin("desk", system + " Be kind.").tokens > p.tokens
    code, details = code_of(lambda: ai.pin("third", "You are a cook."))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "ai.max_pinned_per_app" in details
    ai.unpin("second")
    assert code_of(lambda: ai.chat("hi", pinned="second"))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: ai.unpin("second"))[0] == grpc.StatusCode.NOT_FOUND
    ai.unpin("desk")


def test_bad_input_is_refused_and_changes_nothing(daemon: Daemon) -> None:
    ai = app(daemon, "com.example.badinput")
    s = ai.create()
    ai.pin("p", "You are brief.")
    bad = [
        (lambda: ai.chat("hi", s.id, pinned="p"), grpc.StatusCode.INVALID_ARGUMENT, "not both"),
        (lambda: list(ai.stream("hi", s.id, role="system")), grpc.StatusCode.INVALID_ARGUMENT, "role"),
        (lambda: ai.chat("hi", s.id, n=2), grpc.StatusCode.INVALID_ARGUMENT, "one sample"),
        (lambda: ai.create(model="nosuch"), grpc.StatusCode.NOT_FOUND, "no model"),
    ]
    for call, want, words in bad:
        code, details = code_of(call)
        assert code == want and words in details, details
    req = pb.ChatRequest(
        messages=[pb.ChatMessage(role="user", content="hi")],
        session=s.id,
        tools=[pb.Tool(name="f", description="d")],
    )
    code, _ = code_of(lambda: list(ai.stub.Chat(req, metadata=ai.md)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert not ai.get(s.id).transcript
    # sessions per app
    s2 = ai.create()
    code, details = code_of(ai.create)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "ai.max_sessions_per_app" in details
    ai.close(s2.id)
    # a transcript that no longer fits the context: named, as Apple's exceededContextWindowSize
    long = ai.create(instructions="Remember this: " + "apple pear plum " * 150)
    code, details = code_of(lambda: ai.chat("What did I say?", long.id, max_tokens=64))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "context" in details and "512" in details
    assert not ai.get(long.id).transcript and not ai.get(long.id).responding
    ai.close(long.id)
    # without USE_AI
    stranger = Ai(daemon, daemon.add_app("com.example.nouseai"))
    assert code_of(stranger.create)[0] == grpc.StatusCode.PERMISSION_DENIED
    ai.close(s.id)


def test_revoking_use_ai_ends_the_running_turn(daemon: Daemon) -> None:
    bundle = "com.example.revoked"
    ai = app(daemon, bundle)
    s = ai.create()
    long = ai.stream("Count from one to fifty.", s.id, max_tokens=64, ignore_eos=True)
    next(long)
    errors: list[grpc.RpcError] = []

    def drain() -> None:
        try:
            for _ in long:
                pass
        except grpc.RpcError as exc:
            errors.append(exc)

    reader = threading.Thread(target=drain)
    reader.start()
    with daemon.admin() as admin:
        admin.revoke(bundle, [USE_AI])
    reader.join(30)
    assert errors and errors[0].code() == grpc.StatusCode.PERMISSION_DENIED
    with daemon.admin() as admin:
        admin.grant(bundle, [USE_AI])
    got = until(lambda: (g := ai.get(s.id)) and not g.responding and g)
    assert not got.transcript  # the ended turn was not kept


def test_sdk_and_cli(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    token = daemon.add_app("com.example.sdk", USE_AI)
    with AiClient.connect(daemon.address, token) as ai:
        with ai.create_session(INSTRUCTIONS) as s:
            first = s.chat("What is the capital of France?", max_tokens=12, temperature=0)
            second = "".join(c.text for c in s.stream("And of Italy?", max_tokens=12, temperature=0))
            assert [m["content"] for m in s.transcript] == [
                "What is the capital of France?",
                first.text,
                "And of Italy?",
                second,
            ]
            assert ai.session(s.id).instructions == INSTRUCTIONS
        with pytest.raises(aicap_errors.NotFound):  # closed by the with block
            ai.session(s.id)
        p = ai.pin_context("desk", "You are the help desk of a bakery. Answer briefly, kindly.")
        answer = ai.chat([("user", "When do you open?")], pinned_context="desk", max_tokens=8, temperature=0)
        u = answer.samples[0].usage
        assert u is not None and u.cached_tokens == p.tokens // BS * BS
        ai.unpin_context("desk")
        with pytest.raises(aicap_errors.NotFound):
            ai.chat([("user", "hi")], pinned_context="desk")

    async def async_session() -> list[dict[str, str]]:
        async with (
            AsyncAiClient.connect(daemon.address, token) as client,
            await client.create_session(INSTRUCTIONS) as s,
        ):
            await s.chat("Say hello.", max_tokens=6, temperature=0)
            return await s.transcript()

    assert len(asyncio.run(async_session())) == 2

    for name in ("DATAMGR_CONFIG", "DATAMGR_ADDRESS", "DATAMGR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    cli = CliRunner(env={"DATAMGR_ADDRESS": daemon.address, "DATAMGR_TOKEN": token})
    args = ["ai", "session", "--instructions", INSTRUCTIONS, "--temperature", "0", "--max-tokens", "8"]
    result = cli.invoke(main, [*args, "Name a fruit.", "Name another."], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summaries = [line for line in result.stderr.splitlines() if "finish" in line]
    assert len(summaries) == 2 and "cached" in summaries[1]  # the second turn hit the first's KV
    result = cli.invoke(main, [*args, "--keep"], input="Hi\nBye\n", catch_exceptions=False)
    assert result.exit_code == 0 and "stays open" in result.stderr
    result = cli.invoke(main, ["ai", "pin", "p", "You are brief."], catch_exceptions=False)
    assert result.exit_code == 0 and "pinned p" in result.stdout
    result = cli.invoke(
        main, ["ai", "chat", "--pinned", "p", "Hi", "--max-tokens", "4"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert cli.invoke(main, ["ai", "unpin", "p"], catch_exceptions=False).exit_code == 0


def test_daily_quota_is_enforced_over_grpc_and_http_and_kept_across_a_restart(daemon: Daemon) -> None:
    bundle = "com.example.hungry"
    token = daemon.add_app(bundle, USE_AI)
    ai = Ai(daemon, token)
    prompt = " hello" * 200
    spent = 0
    for _ in range(QUOTA // 200 + 2):
        try:
            u = usage(ai.complete(prompt, max_tokens=8, temperature=0.0))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (
                f"daily token quota of {QUOTA} tokens used" in exc.details() and "resets at" in exc.details()
            )
            break
        spent += u.prompt_tokens + u.completion_tokens
    else:
        pytest.fail("the quota never ran out")
    assert spent >= QUOTA
    # sessions count too, and say the same
    code, details = code_of(lambda: ai.chat("hi", ai.create().id))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "daily token quota" in details
    # over HTTP: 429 with retry-after until the day ends
    url = f"http://127.0.0.1:{daemon.endpoint()['http_port']}/v1/completions"
    r = httpx.post(url, json={"prompt": "hi", "max_tokens": 4}, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 429 and "daily token quota" in r.json()["error"]["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 86_400 + 3600
    # the owner sees every app's use, an app only its own
    with grpc.insecure_channel(daemon.address) as ch:
        admin_token = (daemon.data_dir / "admin.token").read_text().strip()
        stats = pb_grpc.AiServiceStub(ch).GetStats(
            pb.GetStatsRequest(), metadata=[("authorization", f"Bearer {admin_token}")]
        )
    mine = {u.app: u for u in stats.apps}
    assert mine[bundle].tokens_today == spent and mine[bundle].tokens_per_day == QUOTA
    assert len(mine) > 1 and mine[bundle].resets_at
    assert [u.app for u in ai.stats().apps] == [bundle]
    # across a restart
    daemon.stop()
    daemon.start(service=AI_SERVICE)
    ai = Ai(daemon, token)
    code, details = code_of(lambda: ai.complete("hi", max_tokens=4))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "daily token quota" in details
    fresh = app(daemon, "com.example.frugal")
    assert usage(fresh.complete("hi", max_tokens=4, temperature=0.0)).completion_tokens > 0

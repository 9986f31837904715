"""The AI service in the real daemon with the real model: streaming, chat template, UTF-8, stop strings,
samples, cancellation, bad input, permissions, per-app limits, models across restarts, metrics."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import Daemon
from prometheus_client.parser import text_string_to_metric_families

from aicap import weights
from aicap.engine.model_runner import default_model_path
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
AI_SERVICE = "aicap.v1.AiService"
CHATML = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
# Small context and limits keep the file fast; one app may run one request and queue one more.
ENV = {
    "DATAMGR_AI__N_CTX": "512",
    "DATAMGR_AI__N_SEQ_MAX": "8",
    "DATAMGR_AI__MAX_RUNNING": "4",
    "DATAMGR_AI__MAX_TOKENS_LIMIT": "64",
    "DATAMGR_AI__MAX_N": "4",
    "DATAMGR_AI__MAX_CONCURRENT_PER_APP": "1",
    "DATAMGR_AI__MAX_QUEUED_PER_APP": "1",
}
GREEDY = {"temperature": 0.0}


class Ai:
    """A stub with one token's metadata."""

    def __init__(self, daemon: Daemon, token: str) -> None:
        self.channel = grpc.insecure_channel(daemon.address)
        self.stub = pb_grpc.AiServiceStub(self.channel)
        self.md = [("authorization", f"Bearer {token}")]

    def complete(self, prompt: str, model: str = "", **params: Any) -> list[pb.CompletionChunk]:
        return list(self.stream(prompt, model, **params))

    def stream(self, prompt: str, model: str = "", timeout: float = 60, **params: Any) -> Any:
        req = pb.CompleteRequest(model=model, prompt=prompt, params=pb.SamplingParams(**params))
        return self.stub.Complete(req, metadata=self.md, timeout=timeout)

    def chat(
        self, messages: list[tuple[str, str]], model: str = "", **params: Any
    ) -> list[pb.CompletionChunk]:
        msgs = [pb.ChatMessage(role=r, content=c) for r, c in messages]
        req = pb.ChatRequest(model=model, messages=msgs, params=pb.SamplingParams(**params))
        return list(self.stub.Chat(req, metadata=self.md, timeout=60))

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        req = pb.TokenizeRequest(text=text, add_special=add_special)
        return list(self.stub.Tokenize(req, metadata=self.md).tokens)

    def detokenize(self, tokens: list[int], model: str = "") -> str:
        req = pb.DetokenizeRequest(model=model, tokens=tokens)
        return str(self.stub.Detokenize(req, metadata=self.md).text)

    def stats(self, model: str = "") -> pb.GetStatsResponse:
        return self.stub.GetStats(pb.GetStatsRequest(model=model), metadata=self.md)

    def engine(self, model: str = "smollm2-135m") -> pb.EngineStats:
        return next(e for e in self.stats().engines if e.model == model)

    def models(self) -> dict[str, pb.Model]:
        return {m.name: m for m in self.stub.ListModels(pb.ListModelsRequest(), metadata=self.md).models}


def tokens(chunks: list[pb.CompletionChunk], index: int = 0) -> list[int]:
    return [t for c in chunks if c.index == index for t in c.token_ids]


def text(chunks: list[pb.CompletionChunk], index: int = 0) -> str:
    return "".join(c.text for c in chunks if c.index == index)


def wait_idle(ai: Ai, timeout: float = 10.0) -> pb.EngineStats:
    """The engine's stats once nothing runs or waits, no KV block is used, and its prompt count held
    still for 0.3 s: a call whose deadline passed while its prompt was tokenized still reaches the
    engine (and is aborted there) after the client saw DEADLINE_EXCEEDED (a CI failure)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        e = ai.engine()
        assert time.monotonic() < deadline, f"the engine did not go idle: {e}"
        if (e.kv_blocks_used, e.requests_running, e.requests_waiting) == (0, 0, 0):
            if last is not None and last.prompt_tokens_total == e.prompt_tokens_total:
                return e
            last = e
            time.sleep(0.3)
            continue
        last = None
        time.sleep(0.05)


def code_of(fn: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ai") / "data", env=ENV).start(service=AI_SERVICE)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def ai(daemon: Daemon) -> Ai:
    return Ai(daemon, daemon.add_app("com.example.assistant", USE_AI))


def test_completion_streams_one_token_per_chunk_and_its_text_is_the_detokenized_tokens(ai: Ai) -> None:
    chunks = ai.complete("The capital of France is", max_tokens=10, ignore_eos=True, logprobs=True, **GREEDY)
    assert len(chunks) == 10 and all(len(c.token_ids) == 1 and len(c.logprobs) == 1 for c in chunks)
    assert all(lp <= 0 for c in chunks for lp in c.logprobs)
    assert [c.finish_reason for c in chunks] == [0] * 9 + [pb.FINISH_REASON_LENGTH]
    last = chunks[-1]
    assert last.usage.completion_tokens == 10
    assert last.usage.prompt_tokens == len(ai.tokenize("The capital of France is", add_special=True))
    assert text(chunks) == ai.detokenize(tokens(chunks))
    assert "Paris" in text(chunks)
    assert wait_idle(ai).requests_finished >= 1


def test_a_repeated_prefix_is_served_from_the_prefix_cache(ai: Ai) -> None:
    prefix = "You are a careful assistant who answers questions about geography. " * 6
    first = ai.complete(prefix + "Where is Paris?", max_tokens=2, **GREEDY)
    second = ai.complete(prefix + "Where is Rome?", max_tokens=2, **GREEDY)
    assert first[-1].usage.cached_tokens == 0
    shared = len(ai.tokenize(prefix, add_special=True))
    assert shared - 16 < second[-1].usage.cached_tokens <= shared  # whole blocks of the prefix


def test_chat_renders_the_models_chat_template(ai: Ai) -> None:
    chunks = ai.chat([("user", "What is 2+2?")], max_tokens=8, **GREEDY)
    expected = ai.tokenize(CHATML.format("What is 2+2?"))  # special tokens parsed, no BOS added
    assert chunks[-1].usage.prompt_tokens == len(expected)
    assert chunks[-1].finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert text(chunks).strip()
    assert ai.models()["smollm2-135m"].chat_template.startswith("{% for message in messages %}")


def test_characters_split_across_tokens_arrive_whole(ai: Ai) -> None:
    chunks = ai.complete("日本語のテキスト: こんにちは、", max_tokens=12, ignore_eos=True, **GREEDY)
    pieces = [c.text for c in chunks]
    assert "".join(pieces) == ai.detokenize(tokens(chunks))
    assert any(p == "" for p in pieces[:-1]), "no character was split: the prompt no longer tests this"
    assert any(ord(ch) > 0x3000 for p in pieces for ch in p)
    assert all("\ufffd" not in p for p in pieces[:-1])  # only a character cut by max_tokens is replaced


def test_stop_strings_end_the_sample_before_them(ai: Ai) -> None:
    full = text(ai.complete("1, 2, 3, 4, 5, 6,", max_tokens=12, ignore_eos=True, **GREEDY))
    assert full.startswith(" 7, 8, 9,"), full
    chunks = ai.complete("1, 2, 3, 4, 5, 6,", max_tokens=12, ignore_eos=True, stop=["nope", ", 9"], **GREEDY)
    assert text(chunks) == " 7, 8"
    assert chunks[-1].finish_reason == pb.FINISH_REASON_STOP
    assert chunks[-1].usage.completion_tokens < 12
    wait_idle(ai)


def test_n_samples_stream_each_to_its_end_and_a_seed_reproduces_them(ai: Ai) -> None:
    params = {"max_tokens": 6, "ignore_eos": True, "temperature": 1.0, "seed": 1234, "n": 2}
    first = ai.complete("Once upon a time", **params)
    for i in (0, 1):
        mine = [c for c in first if c.index == i]
        assert len(mine) == 6 and mine[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert mine[-1].usage.completion_tokens == 6
    again = ai.complete("Once upon a time", **params)
    assert (tokens(again, 0), tokens(again, 1)) == (tokens(first, 0), tokens(first, 1))


def test_cancelling_or_a_passed_deadline_frees_the_kv(ai: Ai) -> None:
    call = ai.stream("Count from one to one hundred:", max_tokens=60, ignore_eos=True)
    next(call)
    call.cancel()
    wait_idle(ai)
    # a deadline that passes mid-generation (60 tokens can take under 0.5 s: a CI failure)
    call = ai.stream("Count from one to one hundred:", max_tokens=60, ignore_eos=True, timeout=0.1)
    code, _ = code_of(lambda: list(call))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_idle(ai)


BAD: list[tuple[str, dict[str, Any], grpc.StatusCode, str]] = [
    ("Complete", {"prompt": ""}, grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
    ("Complete", {"prompt": "x", "model": "nope"}, grpc.StatusCode.NOT_FOUND, "no model 'nope'"),
    (
        "Complete",
        {"prompt": "x", "params": {"temperature": -1}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "temperature",
    ),
    ("Complete", {"prompt": "x", "params": {"top_p": 1.5}}, grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
    ("Complete", {"prompt": "x", "params": {"min_p": -0.5}}, grpc.StatusCode.INVALID_ARGUMENT, "min_p"),
    (
        "Complete",
        {"prompt": "x", "params": {"repeat_penalty": 0}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "repeat",
    ),
    ("Complete", {"prompt": "x", "params": {"n": 5}}, grpc.StatusCode.INVALID_ARGUMENT, "1-4 samples"),
    (
        "Complete",
        {"prompt": "x", "params": {"max_tokens": 65}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit of 64",
    ),
    (
        "Complete",
        {"prompt": "x", "params": {"stop": ["s"] * 9}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 8",
    ),
    ("Complete", {"prompt": "x", "params": {"stop": ["x" * 200]}}, grpc.StatusCode.INVALID_ARGUMENT, "1-128"),
    ("Complete", {"prompt": "hi " * 600}, grpc.StatusCode.INVALID_ARGUMENT, "does not fit the context"),
    (
        "Complete",
        {"prompt": "hi " * 480, "params": {"max_tokens": 64}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "exceeds the context",
    ),
    ("Chat", {"messages": []}, grpc.StatusCode.INVALID_ARGUMENT, "no messages"),
    (
        "Chat",
        {"messages": [{"role": "robot", "content": "x"}]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "role 'robot'",
    ),
    ("Detokenize", {"tokens": [1, 10**8]}, grpc.StatusCode.INVALID_ARGUMENT, "token 100000000"),
    ("Tokenize", {"model": "nope", "text": "x"}, grpc.StatusCode.NOT_FOUND, "no model"),
    ("GetStats", {"model": "nope"}, grpc.StatusCode.NOT_FOUND, "no model"),
]


def _request(method: str, fields: dict[str, Any]) -> Any:
    cls = {
        "Complete": pb.CompleteRequest,
        "Chat": pb.ChatRequest,
        "Detokenize": pb.DetokenizeRequest,
        "Tokenize": pb.TokenizeRequest,
        "GetStats": pb.GetStatsRequest,
    }[method]
    fields = dict(fields)
    if "params" in fields:
        fields["params"] = pb.SamplingParams(**fields["params"])
    if "messages" in fields:
        fields["messages"] = [pb.ChatMessage(**m) for m in fields["messages"]]
    return cls(**fields)


def test_bad_input_gets_its_status_and_a_clear_message_and_changes_nothing(ai: Ai) -> None:
    before = wait_idle(ai)
    for method, fields, code, message in BAD:
        rpc = getattr(ai.stub, method)
        got, details = code_of(
            lambda rpc=rpc, method=method, fields=fields: _consume(rpc, method, fields, ai)
        )
        assert (got, message in details) == (code, True), (method, fields, got, details)
    after = wait_idle(ai)
    changed = (after.prompt_tokens_total, after.requests_finished)
    assert changed == (before.prompt_tokens_total, before.requests_finished), (before, after)


def _consume(rpc: Any, method: str, fields: dict[str, Any], ai: Ai) -> None:
    result = rpc(_request(method, fields), metadata=ai.md, timeout=30)
    if method in ("Complete", "Chat"):
        list(result)


def test_apps_need_a_token_and_the_use_ai_permission(daemon: Daemon, ai: Ai) -> None:
    outsider = Ai(daemon, daemon.add_app("com.example.game"))
    code, details = code_of(lambda: outsider.complete("hi"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and USE_AI in details
    code, _ = code_of(lambda: outsider.tokenize("hi"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(outsider.stats)[0] == grpc.StatusCode.PERMISSION_DENIED  # statistics need USE_AI
    stranger = Ai(daemon, "dmapp_not-a-token")
    for fn in (lambda: stranger.complete("hi"), stranger.stats, stranger.models):
        assert code_of(fn)[0] == grpc.StatusCode.UNAUTHENTICATED
    add = pb.AddModelRequest(name="x", path=str(default_model_path()))
    assert code_of(lambda: ai.stub.AddModel(add, metadata=ai.md))[0] == grpc.StatusCode.PERMISSION_DENIED


def test_an_apps_requests_beyond_its_slot_and_queue_are_refused(daemon: Daemon, ai: Ai) -> None:
    flood = Ai(daemon, daemon.add_app("com.example.flood", USE_AI))
    running = flood.stream("Count from one to one hundred:", max_tokens=60, ignore_eos=True)
    next(running)  # holds the app's one slot
    queued = flood.stream("Hello", max_tokens=1)
    deadline = time.monotonic() + 10
    while _gauge(flood, "aicap_app_requests_queued") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    code, details = code_of(lambda: flood.complete("Hello", max_tokens=1))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_queued_per_app=1" in details
    assert len(ai.complete("Hi", max_tokens=2)) == 2  # another app is not held up
    running.cancel()
    assert len(list(queued)) == 1  # the queued one runs once the slot is free
    wait_idle(ai)


def _gauge(ai: Ai, name: str) -> float:
    for family in text_string_to_metric_families(ai.stats().prometheus):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


def test_stats_and_prometheus_text(ai: Ai) -> None:
    ai.complete("Hello there", max_tokens=3, ignore_eos=True)
    resp = ai.stats()
    e = next(x for x in resp.engines if x.model == "smollm2-135m")
    assert e.kv_blocks_total == 512 // 8 and e.kv_block_size == 8
    assert e.generation_tokens_total >= 3 and e.prompt_tokens_total > 0
    assert e.time_to_first_token.count >= 1 and e.inter_token_latency.count >= 1
    assert e.time_to_first_token.counts[-1] <= e.time_to_first_token.count
    families = {f.name: f for f in text_string_to_metric_families(resp.prometheus)}
    for name in (
        "aicap_kv_cache_usage_perc",
        "aicap_prefix_cache_queries",
        "aicap_prefix_cache_hits",
        "aicap_num_preemptions",
        "aicap_remote_kv_bytes",
        "aicap_remote_kv_failures",
        "aicap_num_requests_waiting",
        "aicap_num_requests_running",
        "aicap_num_requests_swapped",
        "aicap_time_to_first_token_seconds",
        "aicap_inter_token_latency_seconds",
    ):
        assert name in families, name
    kinds = {s.labels["kind"] for s in families["aicap_num_preemptions"].samples}
    assert kinds == {"swap", "recompute", "remote"}
    ttft = families["aicap_time_to_first_token_seconds"]
    count = next(s.value for s in ttft.samples if s.name.endswith("_count"))
    inf = next(s.value for s in ttft.samples if s.labels.get("le") == "+Inf")
    assert count == inf == e.time_to_first_token.count


def test_models_are_added_used_removed_and_kept_across_restarts(tmp_path: Path) -> None:
    model = tmp_path / "copy.gguf"
    shutil.copyfile(default_model_path(), model)
    (tmp_path / "not.gguf").write_bytes(b"GGML" + b"\0" * 64)
    d = Daemon(tmp_path / "data", env={**ENV, "DATAMGR_AI__N_CTX": "256"}).start(service=AI_SERVICE)
    try:
        admin = Ai(d, (d.data_dir / "admin.token").read_text().strip())
        app = Ai(d, d.add_app("com.example.assistant", USE_AI))

        def add(name: str, path: Path | str, **kw: Any) -> pb.Model:
            req = pb.AddModelRequest(name=name, path=str(path), **kw)
            return admin.stub.AddModel(req, metadata=admin.md).model

        def remove(name: str) -> None:
            admin.stub.RemoveModel(pb.RemoveModelRequest(name=name), metadata=admin.md)

        _bad_adds(add, tmp_path)
        assert code_of(lambda: add("bad name!", model))[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: add("smollm2-135m", model))[0] == grpc.StatusCode.ALREADY_EXISTS
        assert set(app.models()) == {"smollm2-135m", "all-minilm-l6-v2"}

        plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        added = add("copy", model, n_ctx=128, chat_template=plain)
        assert (added.n_ctx, added.loaded, added.is_default, added.chat_template) == (
            128,
            False,
            False,
            plain,
        )
        assert code_of(lambda: add("copy", model))[0] == grpc.StatusCode.ALREADY_EXISTS
        chunks = app.chat([("user", "Hello world")], model="copy", max_tokens=3, ignore_eos=True)
        assert chunks[-1].usage.prompt_tokens == len(app.tokenize("Hello world"))  # its own template
        listed = app.models()
        assert listed["copy"].loaded and listed["copy"].path == str(model)
        # Q4_1 weights load as their Q8_0 copy (ai.fast_weights), named by content: one for both files
        assert listed["copy"].weights_path.endswith(f"-q8_0-v{weights.VERSION}.gguf")
        assert listed["copy"].weights_path == listed["smollm2-135m"].weights_path
        assert code_of(lambda: remove("smollm2-135m"))[0] == grpc.StatusCode.FAILED_PRECONDITION
        assert code_of(lambda: remove("nope"))[0] == grpc.StatusCode.NOT_FOUND

        d.stop()
        d.start(service=AI_SERVICE)
        models = app.models()
        assert set(models) == {"smollm2-135m", "all-minilm-l6-v2", "copy"}
        assert (models["copy"].n_ctx, models["copy"].chat_template, models["copy"].loaded) == (
            128,
            plain,
            False,
        )

        # removing a model stops its in-flight requests (UNAVAILABLE) and frees it
        call = app.stream("Count from one to one hundred:", model="copy", max_tokens=60, ignore_eos=True)
        next(call)
        remove("copy")
        code, details = code_of(lambda: list(call))
        assert code == grpc.StatusCode.UNAVAILABLE and "removed" in details
        assert set(app.models()) == {"smollm2-135m", "all-minilm-l6-v2"}
        assert code_of(lambda: app.complete("x", model="copy"))[0] == grpc.StatusCode.NOT_FOUND

        _stopping_ends_generations(d, app)
        d.start(service=AI_SERVICE)
        assert set(app.models()) == {"smollm2-135m", "all-minilm-l6-v2"}
    finally:
        d.stop()


def _bad_adds(add: Any, tmp_path: Path) -> None:
    bad = [
        ((tmp_path / "missing.gguf",), grpc.StatusCode.INVALID_ARGUMENT, "does not exist"),
        ((tmp_path / "not.gguf",), grpc.StatusCode.INVALID_ARGUMENT, "not a GGUF"),
        ((tmp_path,), grpc.StatusCode.INVALID_ARGUMENT, "directory"),
        (("relative.gguf",), grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
    ]
    for args, code, message in bad:
        got, details = code_of(lambda args=args: add("other", *args))
        assert (got, message in details) == (code, True), details


def _stopping_ends_generations(d: Daemon, app: Ai) -> None:
    """Stopping the daemon ends in-flight generations with UNAVAILABLE."""
    call = app.stream("Count from one to one hundred:", max_tokens=60, ignore_eos=True)
    next(call)
    errors: list[grpc.RpcError] = []

    def drain() -> None:
        try:
            list(call)
        except grpc.RpcError as exc:
            errors.append(exc)

    reader = threading.Thread(target=drain)
    reader.start()
    assert d.stop() == 0
    reader.join(10)
    assert errors and errors[0].code() == grpc.StatusCode.UNAVAILABLE, errors

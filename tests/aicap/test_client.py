"""The aicap SDK without a model: keyword → proto mapping, chunk assembly, and the clients against an
in-process fake AiService (streams, cancellation when a loop is left, deadlines, error classes)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

import aicap
from aicap._messages import (
    CompletionChunk,
    Usage,
    assemble,
    chat_messages,
    chat_request,
    chunk_from_proto,
    complete_request,
    sampling_params,
    stats_from_proto,
)
from aicap.client import AiClient, AsyncAiClient
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc
from datamgr.connection import default_address
from datamgr.errors import DeadlineExceeded, InvalidArgument, NotFound, PermissionDenied, Unauthenticated

# ---- sampling keywords → SamplingParams ----

OPTIONAL = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed")


def test_unset_sampling_fields_are_left_to_the_daemon() -> None:
    params = sampling_params()
    assert not any(params.HasField(name) for name in OPTIONAL)
    assert (list(params.stop), params.n, params.logprobs, params.ignore_eos) == ([], 0, False, False)
    assert not sampling_params(max_tokens=None, temperature=None).HasField("max_tokens")


def test_every_sampling_keyword_maps_to_its_field() -> None:
    params = sampling_params(
        max_tokens=7,
        temperature=0.5,
        top_k=3,
        top_p=0.25,
        min_p=0.125,
        repeat_penalty=1.5,
        repeat_last_n=32,
        seed=2**63 + 1,
        stop=["\n", "END"],
        n=3,
        logprobs=True,
        ignore_eos=True,
    )
    assert (params.max_tokens, params.temperature, params.top_k, params.top_p) == (7, 0.5, 3, 0.25)
    assert (params.min_p, params.repeat_penalty, params.repeat_last_n) == (0.125, 1.5, 32)
    assert params.seed == 2**63 + 1
    assert list(params.stop) == ["\n", "END"]
    assert (params.n, params.logprobs, params.ignore_eos) == (3, True, True)


def test_zero_is_sent_not_left_unset() -> None:
    # temperature 0 means greedy and top_k 0 keeps every token: both differ from the daemon's defaults
    params = sampling_params(temperature=0, top_k=0, seed=0, max_tokens=0)
    assert all(params.HasField(name) for name in ("temperature", "top_k", "seed", "max_tokens"))
    assert params.temperature == 0.0


def test_one_stop_string_is_a_list_of_one() -> None:
    assert list(sampling_params(stop="\n\n").stop) == ["\n\n"]
    assert list(sampling_params(stop=("a", "b")).stop) == ["a", "b"]


@pytest.mark.parametrize(
    "kwargs", [{"max_tokens": -1}, {"seed": -5}, {"n": -2}, {"top_k": 2**32}, {"max_tokens": 1.5}]
)
def test_out_of_range_sampling_values_are_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        sampling_params(**kwargs)


def test_an_unknown_sampling_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="temprature"):
        sampling_params(temprature=0.1)  # type: ignore[call-arg]


def test_requests_carry_model_prompt_and_params() -> None:
    req = complete_request("Once", None, {"max_tokens": 4})
    assert (req.model, req.prompt, req.params.max_tokens) == ("", "Once", 4)
    req = complete_request("Once", "tiny", {})
    assert req.model == "tiny" and not req.params.HasField("max_tokens")


# ---- chat messages ----


def test_chat_messages_from_dicts_and_pairs() -> None:
    msgs = chat_messages([{"role": "system", "content": "Be brief."}, ("user", "Hi"), ["assistant", "Hello"]])
    assert [(m.role, m.content) for m in msgs] == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello"),
    ]
    req = chat_request([("user", "Hi")], "m", {"n": 2})
    assert (req.model, len(req.messages), req.params.n) == ("m", 1, 2)


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "user"},
        {"role": "user", "content": "x", "name": "ada"},
        ("user",),
        ("user", "x", "y"),
        "user: hi",
        ("user", 3),
    ],
)
def test_malformed_chat_messages_are_invalid_arguments(bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        chat_messages([bad])


# ---- structured output and tools ----


def test_response_format_is_openais_shape() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema, "strict": True}}
    params = sampling_params(response_format=rf)
    assert params.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    js = params.response_format.json_schema
    assert (js.name, json.loads(js.schema), js.strict) == ("count", schema, True)
    as_text = sampling_params(
        response_format={"type": "json_schema", "json_schema": {"schema": '{"type": "object"}'}}
    )
    assert as_text.response_format.json_schema.schema == '{"type": "object"}'
    assert sampling_params(response_format={"type": "json_object"}).response_format.type == 2
    assert sampling_params(grammar='root ::= "a"').grammar == 'root ::= "a"'
    assert not sampling_params().HasField("response_format")


@pytest.mark.parametrize(
    "bad",
    [{"type": "xml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": 3}}, "json"],
)
def test_a_malformed_response_format_is_an_invalid_argument(bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        sampling_params(response_format=bad)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_and_tool_choice_map_to_the_chat_request() -> None:
    req = chat_request([("user", "Hi")], None, {}, tools=[WEATHER], tool_choice="required")
    (tool,) = req.tools
    assert (tool.name, tool.description) == ("get_weather", "Weather in a city")
    assert json.loads(tool.parameters) == WEATHER["function"]["parameters"]  # type: ignore[index]
    assert req.tool_choice.mode == pb.TOOL_CHOICE_MODE_REQUIRED and not req.parallel_tool_calls
    named = {"type": "function", "function": {"name": "get_weather"}}
    req = chat_request(
        [("user", "Hi")], None, {}, tools=[WEATHER["function"]], tool_choice=named, parallel_tool_calls=True
    )  # type: ignore[list-item]
    assert req.tools[0].name == "get_weather"
    assert (req.tool_choice.mode, req.tool_choice.function) == (pb.TOOL_CHOICE_MODE_FUNCTION, "get_weather")
    assert req.parallel_tool_calls
    assert not chat_request([("user", "Hi")], None, {}).HasField("tool_choice")
    with pytest.raises(InvalidArgument, match="tool_choice"):
        chat_request([("user", "Hi")], None, {}, tools=[WEATHER], tool_choice="sometimes")


def test_messages_carry_tool_calls_and_results() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    msgs = chat_messages(
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "12 C", "tool_call_id": "call_1", "name": "get_weather"},
            {"role": "assistant", "content": "", "tool_calls": [aicap.ToolCall("c2", "f", "{}")]},
        ]
    )
    assert (msgs[1].content, [(c.id, c.name, c.arguments) for c in msgs[1].tool_calls]) == (
        "",
        [("call_1", "get_weather", '{"city": "Oslo"}')],
    )
    assert (msgs[2].role, msgs[2].tool_call_id, msgs[2].name) == ("tool", "call_1", "get_weather")
    assert msgs[3].tool_calls[0].id == "c2"
    with pytest.raises(InvalidArgument):
        chat_messages([{"role": "user", "content": "x", "tool_call_id": "1"}])  # only a tool result has one


def test_tool_calls_in_the_last_chunk_reach_the_completion() -> None:
    last = pb.CompletionChunk(
        index=0,
        finish_reason=pb.FINISH_REASON_TOOL_CALLS,
        tool_calls=[pb.ToolCall(id="call_9", name="get_weather", arguments='{"city": "Rome"}')],
    )
    chunk = chunk_from_proto(last)
    assert chunk.finish_reason == "tool_calls"
    completion = assemble([CompletionChunk(0, "", [1], []), chunk])
    (call,) = completion.tool_calls
    assert call.openai() == {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    }
    assert assemble([CompletionChunk(0, '{"a": 1}', [1], [], "stop")]).json() == {"a": 1}


# ---- chunks and their assembly ----


def test_chunk_from_proto() -> None:
    msg = pb.CompletionChunk(index=1, text="é", token_ids=[5, 6], logprobs=[-0.5, -1.0])
    assert chunk_from_proto(msg) == CompletionChunk(1, "é", [5, 6], [-0.5, -1.0], None, None)
    last = pb.CompletionChunk(
        index=0,
        text="",
        finish_reason=pb.FINISH_REASON_LENGTH,
        usage=pb.Usage(prompt_tokens=4, completion_tokens=2, cached_tokens=0),
    )
    chunk = chunk_from_proto(last)
    assert (chunk.finish_reason, chunk.usage) == ("length", Usage(4, 2, 0))
    assert chunk_from_proto(pb.CompletionChunk(finish_reason=pb.FINISH_REASON_STOP)).finish_reason == "stop"


def test_assemble_joins_interleaved_samples_in_index_order() -> None:
    chunks = [
        CompletionChunk(1, "B", [20], [-0.2]),
        CompletionChunk(0, "a", [10], [-0.1]),
        CompletionChunk(0, "b", [11], [-0.3]),
        CompletionChunk(1, "", [21], [-0.4], "stop", Usage(3, 2, 1)),
        CompletionChunk(0, "c", [12], [-0.5], "length", Usage(3, 3, 1)),
    ]
    completion = assemble(chunks)
    assert [s.index for s in completion.samples] == [0, 1]
    first, second = completion.samples
    assert (first.text, first.tokens, first.logprobs) == ("abc", [10, 11, 12], [-0.1, -0.3, -0.5])
    assert (first.finish_reason, first.usage) == ("length", Usage(3, 3, 1))
    assert (second.text, second.tokens, second.finish_reason) == ("B", [20, 21], "stop")
    assert (completion.text, completion.tokens, completion.finish_reason) == ("abc", [10, 11, 12], "length")
    assert completion.usage == Usage(3, 3, 1) and completion.logprobs == first.logprobs


def test_stats_from_proto() -> None:
    hist = pb.Histogram(bounds=[0.01, 0.1], counts=[1, 3], count=3, sum=0.12, p50=0.05, p99=0.1)
    resp = pb.GetStatsResponse(
        engines=[
            pb.EngineStats(
                model="m",
                kv_blocks_total=256,
                kv_blocks_used=8,
                kv_block_size=16,
                kv_usage=8 / 256,
                prefix_cache_queries=4,
                prefix_cache_hits=1,
                requests_waiting=2,
                time_to_first_token=hist,
            )
        ],
        prometheus="aicap_kv_blocks_used 8\n",
    )
    stats = stats_from_proto(resp)
    (engine,) = stats.engines
    assert (engine.model, engine.kv_blocks_total, engine.kv_blocks_used, engine.requests_waiting) == (
        "m",
        256,
        8,
        2,
    )
    assert engine.prefix_hit_rate == 0.25
    assert engine.time_to_first_token.counts == [1, 3] and engine.time_to_first_token.p99 == 0.1
    assert engine.inter_token_latency.count == 0
    assert stats.prometheus == "aicap_kv_blocks_used 8\n"


def test_exported_members() -> None:
    exported = aicap.__all__
    assert exported == sorted(exported)
    assert all(getattr(aicap, name) is not None for name in exported)
    assert set(exported) == {
        "AiClient",
        "AsyncAiClient",
        "AsyncCompletionStream",
        "AsyncSession",
        "Citation",
        "Completion",
        "CompletionChunk",
        "CompletionStream",
        "Context",
        "EngineStats",
        "Histogram",
        "Model",
        "PinnedContext",
        "Sample",
        "Sampling",
        "Session",
        "Stats",
        "ToolCall",
        "Usage",
        "assemble",
        "split_text",
    }


def test_address_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATAMGR_ADDRESS", "unix:/tmp/x.sock")
    assert default_address() == "unix:/tmp/x.sock"
    monkeypatch.delenv("DATAMGR_ADDRESS")
    monkeypatch.delenv("DATAMGR_CONFIG", raising=False)
    monkeypatch.setenv("DATAMGR_DATA_DIR", str(tmp_path))
    assert default_address() == f"unix:{tmp_path / 'datamgr.sock'}"
    monkeypatch.delenv("DATAMGR_TOKEN", raising=False)
    with pytest.raises(Unauthenticated, match="DATAMGR_TOKEN"):
        AiClient.connect("unix:/nonexistent")


# ---- the clients against a fake service ----


@dataclass
class FakeAi(pb_grpc.AiServiceServicer):
    """Answers from canned data; an "endless" prompt streams until the client cancels."""

    requests: list[Any] = field(default_factory=list)
    tokens_seen: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def _begin(self, request: Any, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        self.tokens_seen.append(dict(context.invocation_metadata()).get("authorization", ""))
        if dict(context.invocation_metadata()).get("authorization") != "Bearer app-token":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "needs ohos.permission.USE_AI")

    def _stream(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.CompletionChunk]:
        self._begin(request, context)
        prompt = request.prompt if isinstance(request, pb.CompleteRequest) else request.messages[-1].content
        if prompt == "endless":
            context.add_callback(self.cancelled.set)
            while True:
                yield pb.CompletionChunk(index=0, text="x", token_ids=[1])
                time.sleep(0.01)
        if prompt == "slow":
            time.sleep(2)
        if prompt == "too long":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the prompt is longer than the context")
        n = request.params.n or 1
        for step in range(2):
            for i in range(n):
                last = step == 1
                yield pb.CompletionChunk(
                    index=i,
                    text=f"{prompt}{i}{step}",
                    token_ids=[100 * i + step],
                    logprobs=[-0.5] if request.params.logprobs else [],
                    finish_reason=pb.FINISH_REASON_LENGTH if last else pb.FINISH_REASON_UNSPECIFIED,
                    usage=pb.Usage(prompt_tokens=3, completion_tokens=2) if last else None,
                )

    def Complete(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.CompletionChunk]:
        yield from self._stream(request, context)

    def Chat(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.CompletionChunk]:
        yield from self._stream(request, context)

    def ListModels(self, request: Any, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        self._begin(request, context)
        return pb.ListModelsResponse(
            models=[pb.Model(name="smollm2", n_ctx=4096, is_default=True, loaded=True)]
        )

    def Tokenize(self, request: Any, context: grpc.ServicerContext) -> pb.TokenizeResponse:
        self._begin(request, context)
        return pb.TokenizeResponse(
            tokens=[ord(c) for c in request.text] + ([1] if request.add_special else [])
        )

    def Detokenize(self, request: Any, context: grpc.ServicerContext) -> pb.DetokenizeResponse:
        self._begin(request, context)
        return pb.DetokenizeResponse(text="".join(chr(t) for t in request.tokens))

    def GetStats(self, request: Any, context: grpc.ServicerContext) -> pb.GetStatsResponse:
        self._begin(request, context)
        engine = pb.EngineStats(model=request.model or "smollm2", kv_blocks_total=10)
        return pb.GetStatsResponse(engines=[engine], prometheus="x 1\n")

    def AddModel(self, request: Any, context: grpc.ServicerContext) -> pb.AddModelResponse:
        self._begin(request, context)
        return pb.AddModelResponse(model=pb.Model(name=request.name, path=request.path, n_ctx=request.n_ctx))

    def RemoveModel(self, request: Any, context: grpc.ServicerContext) -> pb.RemoveModelResponse:
        self._begin(request, context)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.name!r}")
        raise AssertionError("abort raises")


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeAi, str]]:
    servicer = FakeAi()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_AiServiceServicer_to_server(servicer, server)
    address = f"unix:{tmp_path / 'ai.sock'}"
    server.add_insecure_port(address)
    server.start()
    yield servicer, address
    server.stop(None).wait()


def test_sync_client_round_trip(fake: tuple[FakeAi, str]) -> None:
    servicer, address = fake
    with AiClient.connect(address, "app-token") as ai:
        completion = ai.complete("p", "m", max_tokens=2, n=2, logprobs=True, stop="\n")
        assert [s.text for s in completion.samples] == ["p00p01", "p10p11"]
        assert completion.samples[1].tokens == [100, 101] and completion.logprobs == [-0.5, -0.5]
        assert completion.finish_reason == "length" and completion.usage == Usage(3, 2, 0)
        req = servicer.requests[-1]
        assert (req.model, req.prompt, req.params.max_tokens, list(req.params.stop)) == ("m", "p", 2, ["\n"])

        chunks = list(ai.stream_chat([("user", "q")], temperature=0))
        assert [(c.index, c.text) for c in chunks] == [(0, "q00"), (0, "q01")]
        assert servicer.requests[-1].params.HasField("temperature")

        assert ai.chat([{"role": "user", "content": "c"}]).text == "c00c01"
        assert ai.tokenize("ab") == [97, 98, 1] and ai.tokenize("ab", add_special=False) == [97, 98]
        assert ai.detokenize([104, 105]) == "hi"
        (model,) = ai.models()
        assert (model.name, model.n_ctx, model.is_default) == ("smollm2", 4096, True)
        assert ai.stats("smollm2").engines[0].kv_blocks_total == 10
        added = ai.add_model("tiny", "/m/tiny.gguf", n_ctx=512, chat_template="{{x}}")
        assert (added.name, added.path, added.n_ctx) == ("tiny", "/m/tiny.gguf", 512)
        assert servicer.requests[-1].chat_template == "{{x}}"
        with pytest.raises(NotFound, match="no model 'tiny'") as info:
            ai.remove_model("tiny")
        assert info.value.code == "NOT_FOUND"
    assert set(servicer.tokens_seen) == {"Bearer app-token"}


def test_token_from_the_environment(fake: tuple[FakeAi, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, address = fake
    monkeypatch.setenv("DATAMGR_TOKEN", "app-token")
    monkeypatch.setenv("DATAMGR_ADDRESS", address)
    with AiClient.connect() as ai:
        assert ai.detokenize([111, 107]) == "ok"


def test_errors_are_datamgr_error_classes(fake: tuple[FakeAi, str]) -> None:
    _, address = fake
    with AiClient.connect(address, "wrong") as ai, pytest.raises(PermissionDenied, match="USE_AI"):
        ai.complete("p")
    with AiClient.connect(address, "app-token") as ai:
        with pytest.raises(InvalidArgument, match="longer than the context"):
            ai.complete("too long")
        with pytest.raises(InvalidArgument, match="longer than the context"):
            list(ai.stream_complete("too long"))
        with pytest.raises(DeadlineExceeded):
            ai.complete("slow", timeout=0.2)
        with pytest.raises(InvalidArgument):
            ai.complete("p", max_tokens=-1)


def test_leaving_a_sync_stream_cancels_the_call(fake: tuple[FakeAi, str]) -> None:
    servicer, address = fake
    with AiClient.connect(address, "app-token") as ai:
        stream = ai.stream_complete("endless")
        for seen, _ in enumerate(stream):
            if seen == 3:
                break
        assert servicer.cancelled.wait(5), "the server never saw the cancellation"
        servicer.cancelled.clear()
        with ai.stream_complete("endless") as stream:
            next(iter(stream))
        assert servicer.cancelled.wait(5)


def test_async_client_round_trip_and_errors(fake: tuple[FakeAi, str]) -> None:
    servicer, address = fake

    async def main() -> None:
        async with AsyncAiClient.connect(address, "app-token") as ai:
            completion = await ai.complete("p", n=2, max_tokens=2)
            assert [s.text for s in completion.samples] == ["p00p01", "p10p11"]
            assert [c.text async for c in ai.stream_chat([("user", "q")])] == ["q00", "q01"]
            assert (await ai.chat([("user", "c")])).text == "c00c01"
            assert await ai.tokenize("a", add_special=False) == [97]
            assert await ai.detokenize([97]) == "a"
            assert [m.name for m in await ai.models()] == ["smollm2"]
            assert (await ai.stats()).prometheus == "x 1\n"
            assert (await ai.add_model("t", "/t.gguf")).name == "t"
            with pytest.raises(NotFound):
                await ai.remove_model("t")
            with pytest.raises(InvalidArgument, match="longer than the context"):
                await ai.complete("too long")
            with pytest.raises(DeadlineExceeded):
                await ai.complete("slow", timeout=0.2)

            async with ai.stream_complete("endless") as stream:
                async for _ in stream:
                    break
            assert await asyncio.to_thread(servicer.cancelled.wait, 5)
            servicer.cancelled.clear()

            async for _ in ai.stream_complete("endless"):  # no `async with`: cancelled when finalized
                break
            assert await asyncio.to_thread(servicer.cancelled.wait, 5)
        async with AsyncAiClient.connect(address, "wrong") as ai:
            with pytest.raises(PermissionDenied):
                await ai.tokenize("x")

    asyncio.run(main())

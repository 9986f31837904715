"""The AI service's OpenAI-compatible HTTP API in the real daemon with the real model, through the real
`openai` client (sync and async, streamed and whole), LangChain's ChatOpenAI and httpx: models,
completions, chat, usage in streams, n, stop, seeds, structured output and tools, every error status
(503 in OpenAI's error object past http.max_connections), a client that leaves, a revoked app's open
stream, and llama-server's /health, /metrics, /tokenize, /detokenize."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pydantic
import pytest
import tiktoken
from harness import Daemon
from langchain_openai import ChatOpenAI
from prometheus_client.parser import text_string_to_metric_families

from aicap.engine.model_runner import default_model_path
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
AI_SERVICE = "aicap.v1.AiService"
MODEL = "smollm2-135m"
CHATML = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
# One app may run one request and queue one more; long answers (ignore_eos) stay open while a test
# acts on them.
ENV = {
    "DATAMGR_AI__N_CTX": "1024",
    "DATAMGR_AI__N_SEQ_MAX": "8",
    "DATAMGR_AI__MAX_RUNNING": "4",
    "DATAMGR_AI__MAX_TOKENS_LIMIT": "600",
    "DATAMGR_AI__MAX_N": "4",
    "DATAMGR_AI__MAX_CONCURRENT_PER_APP": "1",
    "DATAMGR_AI__MAX_QUEUED_PER_APP": "1",
    "DATAMGR_HTTP__MAX_BODY_BYTES": "65536",
    "DATAMGR_HTTP__MAX_CONNECTIONS": "8",
}
MAX_CONNECTIONS = 8
LONG = {"max_tokens": 600, "extra_body": {"ignore_eos": True}}  # seconds of tokens: open while we act
OPEN: list[openai.OpenAI] = []  # the clients a test made, closed after it (their sockets with them)


class Http:
    """The daemon's HTTP API: its base URL and clients for one token."""

    def __init__(self, daemon: Daemon, token: str) -> None:
        self.daemon, self.token = daemon, token
        self.url = f"http://127.0.0.1:{daemon.endpoint()['http_port']}"
        self.headers = {"authorization": f"Bearer {token}"}

    def openai(self, **kw: Any) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.token, **kw)
        OPEN.append(client)
        return client

    def async_openai(self, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.token, **kw)

    def post(self, path: str, body: Any, timeout: float | httpx.Timeout = 60) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=self.headers, timeout=timeout)

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers if headers is None else headers, timeout=60)

    def metric(self, name: str) -> float:
        """A sample of /metrics (the default model's, for a labelled one)."""
        for family in text_string_to_metric_families(self.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("model", MODEL) == MODEL:
                    return float(sample.value)
        raise AssertionError(f"no metric {name}")

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Returns once the engine runs nothing, queues nothing and holds no KV block for a request."""
        deadline = time.monotonic() + timeout
        names = ("aicap_num_requests_running", "aicap_num_requests_waiting", "aicap_app_requests_queued")
        while True:
            busy = {n: self.metric(n) for n in names}
            if not any(busy.values()) and self.metric("aicap_kv_cache_usage_perc") == 0:
                return
            assert time.monotonic() < deadline, f"the engine did not go idle: {busy}"
            time.sleep(0.05)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()
    gc.collect()  # a socket the test left open warns here, in that test


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ai_http") / "data", env=ENV).start(service=AI_SERVICE)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def http(daemon: Daemon) -> Http:
    return Http(daemon, daemon.add_app("com.example.assistant", USE_AI))


def test_models_are_listed_and_retrieved(http: Http) -> None:
    client = http.openai()
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL, "all-minilm-l6-v2"]  # the built-in chat and embedding models
    assert models[0].object == "model" and models[0].owned_by == "datamgr"
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_renders_the_template_and_counts_usage(http: Http) -> None:
    r = http.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=8, temperature=0
    )
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    expected = http.post("/tokenize", {"content": CHATML.format("What is 2+2?")}).json()["tokens"]
    assert r.usage is not None and r.usage.prompt_tokens == len(expected)
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_a_completion_with_logprobs(http: Http) -> None:
    r = http.openai().completions.create(
        model=MODEL,
        prompt="The capital of France is",
        max_tokens=10,
        temperature=0,
        logprobs=1,
        extra_body={"ignore_eos": True},
    )
    (choice,) = r.choices
    assert r.object == "text_completion" and choice.finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 10
    assert "Paris" in choice.text
    lp = choice.logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert len(lp.tokens) == 10 and "".join(lp.tokens) == choice.text
    assert all(x <= 0 for x in lp.token_logprobs)
    # the engine has the chosen token's log-probability only: it stands alone among the alternatives
    assert lp.top_logprobs == [{t: x} for t, x in zip(lp.tokens, lp.token_logprobs, strict=True)]
    assert lp.text_offset is not None and lp.text_offset[0] == 0


def test_chat_logprobs(http: Http) -> None:
    r = http.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert content is not None and "".join(c.token for c in content) == r.choices[0].message.content
    assert all(c.logprob <= 0 and [t.token for t in c.top_logprobs] == [c.token] for c in content)


def test_a_stream_ends_with_its_usage_and_done(http: Http) -> None:
    stream = http.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    *tokens, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 12 and last.usage.prompt_tokens > 0
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in tokens)
    assert tokens[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in tokens][-1] == "length"
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in tokens).strip()


def test_n_samples_and_a_seed_that_reproduces_them(http: Http) -> None:
    client = http.openai()

    def run() -> list[str]:
        r = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Once upon a time"}],
            n=2,
            seed=1234,
            temperature=1.0,
            max_tokens=6,
            extra_body={"ignore_eos": True},
        )
        assert [c.index for c in r.choices] == [0, 1]
        assert all(c.finish_reason == "length" for c in r.choices)
        assert r.usage is not None and r.usage.completion_tokens == 12
        return [c.message.content or "" for c in r.choices]

    assert run() == run()


def test_stop_strings_end_the_answer_before_them(http: Http) -> None:
    client = http.openai()
    params: dict[str, Any] = {
        "model": MODEL,
        "prompt": "1, 2, 3, 4, 5, 6,",
        "max_tokens": 12,
        "temperature": 0,
    }
    full = client.completions.create(**params, extra_body={"ignore_eos": True}).choices[0].text
    assert full.startswith(" 7, 8, 9,"), full
    stopped = client.completions.create(**params, stop=["nope", ", 9"]).choices[0]
    assert (stopped.text, stopped.finish_reason) == (" 7, 8", "stop")
    streamed = client.completions.create(**params, stop=", 9", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == " 7, 8"


def test_the_async_client_streams_and_answers_at_once(http: Http) -> None:
    async def main() -> tuple[str, str]:
        async with http.async_openai() as client:

            async def streamed() -> str:
                stream = await client.completions.create(
                    model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
                )
                return "".join([c.choices[0].text async for c in stream])

            async def whole() -> str:
                r = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0
                )
                return r.choices[0].message.content or ""

            return await asyncio.gather(streamed(), whole())  # one runs, the other waits for the slot

    streamed, whole = asyncio.run(main())
    assert "Paris" in streamed and whole


BAD: list[tuple[dict[str, Any], str]] = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 1.5}, "top_p"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 601}, "limit of 600"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 5}, "1-4 samples"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["s"] * 9}, "at most 8"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 5}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text only"),
    ({"messages": [{"role": "user", "content": "hi " * 1200}]}, "context"),
]


def test_bad_requests_are_400_with_openais_error_object(http: Http) -> None:
    for body, message in BAD:
        r = http.post("/v1/chat/completions", {"model": MODEL, **body})
        error = r.json()["error"]
        assert (r.status_code, message in error["message"]) == (400, True), (body, r.text)
        assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as info:
        http.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], top_p=2
        )
    assert info.value.param == "top_p"
    r = httpx.post(http.url + "/v1/completions", content=b"{not json", headers=http.headers)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    r = http.post("/v1/completions", {"model": MODEL, "prompt": "x" * 70_000})
    assert r.status_code == 413 and "http.max_body_bytes" in r.json()["error"]["message"]


def test_tokens_permissions_models_and_routes(daemon: Daemon, http: Http) -> None:
    chat: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    with pytest.raises(openai.AuthenticationError):
        Http(daemon, "dmapp_not-a-token").openai().chat.completions.create(**chat)
    r = httpx.post(http.url + "/v1/chat/completions", json=chat)
    assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]
    assert http.get("/v1/models", headers={}).status_code == 401
    outsider = Http(daemon, daemon.add_app("com.example.game"))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        outsider.openai().chat.completions.create(**chat)
    assert USE_AI in denied.value.message
    assert outsider.get("/metrics").status_code == 403  # the statistics are for apps that use the AI
    with pytest.raises(openai.NotFoundError) as missing:
        http.openai().chat.completions.create(**{**chat, "model": "nope"})
    assert "no model 'nope'" in missing.value.message
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert http.get("/v1/chat/completions").status_code == 405


def test_an_apps_requests_beyond_its_slot_and_queue_are_429_with_retry_after(
    daemon: Daemon, http: Http
) -> None:
    flood = Http(daemon, daemon.add_app("com.example.flood", USE_AI))
    client = flood.openai(max_retries=0)
    running = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to a thousand."}], stream=True, **LONG
    )
    next(iter(running))  # holds the app's one slot
    queued: list[Any] = []
    waiter = threading.Thread(
        target=lambda: queued.append(client.completions.create(model=MODEL, prompt="Hello", max_tokens=1))
    )
    waiter.start()
    deadline = time.monotonic() + 20
    while http.metric("aicap_app_requests_queued") < 1:
        assert time.monotonic() < deadline, "the second request did not queue"
        time.sleep(0.02)
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model=MODEL, prompt="Hello", max_tokens=1)
    assert refused.value.response.headers["retry-after"] == "1"
    assert "max_queued_per_app=1" in refused.value.message
    assert http.openai().completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices  # others go on
    running.close()  # the slot is free: the queued one runs
    waiter.join(60)
    assert len(queued) == 1 and queued[0].usage.completion_tokens == 1
    http.wait_idle()


def test_a_client_that_leaves_cancels_its_generation_and_frees_the_kv(http: Http) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to a thousand."}]}
    body |= {"max_tokens": 600, "ignore_eos": True, "stream": True}
    generated = http.metric("aicap_generation_tokens_total")
    with httpx.stream("POST", http.url + "/v1/chat/completions", json=body, headers=http.headers) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: {")
        assert http.metric("aicap_num_requests_running") == 1
    http.wait_idle()
    assert http.metric("aicap_generation_tokens_total") - generated < 600  # cut short, not run to its end
    generated = http.metric("aicap_generation_tokens_total")
    body["stream"] = False  # a client waiting for a whole answer that gives up
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", body, timeout=httpx.Timeout(60, read=1.0))
    http.wait_idle()
    assert http.metric("aicap_generation_tokens_total") - generated < 600


def test_revoking_use_ai_ends_an_open_stream(daemon: Daemon, http: Http) -> None:
    bundle = "com.example.revoked"
    app = Http(daemon, daemon.add_app(bundle, USE_AI))
    stream = app.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to a thousand."}], stream=True, **LONG
    )
    chunks = iter(stream)
    next(chunks)
    with daemon.admin() as admin:
        admin.revoke(bundle, [USE_AI])
    with pytest.raises(openai.APIError) as ended:
        for _ in chunks:
            pass
    assert USE_AI in ended.value.message
    http.wait_idle()


def test_a_model_still_loading_is_503_with_retry_after(daemon: Daemon, http: Http, tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(default_model_path(), copy)
    admin_md = [("authorization", f"Bearer {(daemon.data_dir / 'admin.token').read_text().strip()}")]
    with grpc.insecure_channel(daemon.address) as channel:
        add = pb.AddModelRequest(name="copy", path=str(copy), n_ctx=256)
        assert not pb_grpc.AiServiceStub(channel).AddModel(add, metadata=admin_md).model.loaded
    body: dict[str, Any] = {"model": "copy", "prompt": "Hello", "max_tokens": 2}
    with pytest.raises(openai.InternalServerError) as loading:  # what the client calls 5xx
        http.openai(max_retries=0).completions.create(**body)
    assert loading.value.status_code == 503 and loading.value.response.headers["retry-after"] == "1"
    assert "loading" in loading.value.message
    # the client's own retries (after retry-after) find it loaded: a bounded number of them
    r = http.openai(max_retries=20).completions.create(**body)
    assert r.model == "copy" and r.usage is not None and r.usage.completion_tokens >= 1
    with grpc.insecure_channel(daemon.address) as channel:
        pb_grpc.AiServiceStub(channel).RemoveModel(pb.RemoveModelRequest(name="copy"), metadata=admin_md)


def test_requests_beyond_max_connections_are_503_in_openais_error_object_with_retry_after(
    http: Http,
) -> None:
    body = b'{"content": "Hello world"}'
    head = (
        f"POST /tokenize HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {http.token}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    port = http.daemon.endpoint()["http_port"]
    with contextlib.ExitStack() as held:
        socks = [
            held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
            for _ in range(MAX_CONNECTIONS)
        ]
        for sock in socks:
            sock.sendall(head + body[:5])  # open requests, their bodies unfinished
        deadline = time.monotonic() + 20
        while (r := http.get("/v1/models")).status_code != 503:  # once the daemon has read all of them
            assert r.status_code == 200 and time.monotonic() < deadline, r.text
            time.sleep(0.02)
        assert (r.headers["retry-after"], r.headers["content-type"]) == ("1", "application/json")
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("unavailable_error", "unavailable")
        assert "8 requests are open already (http.max_connections)" in error["message"]
        with pytest.raises(openai.InternalServerError) as busy:
            http.openai(max_retries=0).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
            )
        assert (busy.value.status_code, busy.value.code) == (503, "unavailable")
        assert busy.value.response.headers["retry-after"] == "1"
        answers = []
        for sock in socks:  # the open ones are served
            sock.sendall(body[5:])
            answer = held.enter_context(contextlib.closing(HTTPResponse(sock)))
            answer.begin()
            answers.append((answer.status, json.loads(answer.read())))
    tokens = http.post("/tokenize", json.loads(body)).json()["tokens"]  # and new ones again
    assert answers == [(200, {"tokens": tokens})] * MAX_CONNECTIONS


def test_health_metrics_tokenize_and_detokenize(http: Http) -> None:
    health = httpx.get(http.url + "/health")  # no token needed
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    tokens = http.post("/tokenize", {"content": "Hello world"}).json()["tokens"]
    with grpc.insecure_channel(http.daemon.address) as channel:
        req = pb.TokenizeRequest(text="Hello world")
        md = [("authorization", f"Bearer {http.token}")]
        assert tokens == list(pb_grpc.AiServiceStub(channel).Tokenize(req, metadata=md).tokens)
    pieces = http.post("/tokenize", {"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tokens and "".join(p["piece"] for p in pieces) == "Hello world"
    assert http.post("/detokenize", {"tokens": tokens}).json() == {"content": "Hello world"}
    bad = http.post("/detokenize", {"tokens": [10**8]})
    assert bad.status_code == 400 and "token 100000000" in bad.json()["error"]["message"]
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert {"aicap_kv_cache_usage_perc", "aicap_time_to_first_token_seconds"} <= families


def test_https_with_the_device_certificate_and_a_stop_that_ends_open_streams(tmp_path: Path) -> None:
    env = {**ENV, "DATAMGR_HTTP__TLS": "true"}
    d = Daemon(tmp_path / "data", env=env).start(service=AI_SERVICE)
    try:
        port = d.endpoint()["http_port"]
        assert d.endpoint()["http_tls"] is True
        context = ssl.create_default_context(cafile=str(d.data_dir / "device" / "cert.pem"))
        context.check_hostname = False  # the device certificate names the device, not a host
        r = httpx.get(f"https://127.0.0.1:{port}/health", verify=context)
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        with pytest.raises(httpx.HTTPError):  # no plaintext on the port
            httpx.get(f"http://127.0.0.1:{port}/health")

        client = openai.OpenAI(
            base_url=f"https://127.0.0.1:{port}/v1",
            api_key=d.add_app("com.example.assistant", USE_AI),
            http_client=openai.DefaultHttpxClient(verify=context),
        )
        OPEN.append(client)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count to a thousand."}], stream=True, **LONG
        )
        chunks = iter(stream)
        next(chunks)
        exit_codes: list[int] = []
        stopper = threading.Thread(target=lambda: exit_codes.append(d.stop()))
        stopper.start()  # SIGTERM: the open stream ends with UNAVAILABLE, the daemon exits 0
        with pytest.raises(openai.APIError) as stopped:
            for _ in chunks:
                pass
        assert "stopping" in stopped.value.message
        stopper.join(60)
        assert exit_codes == [0]
    finally:
        d.stop()


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=120)


WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_structured_output_through_the_clients_parse(http: Http) -> None:
    client = http.openai()
    messages: Any = [{"role": "user", "content": "Invent a person: a name and an age."}]
    r = client.chat.completions.parse(model=MODEL, messages=messages, response_format=Person, max_tokens=200)
    person = r.choices[0].message.parsed
    assert isinstance(person, Person) and r.choices[0].finish_reason == "stop"
    obj = client.chat.completions.create(  # greedy: any object can run past max_tokens when sampled
        model=MODEL, messages=messages, response_format={"type": "json_object"}, max_tokens=200, temperature=0
    )
    assert obj.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)
    yes = client.completions.create(
        model=MODEL, prompt="Is the sky blue?", max_tokens=8, extra_body={"grammar": 'root ::= "yes" | "no"'}
    )
    assert yes.choices[0].text in ("yes", "no")
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=messages, response_format=bad)


def test_tool_calls_round_trip(http: Http) -> None:
    client = http.openai()
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=200,
    )
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "weather"
    assert set(json.loads(call.function.arguments)) == {"city"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C"},
    ]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=32
    )
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages[:1],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "weather"}},
        max_tokens=200,
        stream=True,
    )
    deltas = [c.choices[0] for c in stream if c.choices]
    calls = [tc for d in deltas for tc in d.delta.tool_calls or ()]
    assert deltas[-1].finish_reason == "tool_calls" and [c.function.name for c in calls] == ["weather"]


def test_frequency_and_presence_penalties_steer_away_from_repeats(http: Http) -> None:
    client = http.openai()
    counting: dict[str, Any] = {"model": MODEL, "prompt": "1, 1, 1, 1, 1, 1, 1, 1,", "max_tokens": 8}
    plain = client.completions.create(**counting, temperature=0).choices[0].text
    assert plain.startswith(" 1, 1"), plain
    assert (
        client.completions.create(**counting, temperature=0, frequency_penalty=2.0).choices[0].text != plain
    )
    paris: dict[str, Any] = {
        "model": MODEL,
        "prompt": "The capital of France is Paris. The capital of France is",
    }
    plain = client.completions.create(**paris, max_tokens=8, temperature=0).choices[0].text
    assert plain.startswith(" Paris"), plain
    assert (
        not client.completions.create(**paris, max_tokens=8, temperature=0, presence_penalty=2.0)
        .choices[0]
        .text.startswith(" Paris")
    )
    with pytest.raises(openai.BadRequestError):
        client.completions.create(**counting, presence_penalty=2.5)


class LangChain:
    """LangChain's ChatOpenAI on the daemon; `sent` holds the JSON bodies it sent."""

    def __init__(self, http: Http) -> None:
        self.http = http
        self.sent: list[dict[str, Any]] = []
        self.client = httpx.Client(event_hooks={"request": [self._record]})

    def _record(self, request: httpx.Request) -> None:
        self.sent.append(json.loads(request.content))

    def chat(self, **kw: Any) -> ChatOpenAI:
        return ChatOpenAI(
            base_url=f"{self.http.url}/v1",
            api_key=self.http.token,
            model=MODEL,
            temperature=0,
            max_retries=0,
            http_client=self.client,
            **kw,
        )


def _no_tiktoken(*args: Any, **kw: Any) -> Any:
    raise AssertionError("tiktoken was called: it downloads its encodings")


@pytest.fixture
def langchain(http: Http, monkeypatch: pytest.MonkeyPatch) -> Iterator[LangChain]:
    """LangChain must reach nothing beyond 127.0.0.1 (CI has no network): no tracing, no tiktoken, no
    other host resolved."""
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setattr(tiktoken, "get_encoding", _no_tiktoken)
    monkeypatch.setattr(tiktoken, "encoding_for_model", _no_tiktoken)
    resolve = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kw: Any) -> Any:
        assert host == "127.0.0.1", f"LangChain connects to {host!r}"
        return resolve(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    lc = LangChain(http)
    yield lc
    lc.client.close()


def test_langchain_chat_openai_invokes_and_streams(langchain: LangChain) -> None:
    answer = langchain.chat(max_tokens=12).invoke("What is 2+2?")
    assert isinstance(answer.content, str) and answer.content.strip()
    assert answer.response_metadata["finish_reason"] in ("stop", "length")
    assert answer.usage_metadata is not None and 1 <= answer.usage_metadata["output_tokens"] <= 12
    llm = langchain.chat(max_tokens=12, stream_usage=True, extra_body={"ignore_eos": True})
    chunks = list(llm.stream("Tell me a story."))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert len(chunks) >= 12 and isinstance(whole.content, str) and whole.content.strip()
    assert whole.response_metadata["finish_reason"] == "length"
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] == 12
    plain, streamed = langchain.sent
    assert (plain["stream"], plain["max_completion_tokens"]) == (False, 12)
    assert (streamed["stream"], streamed["stream_options"]) == (True, {"include_usage": True})


def test_langchain_structured_output_as_a_strict_json_schema(langchain: LangChain) -> None:
    llm = langchain.chat(max_tokens=100).with_structured_output(Person)  # LangChain's default method
    assert isinstance(llm.invoke("Invent a person: a name and an age."), Person)
    (sent,) = langchain.sent
    fmt = sent["response_format"]
    assert (fmt["type"], fmt["json_schema"]["name"], fmt["json_schema"]["strict"]) == (
        "json_schema",
        "Person",
        True,
    )


def test_langchain_structured_output_by_a_function_call(langchain: LangChain) -> None:
    llm = langchain.chat(max_tokens=100).with_structured_output(Person, method="function_calling")
    assert isinstance(llm.invoke("Invent a person: a name and an age."), Person)
    (sent,) = langchain.sent
    assert [t["function"]["name"] for t in sent["tools"]] == ["Person"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "Person"}}
    assert sent["parallel_tool_calls"] is False

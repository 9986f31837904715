"""Embeddings in the real daemon with the built-in embedding model (all-MiniLM-L6-v2, converted to a
GGUF): AiService.Embed over gRPC, OpenAI's /v1/embeddings through the openai client, the SDK and the
CLI, model kinds, bad input, permissions, metrics, and a generation that goes on while a large batch
is embedded on the same inference thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import openai
import pytest
from click.testing import CliRunner
from harness import Daemon
from prometheus_client.parser import text_string_to_metric_families

from aicap import AiClient, AsyncAiClient
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc
from datamgr.cli import main
from datamgr.errors import InvalidArgument

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
EMBED, CHAT = "all-minilm-l6-v2", "smollm2-135m"
REFERENCE = json.loads((Path(__file__).parents[1] / "aicap" / "data" / "minilm_reference.json").read_text())
ENV = {
    "DATAMGR_AI__N_CTX": "1024",
    "DATAMGR_AI__N_SEQ_MAX": "8",
    "DATAMGR_AI__MAX_RUNNING": "4",
    "DATAMGR_AI__MAX_TOKENS_LIMIT": "256",
    "DATAMGR_AI__MAX_CONCURRENT_PER_APP": "2",
    "DATAMGR_AI__MAX_EMBED_TEXTS": "64",
    "DATAMGR_AI__MAX_EMBED_BYTES": "65536",
    "DATAMGR_AI__EMBED_BATCH_TOKENS": "64",
    "DATAMGR_AI__TOKENS_PER_DAY_PER_APP": "6000",  # the other tests' app uses about 2,500
}
DOCS = [
    "To reset a forgotten password, open Settings, choose Account and tap 'Forgot password'.",
    "Preheat the oven to 180 degrees and bake the banana bread for fifty minutes.",
    "The train to the airport leaves every fifteen minutes from platform two.",
    "Back up your photos to the cloud so they survive a lost phone.",
]
QUERIES = [
    "how do I change my password if I can't remember it",
    "what temperature for baking banana bread",
    "when is the next train to the airport",
    "keep my pictures safe if my phone is stolen",
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ai-embed") / "data", env=ENV).start(service="aicap.v1.AiService")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def token(daemon: Daemon) -> str:
    return daemon.add_app("com.example.search", USE_AI)


class Ai:
    def __init__(self, daemon: Daemon, token: str) -> None:
        self.channel = grpc.insecure_channel(daemon.address)
        self.stub = pb_grpc.AiServiceStub(self.channel)
        self.md = [("authorization", f"Bearer {token}")]

    def embed(self, texts: list[str], model: str = "") -> pb.EmbedResponse:
        return self.stub.Embed(pb.EmbedRequest(model=model, texts=texts), metadata=self.md, timeout=120)

    def vectors(self, texts: list[str], model: str = "") -> np.ndarray:
        return np.array([list(e.values) for e in self.embed(texts, model).embeddings], dtype=np.float32)

    def metric(self, name: str, model: str = EMBED) -> float:
        text = self.stub.GetStats(pb.GetStatsRequest(), metadata=self.md).prometheus
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and s.labels.get("model") == model:
                    return float(s.value)
        raise AssertionError(f"no {name} for {model}")


@pytest.fixture(scope="module")
def ai(daemon: Daemon, token: str) -> Iterator[Ai]:
    a = Ai(daemon, token)
    yield a
    a.channel.close()


def code_of(fn: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def test_models_have_kinds(ai: Ai) -> None:
    models = {m.name: m for m in ai.stub.ListModels(pb.ListModelsRequest(), metadata=ai.md).models}
    assert (models[EMBED].kind, models[EMBED].embedding_dim, models[EMBED].n_ctx) == (
        pb.MODEL_KIND_EMBED,
        384,
        512,
    )
    assert (models[CHAT].kind, models[CHAT].embedding_dim, models[CHAT].is_default) == (
        pb.MODEL_KIND_GENERATE,
        0,
        True,
    )


def test_embed_over_grpc(ai: Ai) -> None:
    """Unit vectors in order, the same as sentence-transformers' (shipped reference), tokens counted."""
    texts = REFERENCE["texts"]
    resp = ai.embed(texts)
    assert resp.model == EMBED and len(resp.embeddings) == len(texts)
    v = np.array([list(e.values) for e in resp.embeddings])
    assert v.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    for row, ref in zip(v, REFERENCE["vectors"], strict=True):
        assert float(row @ np.asarray(ref)) >= 0.99
    assert resp.prompt_tokens == sum(len(t) for t in REFERENCE["tokens"])
    tokens = ai.stub.Tokenize(
        pb.TokenizeRequest(model=EMBED, text=texts[0], add_special=True), metadata=ai.md
    )
    assert list(tokens.tokens) == REFERENCE["tokens"][0]


def test_close_texts_score_higher_than_unrelated_ones(ai: Ai) -> None:
    docs, queries = ai.vectors(DOCS), ai.vectors(QUERIES)
    scores = queries @ docs.T
    assert list(scores.argmax(axis=1)) == [0, 1, 2, 3]  # each question finds its document
    for i in range(len(QUERIES)):
        others = np.delete(scores[i], i)
        assert scores[i, i] > others.max() + 0.1


def test_a_batch_or_alone_gives_the_same_vectors(ai: Ai) -> None:
    together = ai.vectors(DOCS)
    for i, doc in enumerate(DOCS):
        assert float(ai.vectors([doc])[0] @ together[i]) > 0.999


def test_bad_input_is_invalid_argument(ai: Ai) -> None:
    bad = [
        ([], "no texts"),
        (["x"] * 65, "ai.max_embed_texts 64"),
        (["a" * 40_000, "b" * 30_000], "ai.max_embed_bytes 65536"),
        (["ok", "a" * 4097], "text 1 has 4097 characters"),
        ([" ".join(f"w{i}" for i in range(700))], "context of model all-minilm-l6-v2 holds (512 tokens)"),
    ]
    for texts, message in bad:
        code, details = code_of(lambda texts=texts: ai.embed(texts))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details
    code, details = code_of(lambda: ai.embed(["x"], model=CHAT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "generates text" in details
    assert code_of(lambda: ai.embed(["x"], model="nope"))[0] == grpc.StatusCode.NOT_FOUND
    complete = pb.CompleteRequest(model=EMBED, prompt="Hello")
    code, details = code_of(lambda: list(ai.stub.Complete(complete, metadata=ai.md, timeout=30)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "embedding model" in details
    chat = pb.ChatRequest(model=EMBED, messages=[pb.ChatMessage(role="user", content="Hi")])
    code, details = code_of(lambda: list(ai.stub.Chat(chat, metadata=ai.md, timeout=30)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "use Embed" in details
    assert len(ai.embed(["still fine"]).embeddings) == 1


def test_permissions(daemon: Daemon) -> None:
    outsider = Ai(daemon, daemon.add_app("com.example.noai"))
    code, details = code_of(lambda: outsider.embed(["x"]))
    assert code == grpc.StatusCode.PERMISSION_DENIED and USE_AI in details
    assert code_of(lambda: Ai(daemon, "dmapp_unknown").embed(["x"]))[0] == grpc.StatusCode.UNAUTHENTICATED
    outsider.channel.close()


def test_embedded_tokens_count_against_the_daily_quota(daemon: Daemon) -> None:
    heavy = Ai(daemon, daemon.add_app("com.example.heavy", USE_AI))
    texts = [f"Paragraph {i}: " + "many words about quotas and tokens " * 30 for i in range(20)]
    used = 0
    while used < 6000:
        used += heavy.embed(texts).prompt_tokens
    code, details = code_of(lambda: heavy.embed(["one more"]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "daily token quota of 6000" in details
    heavy.channel.close()


def test_metrics_count_texts_and_tokens(ai: Ai) -> None:
    texts, tokens = ai.metric("aicap_embedding_texts_total"), ai.metric("aicap_embedding_tokens_total")
    resp = ai.embed(["one text", "and another one"])
    assert ai.metric("aicap_embedding_texts_total") == texts + 2
    assert ai.metric("aicap_embedding_tokens_total") == tokens + resp.prompt_tokens


def test_a_generation_goes_on_while_a_large_batch_is_embedded(ai: Ai) -> None:
    """Both on the one inference thread: the batch is cut into turns of embed_batch_tokens (64) between
    decode steps, so tokens keep arriving while it is embedded (order, not timing, is checked)."""
    events: list[str] = []
    finished: list[pb.CompletionChunk] = []

    def generate() -> None:
        req = pb.CompleteRequest(
            prompt="List the numbers from one to one thousand:",
            params=pb.SamplingParams(max_tokens=256, ignore_eos=True, temperature=0),
        )
        for chunk in ai.stub.Complete(req, metadata=ai.md, timeout=300):
            events.append("token")
            if chunk.finish_reason:
                finished.append(chunk)

    texts = [
        f"Row {i}: the quarterly report of team {i % 7} mentions budgets, hiring and deadlines."
        for i in range(64)
    ]
    batches = ai.metric("aicap_embedding_batches_total")
    thread = threading.Thread(target=generate)
    thread.start()
    while not events:  # the generation is decoding
        assert thread.is_alive()
        time.sleep(0.01)
    events.append("embed start")
    v = ai.vectors(texts)
    events.append("embed end")
    thread.join(300)
    assert v.shape == (64, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert len(finished) == 1 and finished[0].usage.completion_tokens == 256
    during = events[events.index("embed start") + 1 : events.index("embed end")]
    assert events.count("token") == 256
    assert ai.metric("aicap_embedding_batches_total") - batches >= 10  # ~1,400 tokens, 64 a turn
    assert during.count("token") > 0, "no token arrived while 64 texts were embedded"


# ---- HTTP (OpenAI's API) ----


def http_url(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.endpoint()['http_port']}"


def test_openai_client_embeddings(daemon: Daemon, token: str, ai: Ai) -> None:
    client = openai.OpenAI(base_url=f"{http_url(daemon)}/v1", api_key=token)
    try:
        r = client.embeddings.create(model=EMBED, input=DOCS[:2])  # the client asks for base64
        float_r = client.embeddings.create(model=EMBED, input=DOCS[:2], encoding_format="float")
        one = client.embeddings.create(model=EMBED, input=DOCS[0])
        grpc_v = ai.vectors(DOCS[:2])
        for resp in (r, float_r):
            assert resp.model == EMBED and [d.index for d in resp.data] == [0, 1]
            got = np.array([d.embedding for d in resp.data])
            assert got.shape == (2, 384) and np.allclose(got, grpc_v, atol=1e-6)
            assert resp.usage.prompt_tokens == resp.usage.total_tokens == ai.embed(DOCS[:2]).prompt_tokens
        assert np.allclose(one.data[0].embedding, grpc_v[0], atol=1e-6)
        with pytest.raises(openai.BadRequestError, match="token arrays"):
            client.embeddings.create(model=EMBED, input=[[101, 2023, 102]])
        with pytest.raises(openai.BadRequestError, match="generates text"):
            client.embeddings.create(model=CHAT, input="x")
        with pytest.raises(openai.BadRequestError, match="384-dimensional"):
            client.embeddings.create(model=EMBED, input="x", dimensions=256)
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="nope", input="x")
        outsider = openai.OpenAI(
            base_url=f"{http_url(daemon)}/v1", api_key=daemon.add_app("com.example.nohttp")
        )
        with pytest.raises(openai.PermissionDeniedError):
            outsider.embeddings.create(model=EMBED, input="x")
        outsider.close()
    finally:
        client.close()
    r2 = httpx.post(
        f"{http_url(daemon)}/v1/embeddings", json={"input": []}, headers={"authorization": f"Bearer {token}"}
    )
    assert r2.status_code == 400 and r2.json()["error"]["param"] == "input"
    assert httpx.post(f"{http_url(daemon)}/v1/embeddings", json={"input": "x"}).status_code == 401
    models = httpx.get(f"{http_url(daemon)}/v1/models", headers={"authorization": f"Bearer {token}"}).json()
    (meta,) = [m["meta"] for m in models["data"] if m["id"] == EMBED]
    assert meta["kind"] == "embed" and meta["embedding_dim"] == 384


# ---- SDK and CLI ----


def test_sdk_embed(daemon: Daemon, token: str) -> None:
    with AiClient.connect(daemon.address, token) as client:
        one = client.embed("The cat sits on the mat.")
        many = client.embed(DOCS)
        assert one.shape == (384,) and many.shape == (4, 384) and many.dtype == np.float32
        assert float(one @ np.asarray(REFERENCE["vectors"][0])) >= 0.99
        (m,) = [m for m in client.models() if m.name == EMBED]
        assert (m.kind, m.embedding_dim) == ("embed", 384)
        with pytest.raises(InvalidArgument, match="generates text"):
            client.embed("x", model=CHAT)

    async def main() -> np.ndarray:
        async with AsyncAiClient.connect(daemon.address, token) as client:
            return await client.embed(DOCS)

    assert np.allclose(asyncio.run(main()), many, atol=1e-6)


def test_cli_embed(daemon: Daemon, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATAMGR_CONFIG", "DATAMGR_ADDRESS", "DATAMGR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    cli = CliRunner(env={"DATAMGR_ADDRESS": daemon.address, "DATAMGR_TOKEN": token})
    result = cli.invoke(main, ["ai", "embed", QUERIES[0], DOCS[0], DOCS[1]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("384 dims  [") and len(lines) == 4
    first, second = (float(s) for s in lines[3].split(": ")[1].split(", "))
    assert first > second
    result = cli.invoke(main, ["ai", "embed", "hello", "--json"], catch_exceptions=False)
    data = json.loads(result.stdout)
    assert data["dim"] == 384 and len(data["embeddings"]) == 1 and len(data["embeddings"][0]) == 384
    result = cli.invoke(main, ["ai", "embed", "hello", "--model", CHAT])
    assert result.exit_code == 1 and "INVALID_ARGUMENT" in result.output

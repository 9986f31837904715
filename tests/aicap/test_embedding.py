"""Embeddings in process with the real models (aicap.embedding over a real ModelRegistry): model kinds,
an app's bounds, and the daemon's own TextEmbedder (what the DataShare indexer uses)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from aicap.bert_gguf import default_cache_dir
from aicap.config import AiConfig, ModelSpec
from aicap.embedding import Embeddings, TextEmbedder
from aicap.errors import FailedPrecondition, InvalidArgument
from aicap.limits import AppLimiter, Limits
from aicap.models import ModelRegistry
from aicap.prompts import Prompts
from aicap.store import ModelStore

pytestmark = [pytest.mark.model]
EMBED, CHAT = "all-minilm-l6-v2", "smollm2-135m"


class World:
    """A registry and Embeddings on one event loop, kept for the module (`run` runs a coroutine)."""

    def __init__(self, tmp: Path, **config: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.config = AiConfig(model_cache_dir=default_cache_dir(), **config)

        async def run_db(fn: Callable[..., Any], *args: Any) -> Any:
            return await asyncio.to_thread(fn, *args)

        store = ModelStore(sa.create_engine(f"sqlite:///{tmp / 'models.db'}"))
        self.models = ModelRegistry(self.config, store, run_db)
        self.prompts = Prompts(self.config)
        self.embeddings = Embeddings(self.config, self.models, self.prompts, AppLimiter(Limits()))
        self.run(self.models.start())

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.models.close())
        self.prompts.close()
        self.loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("embedding"), max_embed_texts=8, max_embed_bytes=8192)
    yield w
    w.close()


def ok() -> None:
    """The app may go on (its permission check)."""


def test_kinds_from_the_registry(world: World) -> None:
    m = world.models.get(EMBED)
    assert (m.kind, m.origin) == ("embed", "builtin")
    world.run(world.models.tokenizer(m))
    assert (m.spec.n_ctx, m.dim) == (512, 384)  # the model's own context, not ai.n_ctx
    chat = world.models.get(CHAT)
    world.run(world.models.tokenizer(chat))
    assert (chat.kind, chat.dim) == ("generate", 0)
    with pytest.raises(InvalidArgument, match="is an embedding model"):
        world.models.generator(EMBED)
    with pytest.raises(InvalidArgument, match="is an embedding model"):
        world.run(world.models.engine(m))
    with pytest.raises(InvalidArgument, match="generates text"):
        world.models.embedding(CHAT)
    with pytest.raises(InvalidArgument, match="generates text"):
        world.run(world.models.embedder(chat))
    assert chat.engine is None and chat.embedder is None  # nothing loaded for the refusals
    with pytest.raises(FailedPrecondition, match="built in"):
        world.run(world.models.remove(EMBED))


def test_an_app_call_is_bounded(world: World) -> None:
    def refused(texts: list[str]) -> str:
        with pytest.raises(InvalidArgument) as info:
            world.run(world.embeddings.embed("com.example.a", "", texts, ok))
        return str(info.value)

    assert "no texts" in refused([])
    assert "ai.max_embed_texts 8" in refused(["x"] * 9)
    assert "ai.max_embed_bytes 8192" in refused(["é" * 2100, "a" * 4000])
    assert "ai.max_embed_chars 4096" in refused(["a" * 4097])
    words = " ".join(f"w{i}" for i in range(600))  # < 4096 characters, > 512 tokens
    assert "more than the context of model all-minilm-l6-v2 holds (512 tokens)" in refused(["fine", words])
    with pytest.raises(InvalidArgument, match="generates text"):
        world.run(world.embeddings.embed("a", CHAT, ["x"], ok))


def test_an_app_call_embeds(world: World) -> None:
    out = world.run(world.embeddings.embed("com.example.a", "", ["The cat sits on the mat.", ""], ok))
    assert out.model == EMBED and out.vectors.shape == (2, 384) and out.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    assert out.prompt_tokens == 9 + 2  # [CLS] the cat sits on the mat . [SEP], and [CLS] [SEP]


def test_the_daemons_text_embedder(world: World) -> None:
    embedder: TextEmbedder = world.run(world.embeddings.text_embedder())
    m = world.models.get(EMBED)
    digest = hashlib.sha256(m.spec.path.read_bytes()).hexdigest()
    assert embedder.model_id == f"{EMBED}@{digest[:16]}" and embedder.dim == 384
    texts = [
        "How do I reset my password?",
        "Steps to recover a forgotten login password",
        "Banana bread recipe",
    ]
    long = "A very long row. " * 400  # far beyond the context: cut to it, not refused
    v = world.run(embedder.embed([*texts, long]))
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    app = world.run(world.embeddings.embed("com.example.a", "", texts, ok)).vectors
    assert np.allclose(app, v[:3], atol=1e-4)  # the same model, the same vectors
    assert world.run(embedder.embed([])).shape == (0, 384)


def test_an_added_embedding_gguf_is_found_by_its_metadata(world: World) -> None:
    """AddModel of a GGUF that pools is an embedding model (no configuration says so); removing it
    frees its engine."""
    path = world.models.get(EMBED).spec.path
    m = world.run(world.models.add(ModelSpec("minilm-copy", path)))
    assert (m.kind, m.dim, m.spec.n_ctx) == ("embed", 384, 512)
    out = world.run(world.embeddings.embed("com.example.a", "minilm-copy", ["The cat sits on the mat."], ok))
    assert out.model == "minilm-copy" and out.vectors.shape == (1, 384)
    assert m.embedder is not None and m.loaded
    world.run(world.models.remove("minilm-copy"))
    assert m.embedder is None and m.removed


def test_no_embedding_model_is_a_failed_precondition(tmp_path: Path) -> None:
    w = World(tmp_path, embedding_model="")
    try:
        with pytest.raises(FailedPrecondition, match="no embedding model"):
            w.run(w.embeddings.embed("a", "", ["x"], ok))
        with pytest.raises(FailedPrecondition, match="no embedding model"):
            w.run(w.embeddings.text_embedder())
    finally:
        w.close()

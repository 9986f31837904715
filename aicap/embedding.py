"""Embeddings: a batch of texts → unit vectors from an embedding model (OpenHarmony's
intelligence.getEmbedding), for apps (AiService.Embed, /v1/embeddings) and for the daemon itself.

An app's call is bounded before anything is tokenized: at most `ai.max_embed_texts` texts, each at
most `ai.max_embed_chars` characters (0: 8 per cell of the model's context) and all together at most
`ai.max_embed_bytes` of UTF-8; then it holds one of its app's request slots (the same per-app limits
as a generation), is tokenized on the tokenizing pool, and a text longer than the model's context is
refused (INVALID_ARGUMENT naming the limit). The texts are embedded on the inference thread, in
batches shared with other callers (aicap.engine.async_embedder).

The daemon's own callers (the DataShare indexer) get a `TextEmbedder` (`Embeddings.text_embedder`):
its texts are cut to the model's context, as sentence-transformers cuts them, and embedded as
background work, which the apps' calls go before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from aicap.config import AiConfig
from aicap.engine.async_embedder import AsyncEmbedder
from aicap.engine.async_engine import EngineClosed
from aicap.engine.tokenizer import Tokenizer
from aicap.errors import InvalidArgument, Unavailable
from aicap.limits import AppLimiter
from aicap.models import Model, ModelRegistry
from aicap.prompts import CHARS_PER_TOKEN, Prompts

BACKGROUND = "\0daemon"  # the tenant of the daemon's own calls (no bundle holds a NUL)


class TextEmbedder(Protocol):
    """An embedding model as the daemon's own components use it (the DataShare indexer)."""

    model_id: str  # "{name}@{first 16 hex digits of the GGUF's sha256}": other ids, other vectors
    dim: int  # the vectors' length

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """float32 (len(texts), dim), unit rows; a text longer than the model's context is cut to it.
        aicap's errors: Unavailable while the model is unloaded or the daemon stops."""
        ...


@dataclass(frozen=True, slots=True)
class Embedded:
    model: str
    vectors: npt.NDArray[np.float32]  # (texts, dim), unit rows
    prompt_tokens: int


class Embeddings:
    def __init__(
        self, config: AiConfig, models: ModelRegistry, prompts: Prompts, limiter: AppLimiter
    ) -> None:
        self.config, self.models, self.prompts, self.limiter = config, models, prompts, limiter

    async def embed(self, app: str, model: str, texts: Sequence[str], check: Callable[[], None]) -> Embedded:
        """An app's call: `check()` raises if the app may no longer use the AI (after waiting its turn)."""
        m = self.models.embedding(model)
        self._check_size(texts)
        async with self.limiter.slot(app):
            check()
            tok = await self.models.tokenizer(m)
            engine = await self.models.embedder(m)  # InvalidArgument if it generates
            self._check_chars(texts, m)
            tokens = await self.prompts.run(_tokenize, tok, list(texts), 0)
            for i, t in enumerate(tokens):
                if len(t) > m.spec.n_ctx:
                    raise InvalidArgument(
                        f"text {i} has {len(t)} tokens, more than the context of model {m.name} holds "
                        f"({m.spec.n_ctx} tokens): split it (aicap.split_text)"
                    )
            vectors = await _run(engine, tokens, app)
        return Embedded(m.name, vectors, sum(map(len, tokens)))

    async def text_embedder(self, model: str = "") -> TextEmbedder:
        """The embedding model `model` (ai.embedding_model if "") for the daemon's own use: loaded, its
        digest known. FailedPrecondition when there is none, InvalidArgument for a model that
        generates."""
        m = self.models.embedding(model)
        await self.models.embedder(m)
        digest = await self.models.digest(m)
        return _ModelEmbedder(self, m, f"{m.name}@{digest[:16]}")

    def _check_size(self, texts: Sequence[str]) -> None:
        limit = self.config.max_embed_texts
        if not texts:
            raise InvalidArgument("no texts to embed")
        if len(texts) > limit:
            raise InvalidArgument(
                f"{len(texts)} texts are more than a call may embed (ai.max_embed_texts {limit})"
            )
        size, limit = sum(len(t.encode()) for t in texts), self.config.max_embed_bytes
        if size > limit:
            raise InvalidArgument(
                f"the texts have {size} bytes (UTF-8) together, more than a call may send "
                f"(ai.max_embed_bytes {limit})"
            )

    def _check_chars(self, texts: Sequence[str], m: Model) -> None:
        """Bounded before tokenizing: more characters than this never fit the context."""
        limit = self.config.max_embed_chars or CHARS_PER_TOKEN * m.spec.n_ctx
        for i, t in enumerate(texts):
            if len(t) > limit:
                how = "" if self.config.max_embed_chars else f", {CHARS_PER_TOKEN} x the context of {m.name}"
                raise InvalidArgument(
                    f"text {i} has {len(t)} characters, more than a text to embed may have "
                    f"(ai.max_embed_chars {limit}{how}): split it (aicap.split_text)"
                )


class _ModelEmbedder:
    """TextEmbedder over one model, as background work."""

    def __init__(self, embeddings: Embeddings, m: Model, model_id: str) -> None:
        self._embeddings, self._m = embeddings, m
        self.model_id = model_id
        self.dim = m.dim

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        models, m = self._embeddings.models, self._m
        tok = await models.tokenizer(m)
        engine = await models.embedder(m)
        limit = CHARS_PER_TOKEN * m.spec.n_ctx  # a longer text is cut anyway: tokenize no more
        cut = [t[:limit] for t in texts]
        tokens = await self._embeddings.prompts.run(_tokenize, tok, cut, m.spec.n_ctx)
        return await _run(engine, tokens, BACKGROUND, background=True)


def _tokenize(tok: Tokenizer, texts: list[str], cut: int) -> list[list[int]]:
    """On the tokenizing pool: each text with the model's special tokens ([CLS] ... [SEP]); `cut` > 0
    keeps the first `cut` - 1 and the last (the closing special token)."""
    with tok.using():
        out = [tok.tokenize(t, add_special=True) for t in texts]
    if cut:
        out = [t if len(t) <= cut else [*t[: cut - 1], t[-1]] for t in out]
    return out


async def _run(
    engine: AsyncEmbedder, tokens: list[list[int]], tenant: str, background: bool = False
) -> npt.NDArray[np.float32]:
    try:
        return await engine.embed(tokens, tenant, background)
    except ValueError as exc:  # a text of no tokens (a model without special tokens, an empty text)
        raise InvalidArgument(str(exc)) from None
    except EngineClosed:
        raise Unavailable("the embedding model was unloaded (removed, or the daemon is stopping)") from None

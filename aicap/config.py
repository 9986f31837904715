"""The plain values aicap runs with, and the one place each default is defined.

The daemon's settings (`ai` section) take their defaults from these dataclasses and build them; the
engine gets `RunnerConfig` (one llama.cpp context) and `EngineConfig` (scheduling and the KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_EMBED_MODEL = "all-minilm-l6-v2"  # built in when its package is installed (aicap.bert_gguf)
USE_AI = "ohos.permission.USE_AI"


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """One model's llama.cpp context. model_path None: the built-in model."""

    model_path: Path | None = None
    n_ctx: int = 8192  # KV cells
    n_seq_max: int = 64  # llama.cpp seq ids: the engine's running slots, then prefix-cache holders
    n_batch: int = 512  # the most tokens one llama_decode takes (the engine's max_batch_tokens fit)
    n_threads: int = 2
    kv_unified: bool = True  # one cell pool for all seq ids: needed to share cells between them
    flash_attn: bool = True
    cache_type: str = "f16"  # the KV cells' type: "f16" or "q8_0" (half the bytes; V needs flash_attn)
    # a second context on this file decodes a lone sequence (aicap/engine/solo.py): the shipped weights
    # of a model loaded as its fast copy; None: one context
    solo_model_path: Path | None = None


CACHE_TYPES = ("f16", "q8_0")  # the KV cache types a context may use (llama.cpp's GGML type names)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What the engine schedules and caches on a context."""

    block_size: int = 8  # tokens per KV block
    max_batch_tokens: int = 512  # tokens per step (one llama_decode)
    max_running: int = 16  # sequences decoding at once (at most the context's n_seq_max)
    # a step that computes a prompt admits another waiting one only while its prompt tokens stay within
    # this (a burst of prompts is computed a few hundred tokens a step: the first ones' first tokens
    # do not wait for the whole burst; max_batch_tokens: every step packed full)
    prefill_pack_tokens: int = 256
    swap_budget_tokens: int = 16384  # KV of preempted sequences kept in host memory; beyond: recompute
    prefix_caching: bool = True
    # unused cached blocks kept at most, in tokens (each costs attention time; the adaptive budget keeps
    # fewer: with it off, ~2048 is the better ceiling)
    prefix_cache_tokens: int = 8192
    prefix_cache_adaptive: bool = True  # keep of those only as many as their reuse pays for (cache_budget.py)
    held_cache_tokens: int = 4096  # cached blocks held for sessions and pinned contexts, in tokens
    isolate_apps: bool = True  # salt the prefix cache per app (declared shared prefixes excepted)
    # speculation (speculation.py): drafted tokens per sequence and step (0: off); drafts only while a
    # step's tokens stay within this many; the share of a one-token step one more token costs (None:
    # from the measured speeds)
    spec_draft_max: int = 8
    spec_max_batch_tokens: int = 32
    spec_token_cost: float | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A registry entry: a GGUF file served under `name`. n_ctx 0: the service's default;
    chat_template "": the GGUF's own."""

    name: str
    path: Path
    n_ctx: int = 0
    chat_template: str = ""
    kind: str = ""  # "generate", "embed"; "": as the GGUF says (a pooling type: an embedding model)


@dataclass(frozen=True, slots=True)
class SharedPrefix:
    """A prompt prefix the device owner declared shareable between `apps` ("*": every app): the
    prefix cache's blocks wholly inside it are shared by those apps even when apps are isolated."""

    name: str
    text: str
    apps: frozenset[str]

    def for_app(self, app: str) -> bool:
        return app in self.apps or "*" in self.apps


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """What an unset field of a request's sampling parameters means (llama.cpp server's defaults)."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64


@dataclass(frozen=True, slots=True)
class AiConfig:
    default_model: str = DEFAULT_MODEL  # the model of requests that name none
    models: tuple[ModelSpec, ...] = ()  # from the daemon's configuration
    runner: RunnerConfig = RunnerConfig()  # every model's context (its path, and n_ctx if it sets one)
    engine: EngineConfig = EngineConfig()
    shared_prefixes: tuple[SharedPrefix, ...] = ()
    # embeddings (aicap.embedding): the model of Embed calls that name none ("": none); where the
    # built-in one's GGUF is converted to (None: not built in); a call's bounds; tokens per engine turn
    embedding_model: str = DEFAULT_EMBED_MODEL
    model_cache_dir: Path | None = None
    # load a Q8_0 copy (made once in model_cache_dir) of Q4_1 and Q5_1 weights (aicap.weights)
    fast_weights: bool = True
    # with fast_weights, a lone sequence decodes on the shipped weights (aicap/engine/solo.py)
    solo_weights: bool = True
    max_embed_texts: int = 256
    max_embed_chars: int = 0  # of each text; 0: 8 x the model's context
    max_embed_bytes: int = 1 << 20  # UTF-8 bytes of a call's texts together
    embed_batch_tokens: int = 128
    # protection
    max_concurrent_per_app: int = 8
    max_queued_per_app: int = 32
    max_waiting: int = 128
    max_tokens_limit: int = 1024
    max_prompt_chars: int = 0  # characters of a prompt (chat: all messages); 0: 8 x the model's n_ctx
    max_n: int = 8
    max_stop_strings: int = 8
    max_stop_chars: int = 128
    max_grammar_chars: int = 32768  # a response format's schema, a grammar, a chat's tools (each request)
    # grounded chats (aicap.grounding): sources per request, rows per source, the prompt's room for them
    max_context_sources: int = 4
    max_context_k: int = 16
    max_context_tokens: int = 1536
    max_passage_chars: int = 2000  # of each retrieved row's text
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    # paired devices (datamgr.ai_bridge)
    offload: bool = False  # AUTO placement by default, and requests naming a paired device, allowed
    offload_min_level: int = 3  # the least confirmed security level of a device a prompt may reach
    max_migrations: int = 3  # devices lost by one generation before it fails UNAVAILABLE
    speed_max_age_s: float = 120.0  # idle and asked by a peer, older speed figures are measured again
    metrics_port: int | None = None  # serve /metrics on 127.0.0.1:port
    # sessions and pinned contexts (aicap.sessions), and the daily token quota (aicap.usage; 0: none)
    max_sessions_per_app: int = 8
    session_idle_s: float = 600.0  # a session not used for this long is closed
    max_pinned_per_app: int = 8
    max_pinned_chars: int = 16384
    tokens_per_day_per_app: int = 0

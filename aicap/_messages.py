"""The SDK's side of the aicap.v1 messages: plain result dataclasses, chunk assembly, request builders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict, Unpack

from aicap.errors import InvalidArgument
from aicap.v1 import aicap_pb2 as pb

_FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}
Messages = Iterable[Mapping[str, str] | Sequence[str]]
"""Chat messages: {"role", "content"} dicts or (role, content) pairs."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one sample; `cached_tokens` of the prompt came from the prefix cache."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    device: str = ""  # the id of the device that generated the sample's last tokens
    migrations: int = 0  # devices lost mid-stream (the generation replayed on another)


@dataclass(frozen=True, slots=True)
class CompletionChunk:
    """New text of sample `index` and the tokens it came from; the last chunk of a sample has
    `finish_reason` ("stop": end of generation or a stop string, "length": max_tokens) and `usage`."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(slots=True)
class Sample:
    """One whole sample of a completion."""

    index: int
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None


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


def model_from_proto(msg: pb.Model) -> Model:
    return Model(msg.name, msg.path, msg.n_ctx, msg.chat_template, msg.is_default, msg.loaded)


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


_SAMPLING_KEYS = frozenset(Sampling.__annotations__)


def sampling_params(**sampling: Unpack[Sampling]) -> pb.SamplingParams:
    """The SamplingParams message for sampling keywords; None leaves a field to the daemon."""
    unknown = set(sampling) - _SAMPLING_KEYS
    if unknown:
        raise TypeError(f"unknown sampling argument(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {k: v for k, v in sampling.items() if v is not None}
    stop = values.pop("stop", ())
    values["stop"] = [stop] if isinstance(stop, str) else list(stop)
    try:
        return pb.SamplingParams(**values)
    except (TypeError, ValueError) as exc:  # a wrong type or a value out of the field's range
        raise InvalidArgument(f"invalid sampling arguments: {exc}") from None


def chat_messages(messages: Messages) -> list[pb.ChatMessage]:
    """Messages as {"role", "content"} dicts or (role, content) pairs."""
    out = []
    for m in messages:
        if isinstance(m, Mapping):
            if set(m) - {"role", "content"} or "role" not in m or "content" not in m:
                raise InvalidArgument(f'a chat message needs exactly "role" and "content", got {dict(m)!r}')
            role, content = m["role"], m["content"]
        elif not isinstance(m, str) and len(m) == 2:
            role, content = m
        else:
            raise InvalidArgument(
                f"a chat message is a {{role, content}} dict or a (role, content) pair: {m!r}"
            )
        if not isinstance(role, str) or not isinstance(content, str):
            raise InvalidArgument(f"role and content of a chat message are strings: {m!r}")
        out.append(pb.ChatMessage(role=role, content=content))
    return out


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
    messages: Messages, model: str | None, sampling: Sampling, placement: str | None = None
) -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model or "",
        messages=chat_messages(messages),
        params=sampling_params(**sampling),
        **placement_fields(placement),
    )

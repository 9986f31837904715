"""A request's sampling parameters, checked and completed with the daemon's defaults (pure logic)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aicap.config import AiConfig
from aicap.engine.sampler import SamplingParams
from aicap.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Request:
    params: SamplingParams
    stops: tuple[str, ...]


def _range(name: str, value: float, low: float, high: float) -> float:
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidArgument(f"{name} {value:g} is out of range: {low:g}-{high:g}")
    return value


def sampling(p: dict[str, Any], config: AiConfig, prompt_tokens: int, n_ctx: int, model: str) -> Request:
    """The engine's SamplingParams for a prompt of `prompt_tokens` on a model with `n_ctx` cells, from
    the request's fields that are set (`p`: name → value, as aicap.v1.SamplingParams names them);
    InvalidArgument naming the first bad field (nothing is queued then)."""
    d = config.sampling
    limit = config.max_tokens_limit
    bs = config.engine.block_size
    capacity = n_ctx // bs * bs  # what the engine's KV blocks hold
    if prompt_tokens >= capacity:
        raise InvalidArgument(
            f"the prompt ({prompt_tokens} tokens) does not fit the context of model {model} "
            f"({capacity} tokens)"
        )
    if "max_tokens" in p:
        max_tokens = p["max_tokens"]
        if max_tokens < 1:
            raise InvalidArgument("max_tokens must be at least 1")
        if max_tokens > limit:
            raise InvalidArgument(
                f"max_tokens {max_tokens} is above the per-app limit of {limit} tokens (ai.max_tokens_limit)"
            )
        if prompt_tokens + max_tokens > capacity:
            raise InvalidArgument(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the context of "
                f"model {model} ({capacity} tokens)"
            )
    else:
        max_tokens = min(d.max_tokens, limit, capacity - prompt_tokens)
    temperature = p.get("temperature", d.temperature)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InvalidArgument(f"temperature {temperature:g} must be 0 (greedy) or more")
    top_p = _range("top_p", p.get("top_p", d.top_p), 0.0, 1.0)
    min_p = _range("min_p", p.get("min_p", d.min_p), 0.0, 1.0)
    repeat_penalty = p.get("repeat_penalty", d.repeat_penalty)
    if not (math.isfinite(repeat_penalty) and repeat_penalty > 0):
        raise InvalidArgument(f"repeat_penalty {repeat_penalty:g} must be above 0 (1: off)")
    presence = _range("presence_penalty", p.get("presence_penalty", 0.0), -2.0, 2.0)
    frequency = _range("frequency_penalty", p.get("frequency_penalty", 0.0), -2.0, 2.0)
    n = p.get("n", 0) or 1
    if n > config.max_n:
        raise InvalidArgument(f"n {n} is out of range: 1-{config.max_n} samples (ai.max_n)")
    stops = tuple(p.get("stop", ()))
    if len(stops) > config.max_stop_strings:
        raise InvalidArgument(f"{len(stops)} stop strings: at most {config.max_stop_strings}")
    for s in stops:
        if not 1 <= len(s) <= config.max_stop_chars:
            raise InvalidArgument(f"stop string {s[:20]!r} must have 1-{config.max_stop_chars} characters")
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=p.get("top_k", d.top_k),
        top_p=top_p,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        repeat_last_n=p.get("repeat_last_n", d.repeat_last_n),
        seed=p.get("seed"),
        ignore_eos=bool(p.get("ignore_eos")),
        n=n,
        logprobs=bool(p.get("logprobs")),
        presence_penalty=presence,
        frequency_penalty=frequency,
    )
    return Request(params, stops)

"""Sampling parameters: daemon defaults for unset fields, limits named in the messages."""

from __future__ import annotations

from typing import Any

import pytest

from aicap.config import AiConfig
from aicap.errors import InvalidArgument
from aicap.sampling import sampling

CONFIG = AiConfig(max_tokens_limit=100, max_n=4)


def check(p: dict[str, Any], prompt: int = 10, n_ctx: int = 256) -> Any:
    return sampling(p, CONFIG, prompt, n_ctx, "m")


def test_unset_fields_take_the_daemon_defaults_and_max_tokens_the_app_limit() -> None:
    r = check({})
    assert r.stops == ()
    p = r.params
    assert (p.max_tokens, p.temperature, p.top_k, p.top_p, p.min_p) == (100, 0.8, 40, 0.95, 0.05)
    assert (p.repeat_penalty, p.repeat_last_n, p.seed, p.n, p.logprobs) == (1.0, 64, None, 1, False)


def test_unset_max_tokens_shrinks_to_what_the_context_leaves() -> None:
    assert check({}, prompt=200, n_ctx=256).params.max_tokens == 56


def test_set_fields_are_kept_including_zero() -> None:
    p = check({"temperature": 0.0, "top_k": 0, "seed": 7, "n": 2, "stop": ["\n"], "max_tokens": 5}).params
    assert (p.temperature, p.top_k, p.seed, p.n, p.max_tokens) == (0.0, 0, 7, 2, 5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_tokens": 0}, "at least 1"),
        ({"max_tokens": 101}, "limit of 100 tokens"),
        ({"max_tokens": 100}, "exceeds the context"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": -1.0}, "min_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"n": 5}, "1-4"),
        ({"stop": ["a"] * 9}, "at most 8"),
        ({"stop": [""]}, "1-128"),
        ({"stop": ["x" * 129]}, "1-128"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check(fields, prompt=200, n_ctx=256)


def test_a_prompt_filling_the_context_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="does not fit the context"):
        check({}, prompt=256, n_ctx=260)  # 16 blocks of 16 = 256 usable tokens

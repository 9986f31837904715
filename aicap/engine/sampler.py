"""Sampling: a request's parameters and the draw of one token from a sequence's logits.

Applied in llama.cpp's order: the repeat, frequency and presence penalties, top_k, top_p, min_p,
temperature, then a draw with the sequence's own generator (or argmax when temperature is 0). Pure
numpy; runs once per sampled token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from aicap.engine.sequence import Sequence


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """One request's sampling. Every default switches its step off (greedy, no penalty); the daemon's
    defaults for fields a request leaves unset are aicap.config.SamplingDefaults."""

    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: all tokens
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0  # 1: off
    repeat_last_n: int = 64  # tokens of prompt + output the penalty looks back on (-1: all)
    seed: int | None = None  # sample i of n draws with seed + i
    ignore_eos: bool = False
    n: int = 1  # parallel samples; they share the prompt's KV blocks
    presence_penalty: float = 0.0  # OpenAI's, applied as llama.cpp does (see penalize)
    frequency_penalty: float = 0.0
    logprobs: bool = False
    # draws this stream already made elsewhere (a generation continued on another device): the seeded
    # generator skips them, so a moved generation goes on with the same random stream (one draw a token)
    skip_draws: int = 0


def sample(seq: Sequence, logits: np.ndarray, allowed: np.ndarray | None = None) -> tuple[int, float | None]:
    """The sequence's next token under its parameters, among the `allowed` ones if given (structured
    output: a boolean mask with at least one True), and, if they ask for it, the token's
    log-probability under the model's own distribution (unpenalized and unmasked)."""
    p = seq.params
    raw = logits
    logits = penalize(seq, logits)
    if allowed is not None:
        # among the allowed tokens alone: the same draw as with the others at -inf, without handing
        # argpartition tens of thousands of equal -inf values (10x slower there than on the subset)
        ids = np.flatnonzero(allowed)
        sub = logits[ids]
        tok = int(ids[int(sub.argmax()) if p.temperature <= 0 else draw(sub, p, seq.rng)])
    else:
        tok = int(logits.argmax()) if p.temperature <= 0 else draw(logits, p, seq.rng)
    logprob = None
    if p.logprobs:
        m = float(raw.max())
        logprob = float(raw[tok] - m - np.log(np.exp(raw - m, dtype=np.float64).sum()))
    return tok, logprob


def penalize(seq: Sequence, logits: np.ndarray) -> np.ndarray:
    """llama.cpp's penalties over the last repeat_last_n tokens (prompt and output; -1: all): the
    repeat penalty divides a positive logit and multiplies a negative one, then each token loses
    frequency_penalty times its count there and presence_penalty once. `logits` when all are off."""
    p = seq.params
    off = p.repeat_penalty == 1.0 and not p.frequency_penalty and not p.presence_penalty
    if off or p.repeat_last_n == 0:
        return logits
    history = seq.tokens[-p.repeat_last_n :] if p.repeat_last_n > 0 else seq.tokens
    recent, counts = np.unique(np.asarray(history, dtype=np.int64), return_counts=True)
    logits = logits.copy()
    vals = logits[recent]
    if p.repeat_penalty != 1.0:
        vals = np.where(vals > 0, vals / p.repeat_penalty, vals * p.repeat_penalty)
    logits[recent] = vals - counts * p.frequency_penalty - p.presence_penalty
    return logits


def draw(logits: np.ndarray, p: SamplingParams, rng: np.random.Generator) -> int:
    """top_k, top_p, min_p on the (penalized) distribution, then temperature, then a draw."""
    if 0 < p.top_k < len(logits):
        cand = np.argpartition(logits, -p.top_k)[-p.top_k :]
    else:
        cand = np.arange(len(logits))
    cl = logits[cand].astype(np.float64)
    order = np.argsort(-cl, kind="stable")
    cand, cl = cand[order], cl[order]
    probs = np.exp(cl - cl[0])
    probs /= probs.sum()
    keep = len(cand)
    if p.top_p < 1.0:
        keep = min(keep, int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1)
    if p.min_p > 0.0:
        keep = min(keep, max(1, int(np.count_nonzero(probs >= p.min_p * probs[0]))))
    cand, cl = cand[:keep], cl[:keep]
    scaled = (cl - cl[0]) / p.temperature
    probs = np.exp(scaled)
    probs /= probs.sum()
    return int(cand[rng.choice(len(cand), p=probs)])

"""Speculation where output copies input: n-gram (prompt lookup) drafts, verified in the batched step.

A running sequence's last `n` tokens (n = `NGRAM_MAX` down to `NGRAM_MIN`) are looked up among its
earlier tokens, prompt and output; the tokens that followed their latest earlier occurrence are its
draft (llama.cpp's ngram-simple, vLLM's prompt lookup). The draft rides in the same llama_decode as
every other sequence's work, with logits at each of its positions; the engine then samples position
by position exactly as plain decoding would (the same sampler, penalties over the tokens accepted so
far, the same random draws) and keeps the draft while each sampled token equals the drafted one. The
tokens are therefore the ones plain decoding of that batch would produce; a rejected draft's KV cells
are removed and its reserved blocks given back.

Drafting must not lose. A drafted token costs about what a prompt token does (measured here: a
step's time grows almost linearly with its tokens on a CPU), so the k-th token of a draft pays only if
the chance that it and all before it are accepted, p^k, exceeds its share of the step's cost: with
t = seconds per token (1 / prefill speed), T1 = one sequence's decode step and N sequences decoding,
c = N t / (T1 + (N - 1) t), and a draft is as long as p^k > c allows (`Drafter.length`). p is each
sequence's own acceptance rate, a decayed count of its drafts' outcomes that starts at `PRIOR` and
drifts back to it while the sequence does not draft, so a sequence whose drafts miss stops drafting
and tries again later, and one copying its input drafts long. It is kept apart by how far the match
goes back (`MATCH_BUCKETS`): a draft whose last 12 tokens or more agree with the text before the
earlier occurrence is copying a span and was accepted 91% of the time on the extraction workload,
one matching only 2 tokens 21% (JSON keys between copied values): one rate made the copies short
after each miss at a seam. On a GPU t is tiny and c near 0; on this
CPU c is 0.4-0.9, and only text copied nearly verbatim is drafted.
"""

from __future__ import annotations

import math

NGRAM_MAX = 3
NGRAM_MIN = 2
PRIOR = (0.9, 0.1)  # (accepted, rejected) a sequence's acceptance rate starts from: 0.9, weighing one draft
DECAY = 0.5  # each draft's outcome weighs this much less at the next: a change of text shows soon
DRIFT = 0.97  # each step without a draft, the evidence fades by this much toward the prior
MATCH_BUCKETS = (4, 12)  # a match agreeing on fewer tokens than each bound has a rate of its own


class Drafter:
    """One sequence's n-gram index over its tokens and its drafts' acceptance rates (by match length)."""

    __slots__ = ("_bucket", "_hits", "_index", "_indexed", "_misses")

    def __init__(self) -> None:
        # per n: n-gram → the position of the token that followed its latest occurrence
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(NGRAM_MIN, NGRAM_MAX + 1)}
        self._indexed = 0  # n-grams ending before this position are indexed
        # per match bucket: decayed counts of accepted and rejected drafted tokens
        self._hits = [0.0] * (len(MATCH_BUCKETS) + 1)
        self._misses = [0.0] * (len(MATCH_BUCKETS) + 1)
        self._bucket = 0  # of the last match found: `rate`, `length` and `accepted` are its

    @property
    def rate(self) -> float:
        """The estimated chance that a drafted token is accepted, given the one before it was."""
        hits, misses = self._hits[self._bucket] + PRIOR[0], self._misses[self._bucket] + PRIOR[1]
        return hits / (hits + misses)

    def propose(self, tokens: list[int], cost: float, most: int) -> list[int]:
        """The draft for this step: what followed the suffix's latest earlier occurrence, as long as
        the rate of matches like it pays for at `cost` (`length`), at most `most` tokens."""
        found = self._match(tokens)
        if found is None:
            self._fade()
            return []
        at, self._bucket = found
        return tokens[at : min(at + self.length(cost, most), len(tokens))]

    def length(self, cost: float, most: int) -> int:
        """How many tokens to draft this step, at most `most`: while rate^k > `cost` (the share of
        the step one more token costs, see the module). A step with no draft lets the evidence fade."""
        p = self.rate
        if cost <= 0.0 or p >= 1.0:
            k = most
        elif cost >= 1.0 or p <= cost:
            k = 0
        else:
            k = int(math.log(cost) / math.log(p))
        k = max(0, min(k, most))
        if k == 0:
            self._fade()
        return k

    def accepted(self, n: int, of: int) -> None:
        """The last draft of `of` tokens had its first `n` accepted (a rejection ended it if n < of)."""
        b = self._bucket
        self._hits[b] = self._hits[b] * DECAY + n
        self._misses[b] = self._misses[b] * DECAY + (n < of)

    def _fade(self) -> None:
        for b in range(len(self._hits)):
            self._hits[b] *= DRIFT
            self._misses[b] *= DRIFT

    def _match(self, tokens: list[int]) -> tuple[int, int] | None:
        """(the position after the latest earlier occurrence of the longest n-gram suffix, the bucket
        of how many tokens before it agree too), or None."""
        self._catch_up(tokens)
        end = len(tokens)
        for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
            if end < n:
                continue
            at = self._index[n].get(tuple(tokens[end - n :]))
            if at is not None:
                agree = n
                while (
                    agree < MATCH_BUCKETS[-1]
                    and agree < at
                    and tokens[at - 1 - agree] == tokens[end - 1 - agree]
                ):
                    agree += 1
                return at, sum(agree >= bound for bound in MATCH_BUCKETS)
        return None

    def _catch_up(self, tokens: list[int]) -> None:
        """Indexes every n-gram that has a following token (the last tokens' own n-grams wait for it,
        so a lookup of the suffix never finds itself)."""
        last = len(tokens) - 1  # the latest position a following token can be at
        for pos in range(max(self._indexed, 1), last + 1):
            for n, index in self._index.items():
                if pos >= n:
                    index[tuple(tokens[pos - n : pos])] = pos
        self._indexed = max(self._indexed, last + 1)

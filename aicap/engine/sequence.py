"""One sample of a generation request as the engine sees it: its tokens, how many are in the KV cache,
its state, and how its tokens are drawn (sampling parameters and its own random generator)."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from aicap.engine.sampler import SamplingParams

if TYPE_CHECKING:
    from llguidance import LLMatcher

    from aicap.engine.speculation import Drafter
    from aicap.kv_state import KvState

_arrivals = itertools.count()
_GREEDY = SamplingParams(max_tokens=0)  # of a sequence built without parameters (its max_tokens rules)


class Status(enum.Enum):
    WAITING = "waiting"  # not admitted, or preempted by recompute
    RUNNING = "running"
    SWAPPED = "swapped"  # preempted; its KV state is saved in host memory
    FINISHED = "finished"


class Away(enum.Enum):
    """Where a swapped-out sequence's KV state is when not (only) in this host's memory
    (remote_swap.py): a remote store keeps it beyond the swap budget."""

    SHIPPING = "shipping"  # saved here, on its way to the store (swapped in from here if need be)
    AWAY = "away"  # only the store holds it
    FETCHING = "fetching"  # asked back: the sequence waits for it


@dataclass(eq=False, slots=True)
class Sequence:
    seq_id: int
    app: str
    prompt: list[int]
    max_tokens: int  # the scheduler's copy of params.max_tokens
    salt: str = ""  # the prefix cache's salt of its blocks (its app's, when apps are isolated)
    shared_salt: str = ""  # the salt of the declared shared prefix its prompt starts with, if any
    shared_tokens: int = 0  # how many prompt tokens that prefix covers
    stop_tokens: frozenset[int] = frozenset()  # end-of-generation tokens (empty: ignore them)
    after: Sequence | None = None  # admit only once this one's prompt is computed (n > 1 samples)
    params: SamplingParams = _GREEDY
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    request_id: int = 0  # the request it samples for
    index: int = 0  # which of the request's n samples it is
    prefill_only: bool = False  # ends once its prompt is computed, sampling nothing (its KV is exported)
    imported: KvState | None = None  # the KV of its first tokens, restored into its slot at admission
    may_leave: bool = False  # its KV may be kept by a remote store when swapped out (its request's placement)
    away: Away | None = None  # swapped out to a remote store (None: its state, if any, is here)
    matcher: LLMatcher | None = None  # structured output: what may come next (grammar.py)
    ended: bool = False  # its grammar is complete: it ends as if it sampled an end-of-generation token
    drafter: Drafter | None = None  # speculation (speculation.py): None when it may not speculate
    draft: list[int] = field(default_factory=list)  # tokens drafted after its last one, this step
    output: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed: int = 0  # leading tokens whose KV is in the cache
    cached_tokens: int | None = None  # prompt tokens found in the prefix cache at first admission
    block_hashes: list[int] = field(default_factory=list)  # its prompt's full blocks' (while waiting)
    arrival: int = field(default_factory=lambda: next(_arrivals))

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    def span(self, start: int, n: int) -> list[int]:
        """Tokens [start, start + n), without building `tokens` (a decode step takes one)."""
        p = len(self.prompt)
        if start >= p:
            return self.output[start - p : start - p + n]
        if start + n <= p:
            return self.prompt[start : start + n]
        return self.prompt[start:] + self.output[: start + n - p]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.output)

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed

    @property
    def stopped(self) -> bool:
        """It sampled an end-of-generation token, or its grammar ended it."""
        return self.ended or (bool(self.output) and self.output[-1] in self.stop_tokens)

    @property
    def done(self) -> bool:
        return len(self.output) >= self.max_tokens or self.stopped

    @property
    def ready(self) -> bool:
        """May be admitted: a sample waiting for its parent's prompt to be computed (to share its
        blocks through the prefix cache) is not."""
        a = self.after
        return a is None or a.status == Status.FINISHED or a.num_computed >= len(a.prompt)

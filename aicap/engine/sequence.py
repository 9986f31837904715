"""One generation request as the engine sees it: tokens, how many are in the KV cache, its state."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

_arrivals = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"  # not admitted, or preempted by recompute
    RUNNING = "running"
    SWAPPED = "swapped"  # preempted; its KV state is saved in host memory
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Sequence:
    seq_id: int
    app: str
    prompt: list[int]
    max_tokens: int
    salt: str = ""  # the prefix cache's salt of its blocks (its app's, when apps are isolated)
    shared_salt: str = ""  # the salt of the declared shared prefix its prompt starts with, if any
    shared_tokens: int = 0  # how many prompt tokens that prefix covers
    stop_tokens: frozenset[int] = frozenset()  # end-of-generation tokens (empty: ignore them)
    after: Sequence | None = None  # admit only once this one's prompt is computed (n > 1 samples)
    output: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed: int = 0  # leading tokens whose KV is in the cache
    cached_tokens: int | None = None  # prompt tokens found in the prefix cache at first admission
    arrival: int = field(default_factory=lambda: next(_arrivals))

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.output)

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed

    @property
    def stopped(self) -> bool:
        """It sampled an end-of-generation token."""
        return bool(self.output) and self.output[-1] in self.stop_tokens

    @property
    def done(self) -> bool:
        return len(self.output) >= self.max_tokens or self.stopped

    @property
    def ready(self) -> bool:
        """May be admitted: a sample waiting for its parent's prompt to be computed (to share its
        blocks through the prefix cache) is not."""
        a = self.after
        return a is None or a.status == Status.FINISHED or a.num_computed >= len(a.prompt)

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
    salt: str = ""
    eos: int | None = None
    output: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed: int = 0  # leading tokens whose KV is in the cache
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
    def done(self) -> bool:
        return len(self.output) >= self.max_tokens or (
            self.eos is not None and bool(self.output) and self.output[-1] == self.eos
        )

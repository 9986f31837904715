"""Which texts an embedding model encodes next: the fair batching of aicap.engine.async_embedder, as
pure logic (no threads, no model).

Each batch holds at most `batch_tokens` tokens (a first text longer than that goes alone) and
`max_texts` texts. The apps' texts come first, one text of each app per round, starting each batch
with the app after the last one served, so one app's thousand texts do not delay another's three;
background texts (the daemon's own, the DataShare indexer's) get only what the apps leave.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar


@dataclass(eq=False, slots=True)
class EmbedJob:
    """One call's texts (token ids)."""

    tenant: str
    texts: list[list[int]]
    background: bool = False
    sent: int = 0  # texts taken into a batch
    cancelled: bool = False  # its caller left: the texts not yet sent are dropped


J = TypeVar("J", bound=EmbedJob)


class EmbedQueue(Generic[J]):
    def __init__(self, batch_tokens: int, max_texts: int) -> None:
        self.batch_tokens, self.max_texts = batch_tokens, max_texts
        self._apps: dict[str, collections.deque[J]] = {}  # by tenant, in turn order
        self._background: collections.deque[J] = collections.deque()

    def add(self, job: J) -> None:
        if job.background:
            self._background.append(job)
        else:
            self._apps.setdefault(job.tenant, collections.deque()).append(job)

    def __bool__(self) -> bool:
        return bool(self._apps or self._background)

    def jobs(self) -> Iterator[J]:
        """The jobs with texts not yet taken."""
        for queue in self._apps.values():
            yield from queue
        yield from self._background

    def clear(self) -> None:
        self._apps.clear()
        self._background.clear()

    def waiting(self) -> int:
        """Texts not yet taken (of callers still waiting)."""
        return sum(len(j.texts) - j.sent for j in self.jobs() if not j.cancelled)

    def next_batch(self) -> list[tuple[J, int]]:
        """The next batch: (job, index of a text of it), in the order taken."""
        batch: list[tuple[J, int]] = []
        tokens = 0

        def take(queue: collections.deque[J]) -> bool:
            """The next text of the queue's first live job if it fits; False if the batch is full."""
            nonlocal tokens
            while queue and queue[0].cancelled:
                queue.popleft()
            if not queue:
                return True
            job = queue[0]
            n = len(job.texts[job.sent])
            if batch and (tokens + n > self.batch_tokens or len(batch) >= self.max_texts):
                return False
            batch.append((job, job.sent))
            tokens += n
            job.sent += 1
            if job.sent == len(job.texts):
                queue.popleft()
            return True

        order, last, full = list(self._apps), -1, False
        while self._apps and not full:
            for k, tenant in enumerate(order):
                queue = self._apps.get(tenant)
                if queue is None:
                    continue
                before = len(batch)
                if not take(queue):
                    full = True
                    break
                if len(batch) > before:
                    last = k
                if not queue:
                    del self._apps[tenant]
        if last >= 0:  # the next batch begins with the app after the last one served
            order = order[last + 1 :] + order[: last + 1]
            self._apps = {t: self._apps[t] for t in order if t in self._apps}
        while self._background and not full:
            full = not take(self._background)
        return batch

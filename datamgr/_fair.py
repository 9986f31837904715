"""Fair order for the one writer: per-tenant FIFO queues, served least-used-first (pure logic).

Each tenant has a virtual time: the writer time its jobs used. The next job is the head of the
backlogged tenant with the least virtual time (ties: the tenant backlogged longest), so a tenant that
floods, or whose jobs are long, waits behind the others instead of in front of them (Linux CFS's
idea). A tenant that becomes backlogged starts at no less than the floor (the least virtual time among the
backlogged tenants when a job was last picked; it never goes back): being idle banks no credit. One
tenant's jobs keep their order. No threads or clocks here: the caller measures and `charge`s.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Jobs by tenant; `pop` gives the next one to run, `charge` what running one cost."""

    __slots__ = ("_floor", "_queues", "_vtime")

    def __init__(self) -> None:
        self._queues: dict[str, deque[T]] = {}  # the backlogged tenants, in the order they became so
        self._vtime: dict[str, float] = {}  # tenants ahead of the floor (anyone else is at the floor)
        self._floor = 0.0

    def __bool__(self) -> bool:
        return bool(self._queues)

    def __len__(self) -> int:
        return sum(map(len, self._queues.values()))

    def push(self, tenant: str, job: T) -> None:
        queue = self._queues.get(tenant)
        if queue is not None:
            queue.append(job)
            return
        if self._vtime.get(tenant, self._floor) < self._floor:
            del self._vtime[tenant]  # idle time banks nothing: it starts at the floor
        self._queues[tenant] = deque((job,))

    def pop(self) -> tuple[str, T]:
        """The tenant and job to run next; IndexError when nothing is queued."""
        if not self._queues:
            raise IndexError("pop from an empty FairQueue")
        floor, vtime = self._floor, self._vtime
        if len(self._queues) == 1:  # the common case: no choice to make
            tenant = next(iter(self._queues))
        else:
            tenant = min(self._queues, key=lambda t: vtime.get(t, floor))
        self._floor = max(floor, vtime.get(tenant, floor))  # the least of the backlogged: it only rises
        queue = self._queues[tenant]
        job = queue.popleft()
        if not queue:
            del self._queues[tenant]
            if len(vtime) > 2 * len(self._queues) + 8:  # those at the floor are as good as unknown
                self._vtime = {t: v for t, v in vtime.items() if v > self._floor or t == tenant}
        return tenant, job

    def charge(self, tenant: str, used: float) -> None:
        """`tenant`'s job ran for `used` (seconds, or any unit as long as it is always the same)."""
        self._vtime[tenant] = self._vtime.get(tenant, self._floor) + used

    def vtime(self, tenant: str) -> float:
        """`tenant`'s virtual time (for tests and diagnostics)."""
        return max(self._vtime.get(tenant, self._floor), self._floor)

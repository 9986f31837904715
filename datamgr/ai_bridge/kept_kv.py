"""KV states paired devices keep in this device's memory (AiPeerService.KeepKv; Infinite-LLM: a
preempted sequence's KV held beyond its own device's swap budget).

A state is opaque chunks here (the device that sent it checks it when it comes back). Each calling
device has its own budget, `ai.peer_swap_bytes`, charged as the chunks arrive (each state counts at
least `MIN_CHARGE`, so that many tiny ones cannot grow the table without bound); past it the call is
RESOURCE_EXHAUSTED naming the setting. Handles are unguessable and scoped to the device that kept the
state: another device's handle is NOT_FOUND, like one never issued. A state neither asked back nor
dropped within `ai.peer_swap_ttl_s` is forgotten (its device was lost or restarted).
"""

from __future__ import annotations

import collections
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from datamgr.errors import NotFound, ResourceExhausted

MIN_CHARGE = 4096


@dataclass(slots=True)
class _State:
    chunks: list[bytes]
    charged: int
    at: float


class Intake:
    """One state arriving: `add` each chunk (charged at once), then `commit` for its handle."""

    def __init__(self, kept: KeptKv, device: str, name: str) -> None:
        self._kept, self._device, self._name = kept, device, name
        self.chunks: list[bytes] = []
        self.charged = 0
        self.handle = ""

    def add(self, data: bytes) -> None:
        n = len(data) + (MIN_CHARGE if not self.charged else 0)
        self._kept._charge(self._device, self._name, n)
        self.charged += n
        self.chunks.append(data)

    def commit(self) -> str:
        self.handle = self._kept._store(self._device, _State(self.chunks, self.charged, self._kept.clock()))
        return self.handle


class KeptKv:
    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes, self.ttl_s, self.clock = max_bytes, ttl_s, clock
        self._states: dict[str, dict[str, _State]] = {}  # device → handle → state
        self._used: collections.Counter[str] = collections.Counter()  # device → bytes charged

    def used(self, device: str) -> int:
        return self._used[device]

    def free(self, device: str) -> int:
        """Bytes the device may still have kept here."""
        return max(0, self.max_bytes - self._used[device])

    def count(self, device: str = "") -> int:
        """States kept (for `device`, or for all)."""
        if device:
            return len(self._states.get(device, ()))
        return sum(len(s) for s in self._states.values())

    @contextlib.contextmanager
    def intake(self, device: str, name: str) -> Iterator[Intake]:
        """A state arriving from `device` (`name` for messages): what it charged is released unless
        it was committed."""
        self.sweep()
        intake = Intake(self, device, name)
        try:
            yield intake
        finally:
            if not intake.handle:
                self._release(device, intake.charged)

    def take(self, device: str, handle: str) -> list[bytes]:
        """The state's chunks, forgotten here."""
        self.sweep()
        state = self._pop(device, handle)
        return state.chunks

    def drop(self, device: str, handle: str) -> None:
        self.sweep()
        self._pop(device, handle)

    def sweep(self) -> int:
        """Forgets the states older than the TTL; returns how many."""
        horizon = self.clock() - self.ttl_s
        gone = 0
        for device, states in list(self._states.items()):
            for handle, state in list(states.items()):
                if state.at < horizon:
                    self._pop(device, handle)
                    gone += 1
        return gone

    # ---- internals ----

    def _charge(self, device: str, name: str, n: int) -> None:
        if self._used[device] + n > self.max_bytes:
            raise ResourceExhausted(
                f"device {name} keeps {self._used[device]} bytes of KV state here; {n} more would pass "
                f"ai.peer_swap_bytes ({self.max_bytes})"
            )
        self._used[device] += n

    def _release(self, device: str, n: int) -> None:
        self._used[device] -= n
        if self._used[device] <= 0:
            del self._used[device]

    def _store(self, device: str, state: _State) -> str:
        handle = secrets.token_urlsafe(18)
        self._states.setdefault(device, {})[handle] = state
        return handle

    def _pop(self, device: str, handle: str) -> _State:
        states = self._states.get(device, {})
        state = states.pop(handle, None)
        if state is None:
            raise NotFound(
                "no KV state kept here under that handle for this device (returned, dropped or expired)"
            )
        if not states:
            del self._states[device]
        self._release(device, state.charged)
        return state

"""Swapping preempted sequences' KV to a remote store (Infinite-LLM: KV held beyond one machine's memory).

When the swap budget is full, the scheduler swaps a preempted sequence out to a `KvKeeper` (a paired
device's memory, `datamgr.ai_bridge`) instead of dropping it for recompute. The engine runs on the
inference thread and the keeper on the event loop, so the engine only queues *moves* here (`Put` a
saved state, `Get` one back, `Drop` one no longer wanted), which the AsyncEngine makes on the loop and
answers through its inbox (LLMEngine.kept, LLMEngine.returned). Each put and get carries a ticket: an
answer whose ticket is no longer the sequence's (it ended, or was swapped in from its local bytes while
they were still shipping) is not wanted, and a state the keeper took for it is dropped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol

from aicap.engine.sequence import Sequence
from aicap.kv_state import KvState


class KvKeeper(Protocol):
    """Keeps KV states away from this device; every call runs on the event loop and may fail with
    any error (the sequence is then recomputed). Handles are the keeper's own."""

    async def keep_kv(self, state: KvState, app: str) -> Any:
        """Stores a state (of a sequence of `app`) and returns a handle to it."""
        ...

    async def return_kv(self, handle: Any) -> KvState:
        """The state stored under `handle`, which the keeper then forgets."""
        ...

    async def drop_kv(self, handle: Any) -> None:
        """Forgets the state stored under `handle`."""
        ...


@dataclass(frozen=True, slots=True)
class Put:
    ticket: int
    state: KvState
    app: str


@dataclass(frozen=True, slots=True)
class Get:
    ticket: int
    handle: Any


@dataclass(frozen=True, slots=True)
class Drop:
    handle: Any


Move = Put | Get | Drop


class RemoteSwap:
    """The engine's side: moves to make, the sequence each ticket is for, the handles of the states
    kept away, and counters."""

    def __init__(self) -> None:
        self.moves: list[Move] = []
        self._tickets = itertools.count(1)
        self._pending: dict[int, Sequence] = {}  # ticket → the sequence its put or get is for
        self._ticket: dict[int, int] = {}  # sequence id → its current ticket
        self._handles: dict[int, Any] = {}  # sequence id → where the keeper holds its state
        self.failures = 0  # puts and gets that failed: their sequences were recomputed
        self.bytes_sent = 0
        self.bytes_received = 0

    def put(self, seq: Sequence, state: KvState) -> None:
        self.moves.append(Put(self._issue(seq), state, seq.app))

    def get(self, seq: Sequence) -> None:
        """Asks for a sequence's state back (which frees it at the keeper)."""
        self.moves.append(Get(self._issue(seq), self._handles.pop(seq.seq_id)))

    def away(self, seq: Sequence, handle: Any) -> None:
        self._handles[seq.seq_id] = handle

    def settle(self, ticket: int) -> Sequence | None:
        """The sequence a put or get answered was for, if that answer is still wanted."""
        seq = self._pending.pop(ticket, None)
        if seq is None or self._ticket.get(seq.seq_id) != ticket:
            return None
        del self._ticket[seq.seq_id]
        return seq

    def forget(self, seq: Sequence) -> None:
        """The sequence ended or swapped in from its local state: an answer in flight is not wanted,
        and a state the keeper holds is dropped."""
        self._ticket.pop(seq.seq_id, None)
        handle = self._handles.pop(seq.seq_id, None)
        if handle is not None:
            self.moves.append(Drop(handle))

    def take_moves(self) -> list[Move]:
        moves, self.moves = self.moves, []
        return moves

    def _issue(self, seq: Sequence) -> int:
        ticket = next(self._tickets)
        self._pending[ticket] = seq
        self._ticket[seq.seq_id] = ticket
        return ticket

"""Continuous batching: which sequences compute how many tokens in the next llama_decode.

Each step, running sequences go first (decodes and unfinished chunked prefills, oldest first), then
waiting ones are admitted while the token budget, the running limit and free KV blocks allow —
swapped-out sequences before new ones, and among new ones the app with the fewest running sequences
first, so one app's flood cannot starve another. When a running sequence needs a block and none is
free, the most recently admitted sequence is preempted: swapped out while the swap budget holds its
tokens, else dropped for recompute. Output tokens are never taken back.

With a remote store (remote_swap.py: a paired device's memory, Infinite-LLM), a sequence that would be
recomputed because the swap budget is full is swapped out to the store instead, if its request lets
its KV leave the device (`may_leave`). Its saved state ships in the background (until the store has it,
it stays here and may be swapped in from here); when it would be swapped in, the scheduler asks for it
back (`Batch.fetch`, one at a time, once its blocks are free) and it waits, not scheduled, until it
arrives (`came_back`), or is recomputed if the store failed (`lost`). Meanwhile no new sequence is
admitted ahead of it.

A step that computes a prompt (a chunk of a running one, or one admitted) admits another only while
its prompt tokens stay within `prefill_pack_tokens`: a burst of prompts is computed a few hundred
tokens a step, so the first ones' first tokens do not wait for the whole burst's. A waiting prompt
that would not fit starts the next step (it is still the oldest then); a later one that fits goes
along now. Running decodes ride along in every step.

Among waiting sequences, one whose prompt's next uncached block is being computed by a running
sequence (a burst of requests under one system prompt) is passed over until that block is cached,
so it computes only what is its own (BlockManager.pending_block). The blocks waiting prompts will hit
are kept by the prefix cache's budget (`wanted`, counted as sequences come and go).

A sequence with an imported KV state (kv_state.py) skips the prefix cache when admitted: the state
fills its first cells, and it computes only the rest. A prefill-only sequence ends when its prompt is
computed, sampling nothing.

The engine must refuse a request whose prompt plus max_tokens needs more blocks than exist: alone
it could never finish, and it would be preempted forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aicap.config import EngineConfig
from aicap.engine.block_manager import BlockManager
from aicap.engine.sequence import Away, Sequence, Status

if TYPE_CHECKING:
    from aicap.kv_state import KvState


@dataclass(slots=True)
class Batch:
    """One step: (sequence, tokens to compute) pairs, and the state moves the runner must do first,
    in this order: save and drop `swap_out`, drop `recompute`, restore `swap_in` and the imported
    states of `restore`, then decode. Of `swap_out`, those in `ship` go on to the remote store; the
    states of `fetch` are to be asked back from it."""

    scheduled: list[tuple[Sequence, int]] = field(default_factory=list)
    swap_out: list[Sequence] = field(default_factory=list)
    swap_in: list[Sequence] = field(default_factory=list)
    recompute: list[Sequence] = field(default_factory=list)  # their KV must be dropped
    restore: list[tuple[Sequence, KvState]] = field(default_factory=list)  # admitted with an imported state
    ship: list[Sequence] = field(default_factory=list)  # swapped out to the remote store
    fetch: list[Sequence] = field(default_factory=list)  # their state is to come back from the store

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.scheduled)


class Scheduler:
    def __init__(self, config: EngineConfig, blocks: BlockManager) -> None:
        """Uses config's max_batch_tokens, max_running and swap_budget_tokens."""
        self.config = config
        self.blocks = blocks
        self.waiting: list[Sequence] = []  # kept in arrival order
        self.running: list[Sequence] = []  # in admission order
        self.swapped: list[Sequence] = []
        self.swapped_tokens = 0  # of swapped sequences whose state is here (not those shipping)
        self.preemptions = {"swap": 0, "recompute": 0, "remote": 0}
        self.remote = False  # a remote store takes what the swap budget cannot (the engine sets it)
        # speculation: the share of a step of `tokens` tokens that one more token costs (the engine
        # sets it from its measured speeds; 1: drafts never pay)
        self.draft_cost: Callable[[int], float] = lambda tokens: 1.0
        # block hash -> waiting sequences whose prompt has it (the cache budget keeps those blocks)
        self.wanted: dict[int, int] = {}
        blocks.wanted = lambda: self.wanted

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)
        self._want(seq)

    def _want(self, seq: Sequence) -> None:
        """Counts a waiting sequence's prompt blocks as wanted (one with an imported state or without
        a prefix cache hits none)."""
        if not self.blocks.caching or seq.imported is not None:
            return
        if not seq.block_hashes:
            seq.block_hashes = self.blocks.prompt_hashes(
                seq.prompt, seq.salt, seq.shared_salt, seq.shared_tokens
            )
        for h in seq.block_hashes:
            self.wanted[h] = self.wanted.get(h, 0) + 1

    def _unwait(self, seq: Sequence) -> None:
        """Takes a sequence out of the waiting queue, and its blocks out of the wanted ones."""
        self.waiting.remove(seq)
        if not seq.block_hashes:
            return
        for h in seq.block_hashes:
            n = self.wanted[h] - 1
            if n:
                self.wanted[h] = n
            else:
                del self.wanted[h]

    def abort(self, seq: Sequence) -> None:
        """Stops a sequence wherever it is and frees its blocks (a cancelled call)."""
        if seq in self.waiting:
            self._unwait(seq)
        for queue in (self.running, self.swapped):
            if seq in queue:
                queue.remove(seq)
        if seq.status == Status.RUNNING:
            self.blocks.free(seq.seq_id)
        if seq.status == Status.SWAPPED and seq.away is None:
            self.swapped_tokens -= seq.num_computed
        seq.status = Status.FINISHED

    def has_work(self) -> bool:
        """A step would do something: not when all there is waits for a state to come back."""
        if self.running or any(s.away in (None, Away.SHIPPING) for s in self.swapped):
            return True
        if any(s.away is Away.FETCHING for s in self.swapped):
            return False  # the others wait behind it (one fetch at a time, new ones after)
        return bool(self.swapped or self.waiting)

    def came_back(self, seq: Sequence) -> None:
        """A fetched state is here again: the sequence swaps in like one swapped out locally."""
        assert seq.status == Status.SWAPPED and seq.away is Away.FETCHING
        seq.away = None
        self.swapped_tokens += seq.num_computed

    def lost(self, seq: Sequence) -> None:
        """The remote store failed a swapped-out sequence's state (could not keep it, or give it
        back): it is recomputed from its first token, like any preempted one."""
        assert seq.status == Status.SWAPPED and seq.away is not None
        self.swapped.remove(seq)
        seq.away = None
        self._requeue(seq)

    # ---- one step ----

    def schedule(self) -> Batch:
        batch = Batch()
        budget = self.config.max_batch_tokens
        for seq in self.running:  # a step that found no KV slot never got to postprocess
            seq.draft = []
        for seq in list(self.running):
            if seq.status != Status.RUNNING or budget == 0:
                continue
            if not self._reserve(seq, batch):
                continue  # it was preempted itself
            n = min(seq.num_uncomputed, budget)
            batch.scheduled.append((seq, n))
            budget -= n
        # sequences preempted during this pass must not be scheduled
        batch.scheduled = [(s, n) for s, n in batch.scheduled if s.status == Status.RUNNING]
        budget = self.config.max_batch_tokens - batch.num_tokens
        prompt = sum(n for _, n in batch.scheduled if n > 1)  # prompt tokens the step computes
        while budget > 0 and len(self.running) < self.config.max_running and not batch.swap_out:
            # a step that computes a prompt takes others only within prefill_pack_tokens
            nxt = self._next_admission(batch, self.config.prefill_pack_tokens - prompt if prompt else None)
            if nxt is None:
                break
            if not self._admit(nxt, batch):
                break
            n = min(nxt.num_uncomputed, budget)
            batch.scheduled.append((nxt, n))
            budget -= n
            prompt += n if n > 1 else 0
        if self.config.spec_draft_max:
            self._draft(batch)
        return batch

    def _draft(self, batch: Batch) -> None:
        """Drafts for the step's decoding sequences that may speculate (speculation.py), oldest first,
        each as long as its acceptance rate pays for at the step's size, while the step stays within
        spec_max_batch_tokens; each draft gets KV blocks of its own (none free: no draft, never a
        preemption)."""
        room = min(self.config.spec_max_batch_tokens, self.config.max_batch_tokens) - batch.num_tokens
        if room <= 0:
            return
        cost = self.draft_cost(batch.num_tokens)
        for i, (seq, n) in enumerate(batch.scheduled):
            if room <= 0:
                break
            if seq.drafter is None or n != 1 or seq.num_uncomputed != 1:
                continue
            left = seq.max_tokens - len(seq.output) - 1  # tokens it may still sample after this one
            draft = seq.drafter.propose(seq.tokens, cost, min(self.config.spec_draft_max, room, left))
            if draft and self.blocks.reserve(seq.seq_id, seq.num_tokens + len(draft)):
                seq.draft = draft
                batch.scheduled[i] = (seq, 1 + len(draft))
                room -= len(draft)

    def postprocess(self, batch: Batch, sampled: dict[int, list[int]]) -> list[Sequence]:
        """Records a step: computed tokens, the tokens sampled for each sequence that reached its end
        (one, or with a draft, the accepted drafted tokens and the one after them: the accepted ones'
        KV is computed; a rejected rest's blocks go back). Clears the drafts.

        Returns the sequences that finished."""
        finished = []
        for seq, n in batch.scheduled:
            drafted, seq.draft = len(seq.draft), []
            seq.num_computed += n - drafted
            if seq.num_computed < seq.num_tokens:
                self.blocks.cache_computed(seq.seq_id, seq.num_computed)
                continue  # a chunk of a longer prefill: no token yet
            if not seq.prefill_only:
                for i, tok in enumerate(sampled[seq.seq_id]):
                    seq.num_computed += i > 0  # the drafted token before it was right: its KV stays
                    seq.output.append(tok)
                    if seq.done:
                        break
                if drafted:
                    self.blocks.trim(seq.seq_id, seq.num_tokens)
            self.blocks.cache_computed(seq.seq_id, seq.num_computed)
            if seq.done or seq.prefill_only:
                self.running.remove(seq)
                self.blocks.free(seq.seq_id)
                seq.status = Status.FINISHED
                finished.append(seq)
        return finished

    # ---- internals ----

    def _reserve(self, seq: Sequence, batch: Batch) -> bool:
        """KV slots for the tokens the sequence got since its last step, preempting if needed."""
        known = self.blocks.num_tokens(seq.seq_id)
        new = seq.span(known, seq.num_tokens - known)
        while not self.blocks.append_slots(seq.seq_id, new):
            victim = self.running[-1]
            self._preempt(victim, batch)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence, batch: Batch) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.seq_id)
        if self.swapped_tokens + seq.num_computed <= self.config.swap_budget_tokens:
            seq.status = Status.SWAPPED
            self.swapped.append(seq)
            self.swapped_tokens += seq.num_computed
            batch.swap_out.append(seq)
            self.preemptions["swap"] += 1
        elif self.remote and seq.may_leave and seq.num_computed:
            seq.status = Status.SWAPPED
            seq.away = Away.SHIPPING
            self.swapped.append(seq)
            batch.swap_out.append(seq)
            batch.ship.append(seq)
            self.preemptions["remote"] += 1
        else:
            self._requeue(seq)
            batch.recompute.append(seq)
            self.preemptions["recompute"] += 1

    def _requeue(self, seq: Sequence) -> None:
        """Back to waiting, to be computed again from its first token."""
        seq.status = Status.WAITING
        seq.num_computed = 0
        self.waiting.append(seq)
        self.waiting.sort(key=lambda s: s.arrival)
        self._want(seq)

    def preempt_newest(self) -> Sequence | None:
        """Drops the most recently admitted sequence for recompute (the runner found no KV slot
        although the blocks said there was room); the engine drops its KV."""
        if not self.running:
            return None
        seq = self.running[-1]
        self.running.remove(seq)
        self.blocks.free(seq.seq_id)
        self._requeue(seq)
        self.preemptions["recompute"] += 1
        return seq

    def _next_admission(self, batch: Batch, room: int | None = None) -> Sequence | None:
        """Swapped-out sequences first, in the order they left: the first whose state is here; the
        first whose state is away is asked back once its blocks are free (one fetch at a time). Then
        waiting ones (see below). With `room`, only one that computes at most that many tokens: a
        waiting prompt that does not fit starts the next step, and one behind it that does goes now
        (the burst of a chat's next turns: a history a mismatch left uncached would hold up every
        short turn behind it for a step)."""
        fetching = any(s.away is Away.FETCHING for s in self.swapped)
        for seq in self.swapped:
            if seq.away is None or seq.away is Away.SHIPPING:
                return seq if room is None or seq.num_uncomputed <= room else None
            if seq.away is Away.AWAY and not fetching:
                fetching = True
                if self.blocks.num_free_blocks * self.blocks.block_size >= seq.num_tokens:
                    seq.away = Away.FETCHING
                    batch.fetch.append(seq)
        if self.swapped:
            return None
        ready = [s for s in self.waiting if s.ready]
        if not ready:
            return None
        running_per_app: dict[str, int] = {}
        for s in self.running:
            running_per_app[s.app] = running_per_app.get(s.app, 0) + 1
        # the oldest waiting sequence of the app with the fewest running ones, that would not compute
        # a block a running sequence is computing now
        ready.sort(key=lambda s: (running_per_app.get(s.app, 0), s.arrival))
        computing = self.blocks.computing()
        for seq in ready:
            if self.blocks.pending_block(seq.block_hashes, len(seq.prompt), computing):
                continue
            if room is None or self._to_compute(seq) <= room:
                return seq
        return None

    def _to_compute(self, seq: Sequence) -> int:
        """The tokens a sequence about to be admitted would compute (its cached prefix, its
        imported state or its swapped-out state's tokens not)."""
        if seq.status == Status.SWAPPED:
            return seq.num_uncomputed
        if seq.imported is not None:
            return seq.num_tokens - len(seq.imported.tokens)
        return seq.num_tokens - self.blocks.cached_prefix(seq.block_hashes, len(seq.prompt))

    def _admit(self, seq: Sequence, batch: Batch) -> bool:
        """Blocks for every token of the sequence; a swapped-in one takes no prefix hits, since its
        saved state fills its cells (its num_computed is kept), nor does one with an imported state,
        which fills its first cells."""
        swapped = seq.status == Status.SWAPPED
        use_cache = not swapped and seq.imported is None
        alloc = self.blocks.allocate(
            seq.seq_id, seq.tokens, seq.salt, use_cache, seq.shared_salt, seq.shared_tokens
        )
        if alloc is None:
            return False
        if swapped:
            self.swapped.remove(seq)
            if seq.away is None:
                self.swapped_tokens -= seq.num_computed
            seq.away = None  # one still shipping comes back from here (the store's copy is dropped)
            batch.swap_in.append(seq)
        elif seq.imported is not None:  # once: recomputed after a preemption, it computes every token
            self._unwait(seq)
            seq.num_computed = len(seq.imported.tokens)
            batch.restore.append((seq, seq.imported))
            seq.imported = None
        else:
            self._unwait(seq)
            seq.num_computed = alloc.num_cached_tokens
            if seq.cached_tokens is None:
                seq.cached_tokens = alloc.num_cached_tokens
        seq.status = Status.RUNNING
        self.running.append(seq)
        return True

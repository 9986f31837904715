"""Which llama.cpp seq ids hold which KV cells: running slots, prefix-cache holders, swapped state.

The first `n_slots` seq ids are slots of running sequences; the rest are *holders* that keep the cells
of cached prefix blocks alive after the sequence that computed them is gone (unified KV: a cell
carries a set of seq ids and lives while any is set). When the block manager publishes a full block,
its cells are tagged with a holder that has no cell at that block's positions yet (so a holder's
cells never collide); a new sequence that hits the block gets the holder's cells with
llama_memory_seq_cp (no copy); when the block manager evicts the block, its cells are removed from
the holder. A block that finds no holder with room is simply not cached. Swapped-out sequences keep
their KV bytes here, in host memory, until they are swapped in or end (or a remote store has them:
`drop_saved`, and `keep_saved` when they come back); an imported state (kv_state.py) is restored into a
new sequence's slot the same way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aicap.engine.block_manager import BlockManager
from aicap.engine.scheduler import Batch
from aicap.engine.sequence import Sequence

if TYPE_CHECKING:
    from aicap.engine.model_runner import ModelRunner

log = logging.getLogger("aicap.engine")

# (slot, tokens, position of the first, how many of the last tokens need logits) for one llama_decode
Work = tuple[int, list[int], int, int]


class Cells:
    def __init__(self, runner: ModelRunner, blocks: BlockManager, n_slots: int) -> None:
        self.runner = runner
        self.blocks = blocks
        self.holders = list(range(n_slots, runner.config.n_seq_max))
        self.holder_of: dict[int, tuple[int, int]] = {}  # cached block → (holder, index in chain)
        self._holder_rows: dict[int, set[int]] = {h: set() for h in self.holders}  # indices held
        self._free = list(range(n_slots))[::-1]
        self._slots: dict[int, int] = {}  # sequence id → its slot
        self._swapped: dict[int, bytes] = {}  # sequence id → its saved KV state

    def slot(self, seq_id: int) -> int:
        """The slot of a sequence in the batch just prepared."""
        return self._slots[seq_id]

    def prepare(self, batch: Batch) -> list[Work]:
        """Moves KV state as the batch says (evicted blocks, swap out, recompute, swap in, cached
        prefixes of new sequences) and returns the decode work: (slot, tokens, first position, logits
        wanted); a sequence with a draft computes its drafted tokens after its own, each with logits."""
        self.apply_evictions()
        for seq in batch.swap_out:
            self._swapped[seq.seq_id] = self.runner.save(self._slots[seq.seq_id])
            self.release(seq.seq_id)
        for seq in batch.recompute:
            self.release(seq.seq_id)
        for seq in batch.swap_in:
            self._restore(seq, self._swapped.pop(seq.seq_id))
        for seq, state in batch.restore:
            self._restore(seq, state.data)
        work = []
        for seq, n in batch.scheduled:
            if seq.seq_id not in self._slots and seq.num_computed:
                self._copy_cached_prefix(seq)
            start, k = seq.num_computed, len(seq.draft)
            tokens = seq.span(start, n - k) + seq.draft if k else seq.span(start, n)
            work.append((self._take_slot(seq.seq_id), tokens, start, k + 1))
        return work

    def keep_cached(self) -> None:
        """Tags the cells of newly cached blocks with a holder, or uncaches them if none has room."""
        bs = self.blocks.block_size
        for b, seq_id, i in self.blocks.newly_cached:
            holder = next((h for h in self.holders if i not in self._holder_rows[h]), None)
            if holder is None or seq_id not in self._slots:
                self.blocks.uncache(b)
                continue
            self.runner.share_range(self._slots[seq_id], holder, i * bs, (i + 1) * bs)
            self._holder_rows[holder].add(i)
            self.holder_of[b] = (holder, i)
        self.blocks.newly_cached.clear()

    def apply_evictions(self) -> None:
        """Frees the cells of blocks the block manager evicted from the prefix cache."""
        bs = self.blocks.block_size
        for b in self.blocks.evicted:
            held = self.holder_of.pop(b, None)
            if held is not None:
                holder, i = held
                self.runner.drop_range(holder, i * bs, (i + 1) * bs)
                self._holder_rows[holder].discard(i)
        self.blocks.evicted.clear()

    def save(self, seq_id: int) -> bytes:
        """A sequence's KV state: saved from its slot, or the bytes it was swapped out with."""
        swapped = self._swapped.get(seq_id)
        return swapped if swapped is not None else self.runner.save(self._slots[seq_id])

    def drop_saved(self, seq_id: int) -> int:
        """Forgets a swapped-out sequence's saved state (a remote store keeps it now, or it is lost);
        returns its size in bytes."""
        data = self._swapped.pop(seq_id, None)
        return len(data) if data is not None else 0

    def keep_saved(self, seq_id: int, data: bytes) -> None:
        """A swapped-out sequence's state, back from a remote store, to be swapped in."""
        self._swapped[seq_id] = data

    def release(self, seq_id: int) -> None:
        """Drops a sequence's cells and frees its slot (cells a holder shares stay)."""
        slot = self._slots.pop(seq_id, None)
        if slot is not None:
            self.runner.drop(slot)
            self._free.append(slot)

    def forget(self, seq_id: int) -> None:
        """A sequence ended: its cells, slot and any swapped state go."""
        self.release(seq_id)
        self._swapped.pop(seq_id, None)

    # ---- internals ----

    def _take_slot(self, seq_id: int) -> int:
        slot = self._slots.get(seq_id)
        if slot is None:
            slot = self._slots[seq_id] = self._free.pop()
        return slot

    def _restore(self, seq: Sequence, data: bytes) -> None:
        """Restores a swapped-out or imported state into an admitted sequence's slot. If llama.cpp
        refuses it (too few free cells, though the blocks said there were; a state from another
        llama.cpp build), the sequence computes those tokens instead, from its first: its blocks cover
        them, and this step's tokens still fit (it samples again once every token is computed; a draft
        it had becomes that many more of its own tokens).
        Free cells need not be contiguous: a 60-token state restored into runs of 16 (measured)."""
        try:
            self.runner.restore(self._take_slot(seq.seq_id), data)
        except RuntimeError:
            log.warning("a KV state of %d tokens did not fit; computing them", seq.num_computed)
            seq.num_computed = 0
            seq.draft = []  # the step's tokens are then the first of its own instead

    def _copy_cached_prefix(self, seq: Sequence) -> None:
        """Gives a newly admitted sequence the cells of its cached prefix blocks."""
        bs = self.blocks.block_size
        slot = self._take_slot(seq.seq_id)
        for i, b in enumerate(self.blocks.block_table(seq.seq_id)[: seq.num_computed // bs]):
            holder, index = self.holder_of[b]
            assert index == i
            self.runner.share_range(holder, slot, i * bs, (i + 1) * bs)

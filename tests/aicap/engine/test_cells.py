"""KV cells without an engine: slots, prefix-cache holders and swapped state against the fake runner
(fake_runner.py models llama.cpp's unified cells and checks each decode sees exactly its positions)."""

from __future__ import annotations

from aicap.engine.block_manager import BlockManager
from aicap.engine.cells import Cells, Work
from aicap.engine.scheduler import Batch
from aicap.engine.sequence import Sequence
from tests.aicap.engine.fake_runner import FakeRunner


def make(n_seq_max: int = 4, n_slots: int = 2) -> tuple[FakeRunner, BlockManager, Cells]:
    runner = FakeRunner(n_ctx=64, n_seq_max=n_seq_max)
    blocks = BlockManager(16, 4)
    return runner, blocks, Cells(runner, blocks, n_slots)  # type: ignore[arg-type]


def run(runner: FakeRunner, blocks: BlockManager, cells: Cells, seq: Sequence) -> list[Work]:
    """Admits a sequence, computes what the prefix cache lacks in one decode, publishes its blocks."""
    alloc = blocks.allocate(seq.seq_id, seq.tokens, seq.salt)
    assert alloc is not None
    seq.num_computed = alloc.num_cached_tokens
    n = seq.num_uncomputed
    work = cells.prepare(Batch(scheduled=[(seq, n)]))
    runner.decode(work)
    seq.num_computed += n
    blocks.cache_computed(seq.seq_id, seq.num_computed)
    cells.keep_cached()
    return work


def end(blocks: BlockManager, cells: Cells, seq: Sequence) -> None:
    cells.forget(seq.seq_id)
    blocks.free(seq.seq_id)


def test_a_prefix_hit_takes_the_holders_cells_and_computes_only_the_rest() -> None:
    runner, blocks, cells = make()
    assert cells.holders == [2, 3]  # the seq ids past the running slots
    a = Sequence(1, "", list(range(1, 9)), max_tokens=1)  # two full blocks
    assert run(runner, blocks, cells, a) == [(0, list(range(1, 9)), 0, 1)]
    assert sorted(cells.holder_of.values()) == [(2, 0), (2, 1)]
    assert runner._visible(2) == list(range(1, 9))
    b = Sequence(2, "", [*range(1, 9), 9], max_tokens=1)
    assert run(runner, blocks, cells, b) == [(1, [9], 8, 1)]  # its own slot; one token computed
    assert runner._visible(1) == list(range(1, 10))
    end(blocks, cells, a)
    end(blocks, cells, b)
    assert runner._visible(2) == list(range(1, 9))  # the holder keeps the cached cells


def test_a_block_needs_a_holder_free_at_its_index_or_is_not_cached() -> None:
    runner, blocks, cells = make()
    for sid in (1, 2, 3):  # three different first blocks, for two holders
        s = Sequence(sid, "", [sid] * 4 + [0], max_tokens=1)
        run(runner, blocks, cells, s)
        end(blocks, cells, s)
    assert sorted(cells.holder_of.values()) == [(2, 0), (3, 0)]
    hits = [blocks.allocate(10 + sid, [sid] * 4 + [0, 0]) for sid in (1, 2, 3)]
    assert [h.num_cached_tokens if h else None for h in hits] == [4, 4, 0]
    for sid in (1, 2, 3):
        blocks.free(10 + sid)
    assert blocks.evict_unused() == 2
    cells.apply_evictions()
    assert cells.holder_of == {} and runner.cells == {}  # the evicted blocks' cells are freed


def test_swap_out_keeps_the_state_and_swap_in_restores_it_in_any_slot() -> None:
    runner, blocks, cells = make(n_seq_max=2, n_slots=2)
    assert cells.holders == []
    a = Sequence(1, "", [5, 6, 7], max_tokens=4)
    run(runner, blocks, cells, a)
    blocks.free(1)
    assert cells.prepare(Batch(swap_out=[a])) == []
    assert runner.cells == {}  # its cells are gone; its state is kept
    b = Sequence(2, "", [8, 9], max_tokens=1)
    assert run(runner, blocks, cells, b)[0][0] == 0  # the slot a had
    cells.prepare(Batch(swap_in=[a]))
    assert cells.slot(1) == 1 and runner._visible(1) == [5, 6, 7]
    cells.forget(1)
    assert all(1 not in seqs for _, _, seqs in runner.cells.values())

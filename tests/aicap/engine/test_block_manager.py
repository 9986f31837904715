"""The KV block manager without a model: exact block ids, prefix hits, eviction order, invariants."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from aicap.engine.block_manager import BlockManager


def test_allocate_takes_blocks_in_order_and_free_returns_them() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    a = bm.allocate(1, list(range(6)))
    assert a is not None and a.block_table == (0, 1) and a.num_cached_tokens == 0
    assert bm.num_free_blocks == 2
    bm.free(1)
    assert bm.num_free_blocks == 4
    bm.check_invariants()


def test_no_room_is_none_and_changes_nothing() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    assert bm.allocate(1, list(range(8))) is not None
    assert bm.allocate(2, [1]) is None
    assert not bm.append_slots(1, [9])
    assert bm.num_tokens(1) == 8 and bm.block_table(1) == (0, 1)
    bm.check_invariants()


def test_prefix_hit_reuses_computed_full_blocks_but_recomputes_the_last_token() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    prompt = list(range(10))  # blocks [0..3] [4..7] [8, 9]
    bm.allocate(1, prompt)
    assert bm.allocate(9, prompt) is not None  # not computed yet: no hit
    bm.free(9)
    bm.cache_computed(1, 10)
    again = bm.allocate(2, prompt)
    assert again is not None and again.num_cached_tokens == 8
    assert again.block_table[:2] == bm.block_table(1)[:2]
    # a prompt that is exactly two cached blocks recomputes its last block (the last token needs logits)
    exact = bm.allocate(3, prompt[:8])
    assert exact is not None and exact.num_cached_tokens == 4
    assert bm.prefix_hits == 12 and bm.prefix_queries == 10 + 10 + 10 + 8
    bm.check_invariants()


def test_freed_cached_blocks_are_revived_and_evicted_lru() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    bm.allocate(1, [1, 2, 3, 4, 5])  # blocks 0, 1, 2
    bm.cache_computed(1, 5)
    bm.free(1)  # 2 (unhashed) goes first in line; then 1, 0 in reverse so the tail block is evicted first
    hit = bm.allocate(2, [1, 2, 3, 4, 9])
    assert hit is not None and hit.block_table == (0, 1, 2) and hit.num_cached_tokens == 4
    bm.free(2)
    # a different prompt needs 3 blocks: the free unhashed blocks go first, then the LRU cached ones
    other = bm.allocate(3, [7, 7, 7, 7, 7])
    assert other is not None and other.num_cached_tokens == 0
    assert other.block_table == (2, 3, 1)
    bm.free(3)
    survivor = bm.allocate(4, [1, 2, 3])
    assert survivor is not None and survivor.num_cached_tokens == 2  # block 0 = [1, 2] was not evicted
    assert survivor.block_table[0] == 0
    bm.check_invariants()


def test_unused_cached_blocks_beyond_the_cap_are_evicted_lru() -> None:
    bm = BlockManager(num_blocks=8, block_size=2, max_cached_blocks=2)
    bm.allocate(1, [1, 2, 3, 4, 5])  # blocks 0, 1 full, 2 partial
    bm.cache_computed(1, 5)
    bm.allocate(2, [6, 6, 7, 7, 8])  # blocks 3, 4 full, 5 partial
    bm.cache_computed(2, 5)
    bm.free(1)  # two cached blocks free: within the cap
    assert bm.evicted == []
    bm.free(2)  # four: the least recently freed, request 1's blocks (tail first), go
    assert bm.evicted == [1, 0]
    cold = bm.allocate(3, [1, 2, 3])  # [1, 2] is no longer cached; evicted blocks are reused first
    assert cold is not None and cold.num_cached_tokens == 0 and cold.block_table == (0, 1)
    hit = bm.allocate(4, [6, 6, 7, 7, 9])
    assert hit is not None and hit.num_cached_tokens == 4 and hit.block_table[:2] == (3, 4)
    bm.check_invariants()


def test_a_cap_of_zero_keeps_nothing_cached_once_unused() -> None:
    bm = BlockManager(num_blocks=4, block_size=2, max_cached_blocks=0)
    bm.allocate(1, [1, 2, 3])
    bm.cache_computed(1, 3)
    shared = bm.allocate(2, [1, 2, 5])  # while request 1 runs, its block is shared
    assert shared is not None and shared.num_cached_tokens == 2
    bm.free(1)
    bm.free(2)
    assert bm.evicted == [0]
    cold = bm.allocate(3, [1, 2, 5])
    assert cold is not None and cold.num_cached_tokens == 0
    bm.check_invariants()


def test_salt_isolates_prefixes() -> None:
    bm = BlockManager(num_blocks=8, block_size=2)
    bm.allocate(1, [1, 2, 3, 4, 5], salt="com.a")
    bm.cache_computed(1, 5)
    other_app = bm.allocate(2, [1, 2, 3, 4, 5], salt="com.b")
    same_app = bm.allocate(3, [1, 2, 3, 4, 5], salt="com.a")
    assert other_app is not None and other_app.num_cached_tokens == 0
    assert same_app is not None and same_app.num_cached_tokens == 4


def test_fork_shares_full_blocks_and_copies_the_partial_one() -> None:
    bm = BlockManager(num_blocks=6, block_size=4)
    bm.allocate(1, list(range(6)))
    copy = bm.fork(1, 2)
    assert copy == (1, 2)
    assert bm.block_table(2) == (0, 2) and bm.blocks[0].ref_count == 2
    bm.allocate(3, list(range(8)))
    assert bm.fork(3, 4) is True  # ends on a block boundary: nothing to copy
    bm.check_invariants()
    for s in (1, 2, 3, 4):
        bm.free(s)
    assert bm.num_free_blocks == 6
    bm.check_invariants()


class BlockManagerMachine(RuleBasedStateMachine):
    """Random mixes of allocate, append, cache, fork and free keep every invariant and leak nothing."""

    seqs = Bundle("seqs")
    max_cached_blocks: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(num_blocks=12, block_size=3, max_cached_blocks=self.max_cached_blocks)
        self.next_id = 0

    @rule(
        target=seqs,
        prompt=st.lists(st.integers(0, 3), min_size=1, max_size=12),
        salt=st.sampled_from(["", "x"]),
    )
    def allocate(self, prompt: list[int], salt: str) -> int:
        self.next_id += 1
        before = self.bm.num_free_blocks
        if self.bm.allocate(self.next_id, prompt, salt) is None:
            assert self.bm.num_free_blocks == before
            return -1
        return self.next_id

    @rule(seq=seqs, tokens=st.lists(st.integers(0, 3), min_size=1, max_size=4))
    def append(self, seq: int, tokens: list[int]) -> None:
        if seq in self.bm._seqs:
            n = self.bm.num_tokens(seq)
            if not self.bm.append_slots(seq, tokens):
                assert self.bm.num_tokens(seq) == n

    @rule(seq=seqs, frac=st.floats(0, 1))
    def cache(self, seq: int, frac: float) -> None:
        if seq in self.bm._seqs:
            self.bm.cache_computed(seq, int(self.bm.num_tokens(seq) * frac))

    @rule(target=seqs, seq=seqs)
    def fork(self, seq: int) -> int:
        if seq not in self.bm._seqs:
            return -1
        self.next_id += 1
        return self.next_id if self.bm.fork(seq, self.next_id) is not None else -1

    @rule(seq=consumes(seqs))
    def free(self, seq: int) -> None:
        if seq in self.bm._seqs:
            self.bm.free(seq)

    @invariant()
    def consistent(self) -> None:
        self.bm.check_invariants()

    def teardown(self) -> None:
        for seq in list(self.bm._seqs):
            self.bm.free(seq)
        assert self.bm.num_free_blocks == len(self.bm.blocks), "blocks leaked"
        self.bm.check_invariants()


class CappedBlockManagerMachine(BlockManagerMachine):
    max_cached_blocks = 4


_machine_settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestBlockManagerMachine = BlockManagerMachine.TestCase
TestBlockManagerMachine.settings = _machine_settings
TestCappedBlockManagerMachine = CappedBlockManagerMachine.TestCase
TestCappedBlockManagerMachine.settings = _machine_settings

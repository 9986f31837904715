"""Holds on cached blocks (sessions' transcripts, pinned contexts) without a model: what a hold keeps,
which holds memory pressure and the hold budget drop, and in what order."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from aicap.engine.block_manager import BlockManager
from tests.aicap.engine.test_block_manager import BlockManagerMachine


def _computed(bm: BlockManager, seq: int, tokens: list[int], salt: str = "") -> None:
    """A sequence of `tokens` that ran and ended: its full blocks are cached and free."""
    assert bm.allocate(seq, tokens, salt) is not None
    bm.cache_computed(seq, len(tokens))
    bm.free(seq)


def test_a_hold_keeps_the_cached_prefix_out_of_eviction() -> None:
    bm = BlockManager(num_blocks=6, block_size=2, max_held_blocks=6)
    _computed(bm, 1, [1, 2, 3, 4, 5])  # blocks 0, 1 cached, 2 free
    assert bm.hold("s", [1, 2, 3, 4, 5, 6, 7], app="a") == 4  # the cached full blocks only
    assert bm.held("s") == 4 and bm.held_blocks == 2
    assert bm.num_free_blocks == 4
    # another app fills what is free: nothing held is evicted
    assert bm.allocate(2, [9] * 8, "b") is not None
    assert bm.evicted == [] and bm.holds_dropped == 0
    bm.free(2)
    hit = bm.allocate(3, [1, 2, 3, 4, 5, 6])
    assert hit is not None and hit.num_cached_tokens == 4 and hit.block_table[:2] == (0, 1)
    bm.check_invariants()


def test_without_a_hold_the_same_traffic_evicts_the_prefix() -> None:
    bm = BlockManager(num_blocks=6, block_size=2, max_held_blocks=6)
    _computed(bm, 1, [1, 2, 3, 4, 5])
    assert bm.allocate(2, [9] * 12, "b") is not None  # all six blocks
    assert sorted(bm.evicted) == [0, 1]
    bm.free(2)
    cold = bm.allocate(3, [1, 2, 3, 4, 5, 6])
    assert cold is not None and cold.num_cached_tokens == 0


def test_pressure_drops_the_oldest_holds_only_as_far_as_needed() -> None:
    bm = BlockManager(num_blocks=8, block_size=2, max_held_blocks=8)
    _computed(bm, 1, [1, 1, 1, 1, 0])  # blocks 0, 1
    _computed(bm, 2, [2, 2, 2, 2, 0])  # blocks 2, 3 (4 is free again and reused)
    _computed(bm, 3, [3, 3, 3, 3, 0])
    for key, t in (("old", 1), ("mid", 2), ("new", 3)):
        assert bm.hold(key, [t] * 4) == 4
    assert bm.num_free_blocks == 2 and bm.held_blocks == 6
    # 4 blocks needed, 2 free: the oldest hold goes, the others stay
    assert bm.allocate(4, [7] * 8, "x") is not None
    assert (bm.held("old"), bm.held("mid"), bm.held("new")) == (0, 4, 4)
    assert bm.holds_dropped == 1
    bm.check_invariants()


def test_a_request_that_cannot_fit_even_so_drops_nothing() -> None:
    bm = BlockManager(num_blocks=4, block_size=2, max_held_blocks=4)
    _computed(bm, 1, [1, 1, 1, 1, 0])
    bm.hold("s", [1, 1, 1, 1])
    assert bm.allocate(2, [5] * 3) is not None  # the two free blocks: running
    assert bm.allocate(3, [6] * 5) is None  # three more are not there even without the hold
    assert bm.held("s") == 4 and bm.holds_dropped == 0
    bm.check_invariants()


def test_a_running_sequence_growing_drops_a_hold_before_anything_is_preempted() -> None:
    bm = BlockManager(num_blocks=4, block_size=2, max_held_blocks=4)
    _computed(bm, 1, [1, 1, 1, 1, 0])
    bm.hold("s", [1, 1, 1, 1])
    assert bm.allocate(2, [5, 5, 5]) is not None  # blocks 2, 3: none free now
    assert bm.append_slots(2, [5, 5])  # needs a third block: the hold goes
    assert bm.held("s") == 0 and bm.holds_dropped == 1
    bm.check_invariants()


def test_hits_on_a_dropped_hold_do_not_count_as_room() -> None:
    bm = BlockManager(num_blocks=4, block_size=2, max_held_blocks=4)
    _computed(bm, 1, [1, 1, 1, 1, 0])  # blocks 0, 1 cached
    bm.hold("s", [1, 1, 1, 1])
    assert bm.allocate(2, [9, 9, 9]) is not None  # blocks 2, 3
    # the session's next turn hits its own held blocks and needs one more: none is free, and dropping
    # its hold frees only the blocks it hits, so it waits (and keeps its hold)
    assert bm.allocate(3, [1, 1, 1, 1, 2]) is None
    assert bm.held("s") == 4
    bm.free(2)
    turn = bm.allocate(3, [1, 1, 1, 1, 2])
    assert turn is not None and turn.num_cached_tokens == 4
    bm.check_invariants()


def test_placing_a_hold_again_moves_it_to_the_new_prefix_and_makes_it_newest() -> None:
    bm = BlockManager(num_blocks=8, block_size=2, max_held_blocks=8)
    _computed(bm, 1, [1, 1, 1, 1, 0])
    _computed(bm, 2, [2, 2, 2, 2, 0])
    bm.hold("a", [1, 1])
    bm.hold("b", [2, 2, 2, 2])
    _computed(bm, 3, [1, 1, 1, 1, 3, 3, 0])  # session a's next turn: its transcript grew
    assert bm.hold("a", [1, 1, 1, 1, 3, 3, 0]) == 6  # a's new prefix, b is now the older hold
    assert bm.held_blocks == 5
    assert bm.allocate(4, [8] * 8) is not None  # 3 free, 4 needed: b goes (oldest), a stays
    assert bm.held("a") == 6 and bm.held("b") == 0
    bm.check_invariants()


def test_salts_and_release() -> None:
    bm = BlockManager(num_blocks=6, block_size=2, max_held_blocks=6)
    _computed(bm, 1, [1, 2, 3], salt="com.a")
    assert bm.hold("x", [1, 2, 3], salt="com.b") == 0  # another app's blocks are not its to hold
    assert bm.hold("y", [1, 2, 3], salt="com.a") == 2
    bm.release("y")
    bm.release("y")  # twice: nothing
    assert bm.held_blocks == 0 and bm.num_free_blocks == 6
    hit = bm.allocate(2, [1, 2, 3], "com.a")  # released blocks stay cached until evicted
    assert hit is not None and hit.num_cached_tokens == 2
    bm.check_invariants()


def test_the_hold_budget_takes_from_the_app_holding_most() -> None:
    bm = BlockManager(num_blocks=16, block_size=2, max_held_blocks=4)
    for seq, t in enumerate((1, 2, 3), start=1):
        _computed(bm, seq, [t] * 4 + [0])
    bm.hold("a1", [1] * 4, app="a")
    bm.hold("a2", [2] * 4, app="a")  # 4 blocks held: at the budget
    bm.hold("b1", [3] * 4, app="b")  # 6: app a holds most, its oldest hold goes
    assert (bm.held("a1"), bm.held("a2"), bm.held("b1")) == (0, 4, 4)
    assert bm.held_blocks == 4 and bm.holds_dropped == 1
    bm.check_invariants()


def test_the_number_of_holds_is_bounded_too() -> None:
    bm = BlockManager(num_blocks=16, block_size=2, max_held_blocks=16, max_holds=2)
    for seq, t in enumerate((1, 2, 3), start=1):
        _computed(bm, seq, [t] * 4 + [0])
    bm.hold("a1", [1] * 2, app="a")
    bm.hold("b1", [2] * 4, app="b")
    bm.hold("a2", [3] * 4, app="a")  # three holds: app a holds most blocks (3), its oldest goes
    assert (bm.held("a1"), bm.held("b1"), bm.held("a2")) == (0, 4, 4)
    bm.check_invariants()


class HoldingMachine(BlockManagerMachine):
    """The base machine's operations mixed with holds and releases: the invariants hold (held blocks
    are cached and referenced, the budget is kept) and nothing leaks once every hold is released."""

    @rule(key=st.integers(0, 3), tokens=st.lists(st.integers(0, 3), min_size=1, max_size=12))
    def hold(self, key: int, tokens: list[int]) -> None:
        held = self.bm.hold(key, tokens, app=str(key % 2))
        assert held == self.bm.held(key) and held <= len(tokens)

    @rule(key=st.integers(0, 3))
    def release(self, key: int) -> None:
        self.bm.release(key)
        assert self.bm.held(key) == 0

    def teardown(self) -> None:
        for key in range(4):
            self.bm.release(key)
        super().teardown()


class TightHoldingMachine(HoldingMachine):
    """A budget of 3 held blocks: placing holds drops others."""

    def __init__(self) -> None:
        super().__init__()
        self.bm.max_held_blocks = 3
        self.bm.max_holds = 2


_machine_settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestHoldingMachine = HoldingMachine.TestCase
TestHoldingMachine.settings = _machine_settings
TestTightHoldingMachine = TightHoldingMachine.TestCase
TestTightHoldingMachine.settings = _machine_settings

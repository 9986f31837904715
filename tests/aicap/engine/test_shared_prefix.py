"""The prefix cache across apps: each app hits only its own blocks, except the blocks wholly inside a
prefix the owner declared shareable (exact block ids on a manager with no model; then a property
test that no hit ever crosses apps outside a declared prefix)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aicap.engine.block_manager import BlockManager

SHARED = "\0shared\0system"


def published(bm: BlockManager, seq_id: int, prompt: list[int], app: str, shared: int = 0) -> None:
    alloc = bm.allocate(seq_id, prompt, app, True, SHARED if shared else "", shared)
    assert alloc is not None
    bm.cache_computed(seq_id, len(prompt))


def test_declared_prefix_blocks_are_shared_and_the_rest_stays_with_its_app() -> None:
    bm = BlockManager(num_blocks=16, block_size=2)
    published(bm, 1, [1, 2, 3, 4, 5, 6, 7], "com.a", shared=4)  # blocks 0-1 shared, 2 com.a's
    b = bm.allocate(2, [1, 2, 3, 4, 5, 6, 8], "com.b", True, SHARED, 4)
    assert b is not None and b.block_table[:2] == (0, 1) and b.num_cached_tokens == 4
    a = bm.allocate(3, [1, 2, 3, 4, 5, 6, 8], "com.a", True, SHARED, 4)
    assert a is not None and a.block_table[:3] == (0, 1, 2) and a.num_cached_tokens == 6
    outsider = bm.allocate(4, [1, 2, 3, 4, 5, 6, 8], "com.c")  # not declared for it
    assert outsider is not None and outsider.num_cached_tokens == 0
    bm.check_invariants()


def test_a_block_only_partly_inside_the_prefix_is_the_apps_own() -> None:
    bm = BlockManager(num_blocks=16, block_size=2)
    published(bm, 1, [1, 2, 3, 4, 5, 6, 7], "com.a", shared=3)  # block 1 holds [3, 4]: 4 is not shared
    b = bm.allocate(2, [1, 2, 3, 4, 5, 6, 7], "com.b", True, SHARED, 3)
    assert b is not None and b.block_table[0] == 0 and b.num_cached_tokens == 2
    bm.check_invariants()


def test_the_pin_attack_sees_the_same_cached_tokens_for_a_right_and_a_wrong_guess() -> None:
    template = [10, 11, 12, 13, 14, 15]  # 3 blocks of 2 before the PIN
    rest = [20, 21, 22, 23, 24]

    def prompt(pin: list[int]) -> list[int]:
        return [*template, *pin, *rest]

    for shared in (0, 6):  # without and with the template declared shareable
        bm = BlockManager(num_blocks=64, block_size=2)
        published(bm, 1, prompt([4, 8, 2, 1]), "com.victim", shared)
        published(bm, 2, prompt([0, 0, 0, 0]), "com.spy", shared)  # warms the spy's own template
        right = bm.allocate(3, prompt([4, 8, 2, 1]), "com.spy", True, SHARED if shared else "", shared)
        wrong = bm.allocate(4, prompt([9, 9, 9, 9]), "com.spy", True, SHARED if shared else "", shared)
        assert right is not None and wrong is not None
        assert right.num_cached_tokens == wrong.num_cached_tokens == 6


def test_a_fork_keeps_the_parents_salts() -> None:
    bm = BlockManager(num_blocks=16, block_size=2)
    assert bm.allocate(1, [1, 2, 3, 4, 5, 6, 7], "com.a", True, SHARED, 2) is not None
    assert bm.fork(1, 2) is not None
    bm.append_slots(2, [9])
    bm.cache_computed(2, 8)  # the child's blocks published under the parent's salts
    again = bm.allocate(3, [1, 2, 3, 4, 5, 6, 7, 9, 0], "com.a", True, SHARED, 2)
    other = bm.allocate(4, [1, 2, 3, 4, 5, 6, 7, 9, 0], "com.b", True, SHARED, 2)
    assert again is not None and again.num_cached_tokens == 8
    assert other is not None and other.num_cached_tokens == 2
    bm.check_invariants()


APPS = ("com.a", "com.b", "com.c")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(APPS),
            st.lists(st.integers(0, 2), min_size=1, max_size=12),
            st.integers(0, 12),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_no_hit_crosses_apps_outside_a_declared_prefix(ops: list[tuple[str, list[int], int, bool]]) -> None:
    """Who computed each cached block is recorded; a hit on a block another app computed must lie
    wholly inside the declared prefix of both sequences, and then it holds the declared tokens."""
    declared = [0, 1, 2, 0, 1, 2, 0, 1]  # what the owner declared (the prompt's first shared tokens)
    bs = 2
    bm = BlockManager(num_blocks=24, block_size=bs, max_cached_blocks=12)
    owner: dict[int, tuple[str, int]] = {}  # block → (app that computed it, its shared tokens)
    live: list[int] = []
    for seq_id, (app, tail, shared_len, declares) in enumerate(ops):
        shared = min(shared_len, len(declared)) if declares else 0
        prompt = [*declared[:shared], *tail]
        alloc = bm.allocate(seq_id, prompt, app, True, SHARED if shared else "", shared)
        if alloc is None:
            for s in live:
                bm.free(s)
            live.clear()
            continue
        live.append(seq_id)
        for i, b in enumerate(alloc.block_table[: alloc.num_cached_tokens // bs]):
            by, their_shared = owner[b]
            if by != app:
                assert (i + 1) * bs <= min(shared, their_shared), (i, app, by)
                assert prompt[i * bs : (i + 1) * bs] == declared[i * bs : (i + 1) * bs]
        bm.cache_computed(seq_id, len(prompt))
        for b, s, _ in bm.newly_cached:
            owner[b] = (ops[s][0], min(ops[s][2], len(declared)) if ops[s][3] else 0)
        bm.newly_cached.clear()
        bm.check_invariants()

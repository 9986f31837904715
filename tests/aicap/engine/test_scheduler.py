"""The scheduler with a fake runner: budgets, chunked prefill, fairness, preemption, no lost output."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from aicap.config import EngineConfig
from aicap.engine.block_manager import BlockManager
from aicap.engine.scheduler import Batch, Scheduler
from aicap.engine.sequence import Sequence, Status


def fake_step(sched: Scheduler, batch: Batch) -> list[Sequence]:
    """Samples token = (seq_id * 7 + output length) % 50 for every sequence that reached its end."""
    sampled = {
        s.seq_id: [(s.seq_id * 7 + len(s.output)) % 50]
        for s, n in batch.scheduled
        if s.num_computed + n == s.num_tokens
    }
    return sched.postprocess(batch, sampled)


def run_all(sched: Scheduler, max_steps: int = 10_000) -> list[Batch]:
    batches = []
    while sched.has_work():
        batch = sched.schedule()
        assert batch.scheduled or batch.swap_out or batch.recompute, "a step with nothing to do: stuck"
        fake_step(sched, batch)
        sched.blocks.check_invariants()
        wanted: dict[int, int] = {}
        for s in sched.waiting:
            for h in s.block_hashes:
                wanted[h] = wanted.get(h, 0) + 1
        assert sched.wanted == wanted, "the wanted blocks are not the waiting prompts'"
        batches.append(batch)
        assert len(batches) < max_steps
    return batches


def test_chunked_prefill_respects_the_token_budget() -> None:
    sched = Scheduler(EngineConfig(max_batch_tokens=8), BlockManager(64, 4))
    seq = Sequence(1, "com.a", list(range(20)), max_tokens=2)
    sched.add(seq)
    batches = run_all(sched)
    assert [b.num_tokens for b in batches] == [8, 8, 4, 1]
    assert seq.output == [7, 8] and seq.status == Status.FINISHED


def test_decodes_go_first_then_new_prefills() -> None:
    sched = Scheduler(EngineConfig(max_batch_tokens=10), BlockManager(64, 4))
    first = Sequence(1, "com.a", [1, 2, 3], max_tokens=5)
    sched.add(first)
    fake_step(sched, sched.schedule())  # prefill of `first`
    second = Sequence(2, "com.a", list(range(20)), max_tokens=1)
    sched.add(second)
    batch = sched.schedule()
    assert batch.scheduled == [(first, 1), (second, 9)]


def test_a_burst_under_one_system_prompt_computes_it_once() -> None:
    """Four requests arrive together with the same 40-token prefix: the first computes it, the others
    wait until it is cached and compute only their own few tokens (without the deferral each would
    compute the prefix: 4 x 40)."""
    sched = Scheduler(EngineConfig(max_batch_tokens=64, max_running=8), BlockManager(128, 4))
    system = list(range(100, 140))
    burst = [Sequence(i, "com.a", [*system, i, i + 1, i + 2], max_tokens=2) for i in range(4)]
    other = Sequence(9, "com.a", [7] * 12, max_tokens=2)
    for s in [*burst, other]:
        sched.add(s)
    first = sched.schedule()
    assert first.scheduled == [(burst[0], 43), (other, 12)]  # the others wait for burst[0]'s blocks
    fake_step(sched, first)
    second = sched.schedule()
    assert [(s.seq_id, n) for s, n in second.scheduled] == [(0, 1), (9, 1), (1, 3), (2, 3), (3, 3)]
    fake_step(sched, second)
    assert [s.cached_tokens for s in burst] == [0, 40, 40, 40]
    assert not sched.wanted  # no sequence waits
    run_all(sched)
    assert all(s.status == Status.FINISHED and len(s.output) == 2 for s in burst)


def test_a_burst_of_prompts_is_computed_one_after_another() -> None:
    """A step that computes a prompt admits no other beyond prefill_pack_tokens prompt tokens: each of a
    burst gets its first token after its own prompt, not after all of them; running decodes ride
    along, and a later prompt that fits what is left goes ahead of one that does not (which starts
    the next step)."""
    config = EngineConfig(max_batch_tokens=256, max_running=8, prefill_pack_tokens=46)
    sched = Scheduler(config, BlockManager(256, 4))
    big = [Sequence(i, f"com.app{i}", [i] * 40, max_tokens=3) for i in range(3)]
    small = Sequence(9, "com.small", [9] * 6, max_tokens=3)
    for s in [*big, small]:
        sched.add(s)
    steps = []
    for _ in range(3):
        batch = sched.schedule()
        steps.append([(s.seq_id, n) for s, n in batch.scheduled])
        fake_step(sched, batch)
    assert steps == [[(0, 40), (9, 6)], [(0, 1), (9, 1), (1, 40)], [(0, 1), (9, 1), (1, 1), (2, 40)]]
    run_all(sched)
    assert all(len(s.output) == 3 for s in [*big, small])

    packed = Scheduler(dataclasses.replace(config, prefill_pack_tokens=256), BlockManager(256, 4))
    for s in [Sequence(i, f"com.app{i}", [i] * 40, max_tokens=3) for i in range(3)]:
        packed.add(s)
    assert [n for _, n in packed.schedule().scheduled] == [40, 40, 40]  # one step for all


def test_one_apps_flood_does_not_starve_another() -> None:
    sched = Scheduler(EngineConfig(max_batch_tokens=64, max_running=4), BlockManager(256, 4))
    flood = [Sequence(i, "com.flood", [i] * 8, max_tokens=40 + i) for i in range(20)]
    for s in flood:
        sched.add(s)
    for _ in range(3):
        fake_step(sched, sched.schedule())
    late = Sequence(100, "com.other", [9] * 8, max_tokens=5)
    sched.add(late)
    # the flood holds all 4 running slots; the first slot that frees goes to the other app
    while True:
        before = set(map(id, sched.running))
        batch = sched.schedule()
        admitted = [s for s, _ in batch.scheduled if id(s) not in before]
        fake_step(sched, batch)
        if admitted:
            assert admitted[0] is late, [s.seq_id for s in admitted]
            break
    assert sum(1 for s in flood if s.status == Status.WAITING) > 10  # the flood was still queued


def test_out_of_blocks_preempts_the_newest_and_keeps_its_output() -> None:
    bm = BlockManager(num_blocks=6, block_size=4)
    sched = Scheduler(EngineConfig(max_batch_tokens=64, swap_budget_tokens=0), bm)
    seqs = [Sequence(i, "com.a", [i] * 7, max_tokens=12) for i in range(3)]
    for s in seqs:
        sched.add(s)
    seen: dict[int, list[int]] = {}
    while sched.has_work():
        batch = sched.schedule()
        fake_step(sched, batch)
        for s in seqs:
            assert s.output[: len(seen.get(s.seq_id, []))] == seen.get(s.seq_id, []), "output changed"
            seen[s.seq_id] = list(s.output)
    assert sched.preemptions["recompute"] > 0
    assert all(s.output == [(s.seq_id * 7 + k) % 50 for k in range(12)] for s in seqs)
    assert bm.num_free_blocks == 6


def test_swap_is_preferred_within_the_budget() -> None:
    bm = BlockManager(num_blocks=6, block_size=4)
    sched = Scheduler(EngineConfig(max_batch_tokens=64, swap_budget_tokens=1000), bm)
    seqs = [Sequence(i, "com.a", [i] * 7, max_tokens=12) for i in range(3)]
    for s in seqs:
        sched.add(s)
    swapped_in = 0
    while sched.has_work():
        batch = sched.schedule()
        for s in batch.swap_in:
            assert s.num_computed > 0  # resumes where it stopped, nothing recomputed
            swapped_in += 1
        fake_step(sched, batch)
    assert sched.preemptions["swap"] > 0 and sched.preemptions["recompute"] == 0
    assert swapped_in == sched.preemptions["swap"]
    assert sched.swapped_tokens == 0 and bm.num_free_blocks == 6


def test_abort_frees_blocks_at_once() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    sched = Scheduler(EngineConfig(), bm)
    seq = Sequence(1, "com.a", list(range(10)), max_tokens=100)
    sched.add(seq)
    fake_step(sched, sched.schedule())
    assert bm.num_free_blocks < 8
    sched.abort(seq)
    assert bm.num_free_blocks == 8 and not sched.has_work()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["com.a", "com.b", "com.c"]), st.integers(1, 24), st.integers(1, 10)),
        min_size=1,
        max_size=10,
    ),
    st.integers(4, 40),
    st.integers(6, 30),
    st.integers(0, 60),
)
def test_every_request_finishes_with_exactly_its_tokens(
    requests: list[tuple[str, int, int]], budget: int, num_blocks: int, swap: int
) -> None:
    bm = BlockManager(num_blocks=num_blocks, block_size=4)
    sched = Scheduler(EngineConfig(max_batch_tokens=budget, max_running=4, swap_budget_tokens=swap), bm)
    seqs = []
    for i, (app, plen, max_tokens) in enumerate(requests):
        if -(-(plen + max_tokens) // 4) > num_blocks:
            continue  # could never fit, even alone
        seq = Sequence(i, app, [i % 5] * plen, max_tokens=max_tokens)
        seqs.append(seq)
        sched.add(seq)
    for batch in run_all(sched):
        assert batch.num_tokens <= budget
    for s in seqs:
        assert s.status == Status.FINISHED
        assert s.output == [(s.seq_id * 7 + k) % 50 for k in range(s.max_tokens)]
    assert bm.num_free_blocks == num_blocks

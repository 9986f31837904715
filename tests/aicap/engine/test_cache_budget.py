"""The adaptive prefix-cache budget (cache_budget.py): its decisions alone, the block manager's target
and ghosts, and the engine keeping a cache that is reused while dropping one that is not."""

from __future__ import annotations

from aicap.config import EngineConfig
from aicap.engine.block_manager import BlockManager
from aicap.engine.cache_budget import (
    MIN_GROW_BLOCKS,
    ROW_CELLS_PER_TOKEN,
    START_TOKENS,
    WINDOW_STEPS,
    CacheBudget,
)
from aicap.engine.llm_engine import LLMEngine
from aicap.engine.sampler import SamplingParams
from tests.aicap.engine.fake_runner import FakeRunner


def window(budget: CacheBudget, rows: int, unused: int, reused: int = 0) -> int | None:
    budget.reuse(reused)
    for _ in range(WINDOW_STEPS - 1):
        budget.step(rows, unused)
        assert budget.decide() is None  # only at a window's end
    budget.step(rows, unused)
    return budget.decide()


def test_an_unused_cache_halves_window_by_window_while_it_costs_more_than_a_token() -> None:
    budget = CacheBudget(ceiling=256, block_size=8)
    assert budget.target == 256
    seen = [window(budget, rows=8, unused=budget.target) for _ in range(8)]
    # 2 blocks beside 8 rows cost 32 x 8 x 16 = 4,096 row-cells a window: less than one token's prefill
    assert 32 * 8 * 16 < ROW_CELLS_PER_TOKEN < 32 * 8 * 32
    assert seen == [128, 64, 32, 16, 8, 4, 2, None]
    assert window(budget, rows=64, unused=2) == 1  # bigger steps: it costs more again
    assert window(budget, rows=512, unused=1) == 0
    assert window(budget, rows=8, unused=0) is None  # nothing kept, nothing reused: no change


def test_a_cost_below_one_prefill_token_changes_nothing() -> None:
    budget = CacheBudget(ceiling=4, block_size=8)
    rows = ROW_CELLS_PER_TOKEN // (WINDOW_STEPS * 4 * 8)  # the window costs less than one token
    assert window(budget, rows=rows, unused=4) is None and budget.target == 4


def test_reuse_that_pays_grows_the_budget_back_to_the_ceiling() -> None:
    budget = CacheBudget(ceiling=100, block_size=8, target=0)
    assert window(budget, rows=8, unused=0, reused=8) == MIN_GROW_BLOCKS  # a ghost hit at nothing kept
    assert window(budget, rows=8, unused=16, reused=64) == 2 * MIN_GROW_BLOCKS
    assert window(budget, rows=8, unused=32, reused=64) == 64
    assert window(budget, rows=8, unused=64, reused=64) == 100  # capped
    assert window(budget, rows=8, unused=100, reused=64) is None


def test_reuse_that_does_not_pay_still_shrinks() -> None:
    budget = CacheBudget(ceiling=256, block_size=8)
    # 16 rows a step beside 256 unused blocks: 32 x 16 x 2048 row-cells, more than 8 tokens' worth
    assert window(budget, rows=16, unused=256, reused=8) == 128


def test_the_target_evicts_the_least_recently_used_and_remembers_them_as_ghosts() -> None:
    bm = BlockManager(num_blocks=16, block_size=2)
    bm.allocate(1, [1, 2, 3, 4, 5])  # full blocks [1, 2] [3, 4]
    bm.cache_computed(1, 5)
    bm.allocate(2, [6, 6, 7, 7, 8])
    bm.cache_computed(2, 5)
    bm.free(1)
    bm.free(2)
    assert bm.num_unused_cached == 4 and bm.evicted == []
    bm.set_cache_target(2)  # request 1's blocks were freed first: they go, its tail block first
    assert bm.num_unused_cached == 2 and bm.evicted == [1, 0] and bm.cache_target == 2
    bm.check_invariants()
    # request 1's prompt again: no hit, but both of its full blocks are ghosts (reuse, for the budget)
    before = bm.reused_tokens
    cold = bm.allocate(3, [1, 2, 3, 4, 9])
    assert cold is not None and cold.num_cached_tokens == 0
    assert bm.reused_tokens - before == 4
    # request 2's prompt hits its unused cached blocks: reuse too
    hit = bm.allocate(4, [6, 6, 7, 7, 9])
    assert hit is not None and hit.num_cached_tokens == 4
    assert bm.reused_tokens - before == 8
    # a hit on blocks a running sequence uses is not reuse of the unused cache
    shared = bm.allocate(5, [6, 6, 7, 7, 1])
    assert shared is not None and shared.num_cached_tokens == 4
    assert bm.reused_tokens - before == 8
    # computed again, request 1's blocks are cached, no longer ghosts
    bm.cache_computed(3, 5)
    bm.free(3)
    again = bm.allocate(6, [1, 2, 3, 4, 9])
    assert again is not None and again.num_cached_tokens == 4
    assert bm.reused_tokens - before == 12  # as an unused hit, not twice
    bm.set_cache_target(10**6)  # never above the ceiling
    assert bm.cache_target == bm.max_cached_blocks
    bm.check_invariants()


def test_beyond_the_target_a_block_stays_for_its_grace() -> None:
    now = [100.0]
    bm = BlockManager(num_blocks=16, block_size=2, max_cached_blocks=3, grace_s=1.0, clock=lambda: now[0])
    bm.set_cache_target(0)
    bm.allocate(1, [1, 2, 3, 4, 5])
    bm.cache_computed(1, 5)
    bm.free(1)
    now[0] += 0.5
    bm.expire()
    assert bm.num_unused_cached == 2 and bm.evicted == []  # within its grace
    again = bm.allocate(2, [1, 2, 3, 4, 9])  # the next turn, resent at once, finds it
    assert again is not None and again.num_cached_tokens == 4
    bm.cache_computed(2, 5)
    bm.free(2)
    bm.allocate(3, [6, 6, 7, 7, 8, 8, 9])  # three more cached blocks: over the ceiling of 3 at once
    bm.cache_computed(3, 7)
    bm.free(3)
    assert bm.num_unused_cached == 3 and len(bm.evicted) == 2
    now[0] += 1.0
    bm.expire()  # the grace has passed: down to the target of nothing
    assert bm.num_unused_cached == 0 and len(bm.evicted) == 5
    bm.check_invariants()


def test_a_block_a_waiting_prompt_will_hit_stays_beyond_the_target_but_not_the_ceiling() -> None:
    now = [100.0]
    bm = BlockManager(num_blocks=16, block_size=2, max_cached_blocks=3, grace_s=1.0, clock=lambda: now[0])
    bm.allocate(1, [1, 2, 3, 4, 5])
    bm.cache_computed(1, 5)
    bm.free(1)
    waiting_for = set(bm.prompt_hashes([1, 2, 3, 4, 9])[1:])  # a waiting prompt hits block 2 of 2
    bm.wanted = lambda: waiting_for
    now[0] += 2.0
    bm.set_cache_target(0)
    assert bm.num_unused_cached == 1  # the first went; the wanted one stays
    waiting_for = set()
    bm.expire()
    assert bm.num_unused_cached == 0
    bm.allocate(2, [6, 6, 7, 7, 8, 8, 9, 9, 5])  # four cached blocks: over the ceiling of 3
    bm.cache_computed(2, 9)
    waiting_for = set(bm.prompt_hashes([6, 6, 7, 7, 8, 8, 9, 9, 5]))
    bm.set_cache_target(3)
    bm.free(2)
    assert bm.num_unused_cached == 3  # the ceiling takes a wanted block too
    bm.check_invariants()


def make(**kw: object) -> LLMEngine:
    return LLMEngine(
        FakeRunner(2048, 12),  # type: ignore[arg-type]
        EngineConfig(block_size=8, max_batch_tokens=64, max_running=4, prefix_cache_tokens=512, **kw),  # type: ignore[arg-type]
    )


def run(engine: LLMEngine, prompts: list[list[int]], max_tokens: int = 40) -> None:
    """Each prompt alone to its end, one after another (4 at a time)."""
    for start in range(0, len(prompts), 4):
        for i, p in enumerate(prompts[start : start + 4]):
            engine.add(start + i + 1000 * len(p), p, SamplingParams(max_tokens=max_tokens, ignore_eos=True))
        while engine.has_work():
            engine.step()
        engine.blocks.check_invariants()


UNSHARED = [[i % 31 + 1, i // 31 + 1] + [(7 * i + k) % 31 + 1 for k in range(38)] for i in range(40)]


def test_the_engine_drops_a_cache_no_prompt_reuses() -> None:
    engine = make()
    # the fake runner's steps take microseconds, and the last ones' blocks are kept through two more
    engine.blocks.grace_s, engine.blocks.grace_steps = 0.0, 0
    ceiling = engine.stats().prefix_cache_target_tokens
    assert ceiling == 512
    run(engine, UNSHARED)
    stats = engine.stats()
    assert stats.prefix_cache_target_tokens < ceiling // 8
    assert stats.prefix_cache_unused_tokens <= stats.prefix_cache_target_tokens
    assert engine.blocks.prefix_hits == 0


def test_the_engine_keeps_a_cache_that_turns_of_chats_reuse() -> None:
    engine = make()
    histories = [[(5 * u + k) % 29 + 1 for k in range(48)] for u in range(4)]
    for turn in range(6):  # each turn resends its user's history and a new message
        prompts = [h + [turn + 1] * 8 for h in histories]
        run(engine, prompts, max_tokens=24)
        histories = [p + [30] * 24 for p in prompts]  # the answer joins the history
    stats = engine.stats()
    assert stats.prefix_cache_target_tokens == 512
    assert engine.blocks.prefix_hits > 0.6 * sum(len(h) for h in histories) * 5 / 6


def test_off_it_keeps_every_unused_block_up_to_the_ceiling() -> None:
    engine = make(prefix_cache_adaptive=False)
    run(engine, UNSHARED)
    assert engine.cache_budget is None
    assert engine.stats().prefix_cache_target_tokens == 512
    assert engine.stats().prefix_cache_unused_tokens == 512


def test_the_budget_starts_below_a_ceiling_of_the_whole_context() -> None:
    """By default the ceiling is the whole context: what users leave behind when their turns end
    together stays for their next turns (the budget's grace), and the budget starts at START_TOKENS."""
    engine = LLMEngine(FakeRunner(8192, 64), EngineConfig())  # type: ignore[arg-type]
    assert engine.blocks.max_cached_blocks * 8 == 8192
    assert engine.stats().prefix_cache_target_tokens == START_TOKENS
    now = [0.0]
    engine.blocks._clock = lambda: now[0]
    users = [[u + 1] + [(7 * k + u) % 31 + 1 for k in range(599)] for u in range(8)]  # 4,800 tokens
    for u, p in enumerate(users):
        engine.add(u, p, SamplingParams(max_tokens=4, ignore_eos=True))
    while engine.has_work():
        engine.step()
    assert engine.stats().prefix_cache_unused_tokens == 8 * 600  # all kept through their grace
    for u, p in enumerate(users):  # their next turns, sent at once
        engine.add(100 + u, [*p, 1, 2, 3, 4, 5], SamplingParams(max_tokens=4, ignore_eos=True))
    now[0] += 5.0  # the grace passes while they wait: the blocks they will hit stay
    engine.blocks.set_cache_target(0)
    assert engine.stats().prefix_cache_unused_tokens == 8 * 600
    engine.step()
    assert engine.blocks.prefix_hits >= 8 * 592


def test_a_block_outlives_the_step_after_the_one_that_freed_it() -> None:
    """A request sent when a sequence's last token arrives reaches the scheduler only after the next
    step, however long that step takes (a prompt chunk: over a second): its blocks wait for it."""
    now = [100.0]
    bm = BlockManager(
        num_blocks=16, block_size=2, max_cached_blocks=8, grace_s=1.0, clock=lambda: now[0], grace_steps=2
    )
    bm.set_cache_target(0)
    bm.tick()
    bm.allocate(1, [1, 2, 3, 4, 5])
    bm.cache_computed(1, 5)
    bm.free(1)
    bm.tick()  # the next step, a long one
    now[0] += 3.0
    bm.expire()
    assert bm.num_unused_cached == 2 and bm.evicted == []
    bm.tick()  # by the step after it, a request that hits them is waiting (the scheduler's `wanted`)
    bm.expire()
    assert bm.num_unused_cached == 0 and len(bm.evicted) == 2
    bm.check_invariants()


def test_the_engine_keeps_a_finished_history_through_a_long_next_step() -> None:
    """One user's turn ends while another's long prompt computes in the next step (seconds): the first
    user's next turn, arriving during that step, still finds its history."""
    engine = LLMEngine(FakeRunner(8192, 64), EngineConfig())  # type: ignore[arg-type]
    now = [0.0]
    engine.blocks._clock = lambda: now[0]
    engine.blocks.set_cache_target(0)
    history = [1] + [(7 * k) % 31 + 1 for k in range(599)]
    engine.add(1, history, SamplingParams(max_tokens=2, ignore_eos=True))
    while engine.has_work():
        engine.step()
    assert engine.stats().prefix_cache_unused_tokens == 600
    engine.add(2, [2] + [(5 * k) % 29 + 1 for k in range(999)], SamplingParams(max_tokens=2, ignore_eos=True))
    now[0] += 5.0  # the other prompt's step takes seconds; the first user's next turn comes meanwhile
    engine.step()
    engine.add(3, [*history, 9, 9, 9], SamplingParams(max_tokens=2, ignore_eos=True))
    hits = engine.blocks.prefix_hits
    while engine.has_work():  # the rest of the long prompt first, then the next turn
        engine.step()
    assert engine.blocks.prefix_hits - hits == 600

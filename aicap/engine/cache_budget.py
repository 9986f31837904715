"""How many unused cached KV blocks the prefix cache keeps: as many as their reuse pays for.

llama.cpp's unified KV makes every token of a step look at every cell up to the highest one in use
(n_kv), whichever sequence it belongs to: for a decoding sequence's row the flash-attention kernel
checks each cell's mask, head by head and layer by layer. A cached block no running sequence uses
therefore costs each step time in proportion to the step's decoding sequences ("rows"). Measured here
(8 sequences of 200 tokens decoding, 2 threads): 2,048 unused cells beside them made a step 15-25%
slower (55-70 ms -> 69-80 ms), and on the HTTP benchmark's unshared prompts the daemon with the cache
off ran 1.18x the daemon with 2,048 unused cached tokens. A prompt chunk's rows go through the tiled
kernel, which skips masked tiles whole: the same 2,048 cells did not slow a 512-token prefill beyond
the noise (2.2 s), so a sequence counts as one row whatever it computes. A reused token saves its
prefill instead: about 4 ms here, against ~0.75 us per row and cell. So a cached token is worth
keeping while it is reused more often than once per `ROW_CELLS_PER_TOKEN` row-cells it costs.

The budget follows that balance, window by window of steps: it halves while the unused cache cost more
than the reuse it gave (none, for unshared prompts: the cache shrinks to nothing in a few seconds of
decoding), and grows again as soon as prompts find their blocks cached, or find blocks the budget
had evicted ("ghosts", as ARC keeps them): a multi-turn chat whose history is resent keeps its cache.
`ai.prefix_cache_tokens` stays the ceiling (by default the whole context: the budget, which starts at
`START_TOKENS`, is what bounds the cache; a ceiling below what the users of a chat app leave behind
when their turns end together evicted their histories before their next turns came). Beyond the
budget a block still stays `GRACE_S` after it became unused (block_manager.py): clients that send
the next request as soon as an answer ends (a chat resending its history, an agent) find their blocks
even at a budget of nothing: without that grace, 8 chats under one system prompt that all ended in
one step lost the prompt itself, and their next turns started 4-8x later. Once such a request waits
for admission, the blocks it will hit stay whatever the grace (the scheduler's `wanted`).
Pure logic: the engine feeds it each step.
"""

from __future__ import annotations

from dataclasses import dataclass

ROW_CELLS_PER_TOKEN = 5000  # one prefill token's time, in (step token x unused cell) units, measured here
WINDOW_STEPS = 32  # steps between decisions (~2 s of decoding at 8 sequences)
MIN_GROW_BLOCKS = 16  # what a budget of nothing grows to at the first sign of reuse
START_TOKENS = 2048  # the budget before the first decision (below the ceiling)
GRACE_S = 1.0  # a block unused for less than this is not evicted for the budget (only for the ceiling)
# nor one freed by the last step or the one before: a request sent as a step's tokens arrive waits for
# the next step's end before the scheduler sees it, and a step with a prompt chunk can take over GRACE_S
GRACE_STEPS = 2


@dataclass(slots=True)
class CacheBudget:
    """`ceiling`: the most unused cached blocks ever kept (ai.prefix_cache_tokens in blocks)."""

    ceiling: int
    block_size: int
    target: int = -1  # blocks kept now; starts at the ceiling
    cost: float = 0.0  # row-cells the unused cache cost in this window
    reused: int = 0  # tokens reused from unused cached blocks, or found among ghosts, in this window
    steps: int = 0

    def __post_init__(self) -> None:
        if self.target < 0:
            self.target = self.ceiling

    def step(self, rows: int, unused_blocks: int) -> None:
        """One llama_decode of `rows` sequences beside `unused_blocks` unused cached blocks."""
        self.cost += rows * unused_blocks * self.block_size
        self.steps += 1

    def reuse(self, tokens: int) -> None:
        """A prompt found `tokens` tokens in unused cached blocks, or in blocks the budget evicted."""
        self.reused += tokens

    def decide(self) -> int | None:
        """The new target at the end of a window (None: not the end of one, or no change)."""
        if self.steps < WINDOW_STEPS:
            return None
        worth = self.reused * ROW_CELLS_PER_TOKEN
        old = self.target
        if self.reused and worth >= self.cost:
            self.target = min(self.ceiling, max(2 * self.target, MIN_GROW_BLOCKS))
        elif self.cost > max(worth, ROW_CELLS_PER_TOKEN):  # not for less than a token's prefill
            self.target //= 2
        self.cost, self.reused, self.steps = 0.0, 0, 0
        return self.target if self.target != old else None

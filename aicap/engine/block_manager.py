"""KV cache accounting in fixed-size blocks, with reference counts and prefix caching (vLLM's design).

llama.cpp keeps the KV cells; this module decides which logical blocks of cells each sequence owns.
A full block is identified by a hash chained over its parent's hash, its tokens and a salt where the
salt changes: a sequence's first `shared_tokens` (a prefix the owner declared shareable) hash with
`shared_salt`, the rest with its app's `salt`, so no app hits another app's cached prompts except a
declared prefix's blocks (see block_salt). Blocks no sequence
uses stay cached in an LRU free queue and are evicted when a new block is needed, or when more than
`max_cached_blocks` of them are kept: llama.cpp's attention walks every live cell, cached or not, so
an unbounded cache slows every step once it has filled the context. Below that ceiling,
`set_cache_target` sets how many are kept now (cache_budget.py sizes it by their reuse): beyond it, a
block goes once it has been unused for `grace_s` and for `grace_steps` steps (`tick`) (a prompt resent
at once, as a chat client sends its next turn, still finds its blocks: it reaches the scheduler only
between steps, so a block freed by one step outlives the next step whatever that one's length;
`expire` applies the bound as time passes). The hashes of blocks
evicted for the bound are remembered as *ghosts* (ARC's term), so that a prompt that would have hit
them counts as reuse (`reused_tokens`) and the budget can grow again. A block a waiting prompt will
hit (`wanted`, the scheduler's) is not evicted for the bound: only the ceiling and room for new blocks
take it.

A prompt whose next block after its cached ones is being computed right now by a running sequence
(`pending_block`: the same system prompt in a burst of requests) is better admitted once that block is
cached than computed twice: the scheduler defers it (SGLang's in-batch prefix caching).
Running out of blocks is a normal outcome: methods return None or False and change nothing.

A *hold* (`hold(key, tokens)`) keeps the cached blocks of a token prefix referenced while no sequence
uses them: a session's transcript between its turns, an app's pinned context. Held blocks are never
evicted; when a sequence needs blocks that are not free, holds are dropped, the least recently placed
first, until there are enough (their blocks become ordinary cached blocks, evicted as the least
recently used). Held blocks count against `max_held_blocks`, and holds against `max_holds`: past
either, the app that holds the most blocks loses its oldest hold, so one app's sessions cannot take
another's.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Allocation:
    """Blocks given to a new sequence; its first `num_cached_tokens` tokens are already in the cache."""

    block_table: tuple[int, ...]
    num_cached_tokens: int


@dataclass(slots=True)
class _Hold:
    blocks: list[int]
    app: str
    tick: int  # when it was placed: the smallest is dropped first


@dataclass(slots=True)
class _Seq:
    blocks: list[int]
    tokens: list[int]
    salt: str
    shared_salt: str = ""
    shared_blocks: int = 0  # leading full blocks inside a declared shared prefix
    num_hashed: int = 0  # leading full blocks whose hash is known
    last_hash: int | None = None  # hash of block num_hashed - 1
    hashes: list[int] = field(default_factory=list)
    num_published: int = 0  # leading full blocks cache_computed has already looked at
    reserved: int = 0  # tokens its blocks were reserved for beyond its known ones (reserve, trim)


def block_hash(parent: int | None, token_ids: Sequence[int], salt: str = "") -> int:
    """The chained hash of one full block: parent hash, the block's tokens and its salt."""
    return hash((parent, tuple(token_ids), salt))


def block_salt(index: int, salt: str, shared_salt: str, shared_blocks: int) -> str:
    """The salt block `index` hashes with: the shared prefix's on its first block, the app's on the
    first block after it (the chain carries either to every later block, so "" elsewhere)."""
    if index == 0 and shared_blocks:
        return shared_salt
    return salt if index == shared_blocks else ""


class BlockManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = True,
        max_cached_blocks: int | None = None,
        max_held_blocks: int | None = None,
        max_holds: int | None = None,
        grace_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        grace_steps: int = 0,
    ) -> None:
        assert num_blocks > 0 and block_size > 0
        self.block_size = block_size
        self.caching = enable_prefix_caching
        self.max_cached_blocks = num_blocks if max_cached_blocks is None else max_cached_blocks
        self.cache_target = self.max_cached_blocks  # unused cached blocks kept now (set_cache_target)
        self.grace_s = grace_s
        self.grace_steps = grace_steps
        self.steps = 0  # tick()s so far: the engine's steps
        self._clock = clock
        # hashes of cached blocks a waiting prompt will hit: kept beyond cache_target (the scheduler's)
        self.wanted: Callable[[], Collection[int]] = frozenset
        self._ghosts: OrderedDict[int, None] = OrderedDict()  # hashes evicted for the bound, oldest first
        # prompt tokens found in unused cached blocks, or among the ghosts, by allocate (cache_budget.py)
        self.reused_tokens = 0
        self.max_held_blocks = num_blocks // 2 if max_held_blocks is None else max_held_blocks
        self.max_holds = num_blocks if max_holds is None else max_holds
        self._holds: dict[object, _Hold] = {}
        self._ticks = 0
        self.held_blocks = 0  # blocks of all holds (a block two holds share counts twice)
        self.holds_dropped = 0  # holds dropped for room or over max_held_blocks
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # head = evict first
        # free blocks with content, LRU first → when they became unused (clock, steps)
        self._cached_free: OrderedDict[int, tuple[float, int]] = OrderedDict()
        self._cached: dict[int, int] = {}  # hash → block id
        self._seqs: dict[int, _Seq] = {}
        self.prefix_queries = 0  # prompt tokens looked up
        self.prefix_hits = 0  # prompt tokens found cached
        # for whoever keeps the cells: blocks newly cached (block, seq, index in its table) and blocks
        # whose cached content was evicted since the last drain
        self.newly_cached: list[tuple[int, int, int]] = []
        self.evicted: list[int] = []

    # ---- queries ----

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_unused_cached(self) -> int:
        """Cached blocks no sequence or hold uses (kept for a prompt that may come)."""
        return len(self._cached_free)

    @property
    def usage(self) -> float:
        return 1 - len(self._free) / len(self.blocks)

    def block_table(self, seq_id: int) -> tuple[int, ...]:
        return tuple(self._seqs[seq_id].blocks)

    def num_tokens(self, seq_id: int) -> int:
        return len(self._seqs[seq_id].tokens)

    def prompt_hashes(
        self, prompt: Sequence[int], salt: str = "", shared_salt: str = "", shared_tokens: int = 0
    ) -> list[int]:
        """The hashes `allocate` would give the prompt's full blocks (to be looked up before it is)."""
        shared_blocks = min(shared_tokens, len(prompt)) // self.block_size if shared_salt else 0
        seq = _Seq([], list(prompt), salt, shared_salt, shared_blocks)
        self._hash_full_blocks(seq)
        return seq.hashes

    def computing(self) -> set[int]:
        """Hashes of the full blocks running sequences are computing now, not yet cached."""
        return {h for s in self._seqs.values() for h in s.hashes[s.num_published :]}

    def cached_prefix(self, hashes: Sequence[int], prompt_len: int) -> int:
        """How many tokens of a prompt (of these block hashes) `allocate` would find cached now."""
        if not self.caching:
            return 0
        usable = min((prompt_len - 1) // self.block_size, len(hashes))  # its last token is computed
        i = 0
        while i < usable and hashes[i] in self._cached:
            i += 1
        return i * self.block_size

    def pending_block(self, hashes: Sequence[int], prompt_len: int, computing: Collection[int]) -> bool:
        """Whether the first block of a prompt (of these block hashes) that is not cached is in
        `computing` (a running sequence's, not cached yet): admitted once it is, the prompt hits it."""
        if not self.caching:
            return False
        usable = min((prompt_len - 1) // self.block_size, len(hashes))  # its last token is computed
        i = self.cached_prefix(hashes, prompt_len) // self.block_size  # its first uncached block
        return i < usable and hashes[i] in computing

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- allocation ----

    def allocate(
        self,
        seq_id: int,
        prompt: Sequence[int],
        salt: str = "",
        use_cache: bool = True,
        shared_salt: str = "",
        shared_tokens: int = 0,
    ) -> Allocation | None:
        """Blocks for a new sequence's prompt, reusing the longest cached prefix of whole blocks.

        The blocks wholly inside the prompt's first `shared_tokens` (a declared shared prefix) hash
        with `shared_salt`, every later one with `salt`. At least the last prompt token is always
        recomputed (it yields the first logits), so a prompt that is cached entirely still recomputes
        its last block. A sequence swapped back in passes use_cache=False: its saved state fills
        every block."""
        assert seq_id not in self._seqs and prompt
        bs = self.block_size
        shared_blocks = min(shared_tokens, len(prompt)) // bs if shared_salt else 0
        seq = _Seq([], list(prompt), salt, shared_salt, shared_blocks)
        self._hash_full_blocks(seq)
        hits: list[int] = []
        if self.caching and use_cache:
            for i in range((len(prompt) - 1) // bs):
                b = self._cached.get(seq.hashes[i])
                if b is None or self.blocks[b].token_ids != tuple(prompt[i * bs : (i + 1) * bs]):
                    break
                hits.append(b)
            ghosts = len(hits)
            while ghosts < (len(prompt) - 1) // bs and seq.hashes[ghosts] in self._ghosts:
                ghosts += 1
            unused = sum(1 for b in hits if self.blocks[b].ref_count == 0)
            self.reused_tokens += (unused + ghosts - len(hits)) * bs
        needed = self._blocks_for(len(prompt)) - len(hits)

        def short() -> int:  # blocks missing: free ones less the cached hits that are free themselves
            return needed - len(self._free) + sum(1 for b in hits if self.blocks[b].ref_count == 0)

        if short() > 0 and not self._make_room(short, set(hits)):
            return None
        for b in hits:
            self._touch(b)
        seq.blocks = hits + [self._pop_free() for _ in range(needed)]
        self._seqs[seq_id] = seq
        self.prefix_queries += len(prompt)
        self.prefix_hits += len(hits) * bs
        return Allocation(tuple(seq.blocks), len(hits) * bs)

    def append_slots(self, seq_id: int, token_ids: Sequence[int]) -> bool:
        """Adds tokens to a sequence, growing its table as needed; False (and no change) if full."""
        seq = self._seqs[seq_id]
        needed = self._blocks_for(len(seq.tokens) + len(token_ids)) - len(seq.blocks)
        if needed > len(self._free) and not self._make_room(lambda: needed - len(self._free)):
            return False
        seq.blocks.extend(self._pop_free() for _ in range(needed))
        seq.tokens.extend(token_ids)
        self._hash_full_blocks(seq)
        return True

    def reserve(self, seq_id: int, num_tokens: int) -> bool:
        """Blocks enough for `num_tokens` tokens of the sequence, without tokens yet (a draft's cells,
        speculation.py); False (and no change) if there are not enough free blocks."""
        seq = self._seqs[seq_id]
        needed = self._blocks_for(num_tokens) - len(seq.blocks)
        if needed > len(self._free):
            return False
        seq.blocks.extend(self._pop_free() for _ in range(needed))
        seq.reserved = max(seq.reserved, num_tokens)
        return True

    def trim(self, seq_id: int, num_tokens: int) -> None:
        """Gives back the blocks beyond those `num_tokens` tokens (and its known ones) need: a draft's
        rejected rest. Such blocks never held a hashed token."""
        seq = self._seqs[seq_id]
        keep = self._blocks_for(max(num_tokens, len(seq.tokens)))
        while len(seq.blocks) > keep:
            b = seq.blocks.pop()
            block = self.blocks[b]
            assert block.hash is None and block.ref_count == 1, f"block {b} is not a reserved one"
            block.ref_count = 0
            self._free[b] = None
            self._free.move_to_end(b, last=False)  # nothing cached: reuse it first
        seq.reserved = min(num_tokens, len(seq.blocks) * self.block_size)

    def cache_computed(self, seq_id: int, num_computed_tokens: int) -> None:
        """Publishes the sequence's full blocks whose KV is now computed, so others can reuse them."""
        if not self.caching:
            return
        seq = self._seqs[seq_id]
        bs = self.block_size
        end = min(num_computed_tokens // bs, len(seq.hashes))
        start, seq.num_published = seq.num_published, max(seq.num_published, end)
        for i in range(start, end):
            block = self.blocks[seq.blocks[i]]
            if block.hash is not None:
                continue
            h = seq.hashes[i]
            if h in self._cached:
                continue  # an identical block is cached already; this one stays private
            block.hash, block.token_ids = h, tuple(seq.tokens[i * bs : (i + 1) * bs])
            self._cached[h] = block.block_id
            self._ghosts.pop(h, None)
            self.newly_cached.append((block.block_id, seq_id, i))

    def uncache(self, block_id: int) -> None:
        """Forgets a block's cached content (its cells could not be kept)."""
        block = self.blocks[block_id]
        if block.hash is not None and self._cached.get(block.hash) == block_id:
            del self._cached[block.hash]
        block.hash, block.token_ids = None, ()
        self._cached_free.pop(block_id, None)

    def set_cache_target(self, blocks: int) -> None:
        """Keeps at most `blocks` unused cached blocks (never more than max_cached_blocks), evicting
        the least recently used beyond it once unused for grace_s."""
        self.cache_target = max(0, min(blocks, self.max_cached_blocks))
        self._bound_cached()

    def tick(self) -> None:
        """A step begins (after the requests that came during the last one joined the scheduler)."""
        self.steps += 1

    def expire(self) -> None:
        """Evicts the unused cached blocks beyond cache_target whose grace has passed since."""
        if len(self._cached_free) > self.cache_target:
            self._bound_cached()

    def evict_unused(self) -> int:
        """Evicts every cached block no sequence uses; returns how many."""
        n = 0
        for b in list(self._cached_free):
            self._evict(b)
            n += 1
        return n

    def unfilled_slots(self) -> int:
        """Cells reserved by sequences' blocks but not holding one of their tokens (their last,
        partial blocks; shared blocks are always full)."""
        return sum(len(s.blocks) * self.block_size - len(s.tokens) for s in self._seqs.values())

    def fork(self, parent_id: int, child_id: int) -> tuple[int, int] | bool | None:
        """A child sharing the parent's full blocks (n > 1 samples of one prompt).

        Returns the (source, destination) blocks to copy when the parent's last block is partial,
        True when nothing needs copying, None when no block is free for the copy."""
        assert child_id not in self._seqs
        parent = self._seqs[parent_id]
        full = len(parent.tokens) // self.block_size
        partial = len(parent.blocks) > full
        if partial and not self._free and not self._make_room(lambda: 1 - len(self._free)):
            return None
        shared = parent.blocks[:full]
        for b in shared:
            self._touch(b)
        child = _Seq(list(shared), list(parent.tokens), parent.salt, parent.shared_salt, parent.shared_blocks)
        self._hash_full_blocks(child)
        self._seqs[child_id] = child
        if not partial:
            return True
        dst = self._pop_free()
        child.blocks.append(dst)
        return parent.blocks[full], dst

    def free(self, seq_id: int) -> None:
        """Releases a sequence's blocks, last block first into the queue (so it is evicted first)."""
        seq = self._seqs.pop(seq_id)
        self._unref(reversed(seq.blocks))

    # ---- holds ----

    def hold(self, key: object, tokens: Sequence[int], salt: str = "", app: str = "") -> int:
        """Holds the cached blocks of the longest cached prefix of `tokens` (whole blocks, hashed with
        `salt` as a sequence of these tokens would be) under `key`, in place of what `key` held before;
        returns how many tokens that covers. Past max_held_blocks, holds are dropped (hold docs)."""
        old = self._holds.pop(key, None)
        blocks: list[int] = []
        if self.caching:
            seq = _Seq([], list(tokens), salt)
            self._hash_full_blocks(seq)
            bs = self.block_size
            for i, h in enumerate(seq.hashes):
                b = self._cached.get(h)
                if b is None or self.blocks[b].token_ids != tuple(tokens[i * bs : (i + 1) * bs]):
                    break
                blocks.append(b)
        for b in blocks:
            self._touch(b)
        if old is not None:
            self.held_blocks -= len(old.blocks)
            self._unref(reversed(old.blocks))
        if blocks:
            self._ticks += 1
            self._holds[key] = _Hold(blocks, app, self._ticks)
            self.held_blocks += len(blocks)
        while self.held_blocks > self.max_held_blocks or len(self._holds) > self.max_holds:
            per_app: dict[str, int] = {}
            for kept in self._holds.values():
                per_app[kept.app] = per_app.get(kept.app, 0) + len(kept.blocks)
            top = max(per_app, key=lambda a: per_app[a])
            self._drop(min((k for k, v in self._holds.items() if v.app == top), key=self._tick))
        return len(self._holds[key].blocks) * self.block_size if key in self._holds else 0

    def release(self, key: object) -> None:
        """Drops the hold under `key`, if any: its blocks stay cached until evicted as usual."""
        if key in self._holds:
            self._drop(key, counted=False)

    def held(self, key: object) -> int:
        """Tokens held under `key` (0 if none)."""
        h = self._holds.get(key)
        return len(h.blocks) * self.block_size if h is not None else 0

    def _tick(self, key: object) -> int:
        return self._holds[key].tick

    def _drop(self, key: object, counted: bool = True) -> None:
        h = self._holds.pop(key)
        self.held_blocks -= len(h.blocks)
        self.holds_dropped += counted
        self._unref(reversed(h.blocks))

    def _make_room(self, short: Callable[[], int], exclude: Collection[int] = ()) -> bool:
        """Whether `short()` blocks missing can be freed by dropping holds (the blocks in `exclude` do
        not count): then they are, the oldest first, until none is missing. Nothing is dropped when
        all of them would not be enough (a request that cannot be admitted yet leaves holds alone)."""
        if short() <= 0:
            return True
        if not self._holds:
            return False
        refs: dict[int, int] = {}
        for h in self._holds.values():
            for b in h.blocks:
                refs[b] = refs.get(b, 0) + 1
        gain = sum(1 for b, n in refs.items() if self.blocks[b].ref_count == n and b not in exclude)
        if gain < short():
            return False
        while short() > 0 and self._holds:
            self._drop(min(self._holds, key=self._tick))
        return short() <= 0

    # ---- internals ----

    def _unref(self, blocks: Iterable[int]) -> None:
        """One reference less on each block; a block no one references goes to the free queue (at its
        head if it holds nothing cached, else at its tail, the most recently used)."""
        for b in blocks:
            block = self.blocks[b]
            block.ref_count -= 1
            assert block.ref_count >= 0, f"double free of block {b}"
            if block.ref_count == 0:
                if block.hash is None:
                    self._free[b] = None
                    self._free.move_to_end(b, last=False)  # nothing cached: reuse it first
                else:
                    self._free[b] = None
                    self._cached_free[b] = (self._clock(), self.steps)
        self._bound_cached()

    def _bound_cached(self) -> None:
        """Evicts the least recently used unused cached blocks, as ghosts: beyond max_cached_blocks at
        once, beyond cache_target those unused for grace_s."""
        if len(self._cached_free) <= self.cache_target:
            return
        now = self._clock() if self.grace_s else 0.0
        wanted: Collection[int] | None = None  # asked for only when a block would go for the budget
        for b, (freed, step) in list(self._cached_free.items()):
            over = len(self._cached_free) - self.cache_target
            if over <= 0:
                break
            if len(self._cached_free) <= self.max_cached_blocks:  # the budget's bound, not the ceiling's
                if (self.grace_s and now - freed < self.grace_s) or self.steps - step < self.grace_steps:
                    break  # the least recently used is in its grace: so is every later one
                if wanted is None:
                    wanted = self.wanted()
                if self.blocks[b].hash in wanted:
                    continue  # a waiting prompt will hit it
            h = self.blocks[b].hash
            assert h is not None
            self._ghosts[h] = None
            self._evict(b)
            self._free.move_to_end(b, last=False)
        while len(self._ghosts) > max(self.max_cached_blocks, 1):
            self._ghosts.popitem(last=False)

    def _hash_full_blocks(self, seq: _Seq) -> None:
        bs = self.block_size
        while (seq.num_hashed + 1) * bs <= len(seq.tokens):
            i = seq.num_hashed
            salt = block_salt(i, seq.salt, seq.shared_salt, seq.shared_blocks)
            seq.last_hash = block_hash(seq.last_hash, seq.tokens[i * bs : (i + 1) * bs], salt)
            seq.hashes.append(seq.last_hash)
            seq.num_hashed += 1

    def _touch(self, b: int) -> None:
        block = self.blocks[b]
        if block.ref_count == 0:
            del self._free[b]
            self._cached_free.pop(b, None)
        block.ref_count += 1

    def _evict(self, b: int) -> None:
        self.uncache(b)
        self.evicted.append(b)

    def _pop_free(self) -> int:
        b, _ = self._free.popitem(last=False)
        block = self.blocks[b]
        if block.hash is not None:  # evict: this block's cached content is about to be overwritten
            self._evict(b)
        block.ref_count = 1
        return b

    def check_invariants(self) -> None:
        """Reference counts match the block tables; free blocks are exactly the unreferenced ones."""
        refs = [0] * len(self.blocks)
        for seq in self._seqs.values():
            want = self._blocks_for(max(len(seq.tokens), seq.reserved))
            assert len(seq.blocks) == want, "table does not cover the tokens"
            for b in seq.blocks:
                refs[b] += 1
        for kept in self._holds.values():
            for b in kept.blocks:
                refs[b] += 1
                assert self.blocks[b].hash is not None, f"held block {b} is not cached"
        assert self.held_blocks == sum(len(v.blocks) for v in self._holds.values()), "held count"
        assert self.held_blocks <= self.max_held_blocks, "more held blocks than allowed"
        assert len(self._holds) <= self.max_holds, "more holds than allowed"
        for block in self.blocks:
            assert block.ref_count == refs[block.block_id], f"block {block.block_id} ref count"
            assert (block.ref_count == 0) == (block.block_id in self._free), (
                f"block {block.block_id} free state"
            )
        for h, b in self._cached.items():
            assert self.blocks[b].hash == h, f"cache entry of block {b} is stale"
        cached_free = [b for b in self._free if self.blocks[b].hash is not None]
        assert set(cached_free) == set(self._cached_free), "cached free blocks out of step"
        assert len(self._cached_free) <= self.max_cached_blocks, "more cached blocks than allowed"
        assert self.cache_target <= self.max_cached_blocks, "a target above the ceiling"

"""The engine: one `step()` is schedule → move KV state → one llama_decode → sample → postprocess.

It runs on the single inference thread that owns the ModelRunner. llama.cpp seq ids are of two kinds:
the first `max_running` are slots of running sequences; the rest are *holders* that keep the cells of
cached prefix blocks alive after the sequence that computed them is gone (unified KV: a cell carries
a set of seq ids and lives while any is set). When the block manager publishes a full block, its
cells are tagged with a holder that has no cell at that block's positions yet (so a holder's cells
never collide); a new sequence that hits the block gets the holder's cells with llama_memory_seq_cp
(no copy); when the block manager evicts the block, its cells are removed from the holder. A block
that finds no holder with room is simply not cached. Swapped-out sequences keep their KV bytes in
host memory. Parallel samples (n > 1) are sequences admitted after the first one's prompt is
computed, so they take its blocks from the prefix cache and recompute only its last partial block.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np

from aicap.engine.block_manager import BlockManager
from aicap.engine.model_runner import DecodeError, ModelRunner
from aicap.engine.scheduler import Scheduler, SchedulerConfig
from aicap.engine.sequence import Sequence

log = logging.getLogger("aicap.engine")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    block_size: int = 8
    max_batch_tokens: int = 512
    max_running: int = 8
    swap_budget_tokens: int = 8192
    isolate_apps: bool = False  # salt the prefix cache per app (the daemon's default: on)
    prefix_caching: bool = True
    prefix_cache_tokens: int = 2048  # unused cached blocks kept, in tokens (each costs attention time)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Applied in llama.cpp's order: repeat penalty, top_k, top_p, min_p, temperature, then a draw
    (or argmax when temperature is 0)."""

    max_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: all tokens
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0  # 1: off
    repeat_last_n: int = 64  # tokens of prompt + output the penalty looks back on
    seed: int | None = None  # sample i of n draws with seed + i
    ignore_eos: bool = False
    n: int = 1  # parallel samples; they share the prompt's KV blocks
    logprobs: bool = False


@dataclass(frozen=True, slots=True)
class TokenEvent:
    seq_id: int  # the request
    token: int
    finished: bool  # this sample is done (the request is done when all n samples are)
    index: int = 0  # which of the request's n samples
    logprob: float | None = None  # when asked for: log-probability under the model's distribution
    finish_reason: str | None = None  # "stop" (end-of-generation token) or "length"
    cached_tokens: int = 0  # prompt tokens this sample took from the prefix cache


@dataclass(frozen=True, slots=True)
class EngineStats:
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0
    kv_block_size: int = 0
    kv_usage: float = 0.0
    kv_waste: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    preemptions_swap: int = 0
    preemptions_recompute: int = 0
    requests_waiting: int = 0
    requests_running: int = 0
    requests_swapped: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    requests_finished: int = 0


class LLMEngine:
    def __init__(self, runner: ModelRunner, config: EngineConfig) -> None:
        assert config.max_batch_tokens <= runner.config.n_batch
        self.runner = runner
        self.config = config
        n_slots = min(config.max_running, runner.config.n_seq_max)
        self._holders = list(range(n_slots, runner.config.n_seq_max))
        caching = config.prefix_caching and bool(self._holders) and runner.config.kv_unified
        self.blocks = BlockManager(
            runner.config.n_ctx // config.block_size,
            config.block_size,
            caching,
            max_cached_blocks=config.prefix_cache_tokens // config.block_size,
        )
        self.scheduler = Scheduler(
            SchedulerConfig(config.max_batch_tokens, n_slots, config.swap_budget_tokens), self.blocks
        )
        self._free_slots = list(range(n_slots))[::-1]
        self._slots: dict[int, int] = {}  # seq id → llama.cpp seq id
        self._holder_of: dict[int, tuple[int, int]] = {}  # cached block → (holder, index in chain)
        self._holder_rows: dict[int, set[int]] = {h: set() for h in self._holders}  # indices held
        self._swapped: dict[int, bytes] = {}
        self._seqs: dict[int, Sequence] = {}
        self._params: dict[int, SamplingParams] = {}
        self._rngs: dict[int, np.random.Generator] = {}
        self._request_of: dict[int, tuple[int, int]] = {}  # seq id → (request id, sample index)
        self._samples: dict[int, list[int]] = {}  # request id → its live seq ids
        self._ids = 0
        self._prompt_tokens = 0
        self._generated = 0
        self._finished = 0
        self._waste_cells = 0
        self._reserved_cells = 0
        # tests set a list here to receive (request id, sample index, logits) of every sampled token
        self.trace: list[tuple[int, int, np.ndarray]] | None = None

    # ---- requests ----

    def add(
        self,
        request_id: int,
        prompt: list[int],
        params: SamplingParams,
        app: str = "",
        shared: tuple[str, int] = ("", 0),
    ) -> None:
        """Queues a request of `params.n` samples; refuses one that could never fit in the KV cache.

        `shared` is (salt, tokens) of a declared shared prefix the prompt starts with: its blocks are
        cached under that salt, shared with every app that declares the same, even when apps are
        isolated."""
        if not prompt:
            raise ValueError("empty prompt")
        if request_id in self._samples:
            raise ValueError(f"request {request_id} exists")
        if params.n < 1:
            raise ValueError("n must be at least 1")
        needed = -(-(len(prompt) + params.max_tokens) // self.config.block_size)
        if needed > len(self.blocks.blocks):
            raise ValueError(
                f"prompt ({len(prompt)} tokens) plus max_tokens ({params.max_tokens}) exceeds the context "
                f"({self.runner.config.n_ctx} tokens)"
            )
        bad = [t for t in prompt if not 0 <= t < self.runner.n_vocab]
        if bad:
            raise ValueError(f"token {bad[0]} is not in the vocabulary (0-{self.runner.n_vocab - 1})")
        stop = frozenset() if params.ignore_eos else self.runner.eog
        salt = app if self.config.isolate_apps else ""
        shared_salt, shared_tokens = shared if self.config.isolate_apps else ("", 0)
        base_seed = params.seed if params.seed is not None else random.getrandbits(63)
        first: Sequence | None = None
        self._samples[request_id] = []
        for index in range(params.n):
            self._ids += 1
            seq = Sequence(
                self._ids,
                app,
                list(prompt),
                params.max_tokens,
                salt,
                shared_salt,
                shared_tokens,
                stop,
                after=first,
            )
            first = first or seq
            self._seqs[seq.seq_id] = seq
            self._params[seq.seq_id] = params
            self._rngs[seq.seq_id] = np.random.default_rng(base_seed + index)
            self._request_of[seq.seq_id] = (request_id, index)
            self._samples[request_id].append(seq.seq_id)
            self.scheduler.add(seq)
        self._prompt_tokens += len(prompt)

    def abort(self, request_id: int) -> None:
        """Stops every sample of a request and frees their KV."""
        for seq_id in list(self._samples.get(request_id, ())):
            self._end(seq_id, aborted=True)

    def stop(self, request_id: int, index: int) -> None:
        """Stops one sample (its caller found a stop string)."""
        for seq_id in list(self._samples.get(request_id, ())):
            if self._request_of[seq_id][1] == index:
                self._end(seq_id, aborted=True)

    def has_request(self, request_id: int) -> bool:
        return request_id in self._samples

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def stats(self) -> EngineStats:
        b, sch = self.blocks, self.scheduler
        used = len(b.blocks) - b.num_free_blocks
        return EngineStats(
            kv_blocks_total=len(b.blocks),
            kv_blocks_used=used,
            kv_block_size=b.block_size,
            kv_usage=b.usage,
            kv_waste=self._waste_cells / self._reserved_cells if self._reserved_cells else 0.0,
            prefix_cache_queries=b.prefix_queries,
            prefix_cache_hits=b.prefix_hits,
            preemptions_swap=sch.preemptions["swap"],
            preemptions_recompute=sch.preemptions["recompute"],
            requests_waiting=len(sch.waiting),
            requests_running=len(sch.running),
            requests_swapped=len(sch.swapped),
            prompt_tokens_total=self._prompt_tokens,
            generation_tokens_total=self._generated,
            requests_finished=self._finished,
        )

    # ---- one step ----

    def step(self) -> list[TokenEvent]:
        batch = self.scheduler.schedule()
        self._apply_evictions()
        for seq in batch.swap_out:
            self._swapped[seq.seq_id] = self.runner.save(self._slots[seq.seq_id])
            self._release(seq.seq_id)
        for seq in batch.recompute:
            self._release(seq.seq_id)
        for seq in batch.swap_in:
            self.runner.restore(self._slot(seq.seq_id), self._swapped.pop(seq.seq_id))
        work = []
        for seq, n in batch.scheduled:
            if seq.seq_id not in self._slots and seq.num_computed:
                self._copy_cached_prefix(seq)
            start = seq.num_computed
            work.append((self._slot(seq.seq_id), seq.tokens[start : start + n], start))
        if not work:
            return []
        used = len(self.blocks.blocks) - self.blocks.num_free_blocks
        self._reserved_cells += used * self.blocks.block_size
        self._waste_cells += self.blocks.unfilled_slots()
        try:
            logits = self.runner.decode(work)
        except DecodeError as exc:
            if exc.code != 1:
                raise
            self._no_kv_slot()
            return []
        sampled: dict[int, tuple[int, float | None]] = {
            seq.seq_id: self._sample(seq, logits[self._slots[seq.seq_id]])
            for seq, n in batch.scheduled
            if seq.num_computed + n == seq.num_tokens
        }
        if self.trace is not None:
            for seq_id in sampled:
                self.trace.append((*self._request_of[seq_id], logits[self._slots[seq_id]]))
        done = self.scheduler.postprocess(batch, {k: v[0] for k, v in sampled.items()})
        finished = {s.seq_id for s in done}
        self._keep_cached_cells()
        events = []
        for seq_id, (tok, logprob) in sampled.items():
            seq = self._seqs[seq_id]
            request_id, index = self._request_of[seq_id]
            reason = None
            if seq_id in finished:
                reason = "stop" if seq.stopped else "length"
                self._end(seq_id)
            cached = seq.cached_tokens or 0
            events.append(TokenEvent(request_id, tok, reason is not None, index, logprob, reason, cached))
        self._generated += len(sampled)
        return events

    # ---- internals ----

    def _end(self, seq_id: int, aborted: bool = False) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            return
        if aborted:
            self.scheduler.abort(seq)
            self._apply_evictions()
        self._release(seq_id)
        self._swapped.pop(seq_id, None)
        self._params.pop(seq_id, None)
        self._rngs.pop(seq_id, None)
        request_id, _ = self._request_of.pop(seq_id)
        samples = self._samples[request_id]
        samples.remove(seq_id)
        if not samples:
            del self._samples[request_id]
            self._finished += not aborted
        for other in samples:  # samples waiting for this one's prompt wait no longer
            s = self._seqs[other]
            if s.after is seq:
                s.after = None

    def _slot(self, seq_id: int) -> int:
        slot = self._slots.get(seq_id)
        if slot is None:
            slot = self._slots[seq_id] = self._free_slots.pop()
        return slot

    def _release(self, seq_id: int) -> None:
        slot = self._slots.pop(seq_id, None)
        if slot is not None:
            self.runner.drop(slot)
            self._free_slots.append(slot)

    def _copy_cached_prefix(self, seq: Sequence) -> None:
        """Gives a newly admitted sequence the cells of its cached prefix blocks."""
        bs = self.blocks.block_size
        slot = self._slot(seq.seq_id)
        for i, b in enumerate(self.blocks.block_table(seq.seq_id)[: seq.num_computed // bs]):
            holder, index = self._holder_of[b]
            assert index == i
            self.runner.share_range(holder, slot, i * bs, (i + 1) * bs)

    def _keep_cached_cells(self) -> None:
        """Tags the cells of newly cached blocks with a holder, or uncaches them if none has room."""
        bs = self.blocks.block_size
        for b, seq_id, i in self.blocks.newly_cached:
            holder = next((h for h in self._holders if i not in self._holder_rows[h]), None)
            if holder is None or seq_id not in self._slots:
                self.blocks.uncache(b)
                continue
            self.runner.share_range(self._slots[seq_id], holder, i * bs, (i + 1) * bs)
            self._holder_rows[holder].add(i)
            self._holder_of[b] = (holder, i)
        self.blocks.newly_cached.clear()

    def _apply_evictions(self) -> None:
        bs = self.blocks.block_size
        for b in self.blocks.evicted:
            held = self._holder_of.pop(b, None)
            if held is not None:
                holder, i = held
                self.runner.drop_range(holder, i * bs, (i + 1) * bs)
                self._holder_rows[holder].discard(i)
        self.blocks.evicted.clear()

    def _no_kv_slot(self) -> None:
        """llama_decode found no room although the blocks said there was (fragmented cells): free
        the cached cells, and if nothing was cached, recompute the newest sequence later."""
        log.warning("llama_decode found no KV slot; evicting the prefix cache")
        if self.blocks.evict_unused() == 0:
            seq = self.scheduler.preempt_newest()
            if seq is not None:
                self._release(seq.seq_id)
        self._apply_evictions()

    def _sample(self, seq: Sequence, logits: np.ndarray) -> tuple[int, float | None]:
        p = self._params[seq.seq_id]
        raw = logits
        if p.repeat_penalty != 1.0 and p.repeat_last_n != 0:
            history = seq.tokens[-p.repeat_last_n :] if p.repeat_last_n > 0 else seq.tokens
            recent = np.unique(np.asarray(history))
            logits = logits.copy()
            vals = logits[recent]
            logits[recent] = np.where(vals > 0, vals / p.repeat_penalty, vals * p.repeat_penalty)
        greedy = p.temperature <= 0
        tok = int(logits.argmax()) if greedy else self._draw(p, logits, self._rngs[seq.seq_id])
        logprob = None
        if p.logprobs:
            m = float(raw.max())
            logprob = float(raw[tok] - m - np.log(np.exp(raw - m, dtype=np.float64).sum()))
        return tok, logprob

    @staticmethod
    def _draw(p: SamplingParams, logits: np.ndarray, rng: np.random.Generator) -> int:
        """top_k, top_p, min_p on the (penalized) distribution, then temperature, then a draw."""
        if 0 < p.top_k < len(logits):
            cand = np.argpartition(logits, -p.top_k)[-p.top_k :]
        else:
            cand = np.arange(len(logits))
        cl = logits[cand].astype(np.float64)
        order = np.argsort(-cl, kind="stable")
        cand, cl = cand[order], cl[order]
        probs = np.exp(cl - cl[0])
        probs /= probs.sum()
        keep = len(cand)
        if p.top_p < 1.0:
            keep = min(keep, int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1)
        if p.min_p > 0.0:
            keep = min(keep, max(1, int(np.count_nonzero(probs >= p.min_p * probs[0]))))
        cand, cl = cand[:keep], cl[:keep]
        scaled = (cl - cl[0]) / p.temperature
        probs = np.exp(scaled)
        probs /= probs.sum()
        return int(cand[rng.choice(len(cand), p=probs)])

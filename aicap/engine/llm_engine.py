"""The engine: one `step()` is schedule → move KV state → one llama_decode → sample → postprocess.

It runs on the single inference thread that owns the ModelRunner. Each running sequence holds a
llama.cpp slot (seq id); swapped-out sequences keep their KV bytes in host memory. Prefix sharing
across sequences is not wired to llama.cpp cells yet, so the block manager runs without it here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aicap.engine.block_manager import BlockManager
from aicap.engine.model_runner import ModelRunner
from aicap.engine.scheduler import Scheduler, SchedulerConfig
from aicap.engine.sequence import Sequence


@dataclass(frozen=True, slots=True)
class EngineConfig:
    block_size: int = 16
    max_batch_tokens: int = 512
    max_running: int = 8
    swap_budget_tokens: int = 8192


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
        self.blocks = BlockManager(runner.config.n_ctx // config.block_size, config.block_size, False)
        self.scheduler = Scheduler(
            SchedulerConfig(
                config.max_batch_tokens,
                min(config.max_running, runner.config.n_seq_max),
                config.swap_budget_tokens,
            ),
            self.blocks,
        )
        self._free_slots = list(range(runner.config.n_seq_max))
        self._slots: dict[int, int] = {}
        self._swapped: dict[int, bytes] = {}
        self._params: dict[int, SamplingParams] = {}
        self._rngs: dict[int, np.random.Generator] = {}
        self._seqs: dict[int, Sequence] = {}

    def add(self, seq_id: int, prompt: list[int], params: SamplingParams, app: str = "") -> None:
        """Queues a request; refuses one that could never fit in the KV cache."""
        if not prompt:
            raise ValueError("empty prompt")
        needed = -(-(len(prompt) + params.max_tokens) // self.config.block_size)
        if needed > len(self.blocks.blocks):
            raise ValueError(
                f"prompt ({len(prompt)} tokens) plus max_tokens ({params.max_tokens}) exceeds the context "
                f"({self.runner.config.n_ctx} tokens)"
            )
        seq = Sequence(
            seq_id, app, list(prompt), params.max_tokens, eos=None if params.ignore_eos else self.runner.eos
        )
        self._params[seq_id] = params
        self._rngs[seq_id] = np.random.default_rng(params.seed)
        self._seqs[seq_id] = seq
        self.scheduler.add(seq)

    def abort(self, seq_id: int) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is not None:
            self.scheduler.abort(seq)
            self._release(seq_id)
            self._swapped.pop(seq_id, None)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[TokenEvent]:
        batch = self.scheduler.schedule()
        for seq in batch.swap_out:
            self._swapped[seq.seq_id] = self.runner.save(self._slots[seq.seq_id])
            self._release(seq.seq_id)
        for seq in batch.recompute:
            self._release(seq.seq_id)
        for seq in batch.swap_in:
            self.runner.restore(self._slot(seq.seq_id), self._swapped.pop(seq.seq_id))
        work = []
        for seq, n in batch.scheduled:
            start = seq.num_computed
            work.append((self._slot(seq.seq_id), seq.tokens[start : start + n], start))
        logits = self.runner.decode(work) if work else {}
        sampled = {
            seq.seq_id: self._sample(seq.seq_id, logits[self._slots[seq.seq_id]])
            for seq, n in batch.scheduled
            if seq.num_computed + n == seq.num_tokens
        }
        finished = {s.seq_id for s in self.scheduler.postprocess(batch, sampled)}
        for seq_id in finished:
            self._release(seq_id)
            self._seqs.pop(seq_id, None)
            self._params.pop(seq_id, None)
            self._rngs.pop(seq_id, None)
        return [TokenEvent(seq_id, tok, seq_id in finished) for seq_id, tok in sampled.items()]

    # ---- internals ----

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

    def _sample(self, seq_id: int, logits: np.ndarray) -> int:
        p = self._params[seq_id]
        if p.temperature <= 0:
            return int(logits.argmax())
        scaled = logits.astype(np.float64) / p.temperature
        if p.top_k > 0:
            kth = np.partition(scaled, -p.top_k)[-p.top_k]
            scaled[scaled < kth] = -np.inf
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs)
            keep = np.cumsum(probs[order]) - probs[order] < p.top_p
            mask = np.zeros_like(probs, dtype=bool)
            mask[order[keep]] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        return int(self._rngs[seq_id].choice(len(probs), p=probs))

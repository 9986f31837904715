"""The engine: one `step()` is schedule → cells → decode → sample → postprocess.

It runs on the single inference thread that owns the ModelRunner. The scheduler picks the batch and
the KV blocks (block_manager.py), `Cells` moves llama.cpp's KV state to match (swap, recompute,
cached prefixes: cells.py), one llama_decode computes the batch, each sequence that reached its end
draws a token (sampler.py), and postprocess records it and ends finished samples. Parallel samples
(n > 1) are sequences admitted after the first one's prompt is computed, so they take its blocks from
the prefix cache and recompute only its last partial block.

KV moves between engines (devices) as a KvState (kv_state.py): `prefill` computes a prompt but its
last token and exports the KV; `add(..., imported=state)` restores it into a new request's first
cells and computes only the rest.

With a remote store (remote_swap.py), sequences preempted beyond the swap budget are kept on a paired
device instead of recomputed: `step()` queues the moves (`take_moves`), which the AsyncEngine makes on
the event loop and answers with `kept` and `returned`.

Structured output: a request may come with an llguidance matcher (`add(..., matcher=)`); each of its
samples gets its own copy, and `_sample` masks their logits to what the grammar allows (grammar.py).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aicap.config import EngineConfig
from aicap.engine.block_manager import BlockManager
from aicap.engine.cache_budget import GRACE_S, GRACE_STEPS, START_TOKENS, CacheBudget
from aicap.engine.cells import Cells
from aicap.engine.grammar import Grammar
from aicap.engine.model_runner import DecodeError, ModelRunner
from aicap.engine.remote_swap import Drop, Move, RemoteSwap
from aicap.engine.sampler import SamplingParams, sample
from aicap.engine.scheduler import Batch, Scheduler
from aicap.engine.sequence import Away, Sequence, Status
from aicap.engine.speculation import Drafter
from aicap.engine.speed import SpeedMeter
from aicap.errors import FailedPrecondition, InvalidArgument, NotFound
from aicap.kv_state import KvState

if TYPE_CHECKING:
    from llguidance import LLMatcher

log = logging.getLogger("aicap.engine")

# calibrate(): a prompt this long (speed.py counts one of PREFILL_MIN_TOKENS or more), of this text
CALIBRATION_TOKENS = 64
CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog while the band plays on. "
# a drafted token's cost in prompt tokens' until speed.py has measured one: a small batch pays more a
# token than a prompt chunk does (1.4x on the Q8_0 copy here, 1.9x on the Q4_1 weights solo.py decodes on)
DRAFT_COST_START = 1.5

# of one step: each sequence that sampled, with its (token, logprob)s: one, or with a draft, the accepted
# drafted tokens and the one sampled after them
Sampled = list[tuple[Sequence, list[tuple[int, float | None]]]]


@dataclass(frozen=True, slots=True)
class TokenEvent:
    seq_id: int  # the request
    token: int
    finished: bool  # this sample is done (the request is done when all n samples are)
    index: int = 0  # which of the request's n samples
    logprob: float | None = None  # when asked for: log-probability under the model's distribution
    # "stop" (end-of-generation token, or the end of its grammar), "length" or "prefilled"
    finish_reason: str | None = None
    cached_tokens: int = 0  # prompt tokens this sample took from the prefix cache
    state: KvState | None = None  # a prefill's result (its only event: token -1, finish_reason "prefilled")


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
    preemptions_remote: int = 0  # sequences swapped out to a remote store
    remote_kv_failures: int = 0  # remote puts and gets that failed (those sequences were recomputed)
    remote_kv_bytes_sent: int = 0
    remote_kv_bytes_received: int = 0
    spec_draft_tokens: int = 0  # speculation: tokens drafted, and of those accepted (speculation.py)
    spec_accepted_tokens: int = 0
    prefill_tokens_per_s: float = 0.0  # this device's speed, from recent steps (speed.py)
    decode_step_s: float = 0.0
    kv_blocks_held: int = 0  # held for sessions and pinned contexts (BlockManager.hold)
    holds_dropped: int = 0
    prefix_cache_unused_tokens: int = 0  # in cached blocks no sequence uses now
    prefix_cache_target_tokens: int = 0  # how many of those are kept now (cache_budget.py)


def _generator(seed: int, skip: int) -> np.random.Generator:
    """Sample's random stream: seeded, `skip` draws already made (each sampled token draws one 64-bit
    value: Generator.choice with p takes one uniform double), so a generation continued on another
    device or engine draws what it would have drawn where it began."""
    bits = np.random.PCG64(seed)  # default_rng's generator
    if skip:
        bits.advance(skip)
    return np.random.Generator(bits)


class LLMEngine:
    def __init__(self, runner: ModelRunner, config: EngineConfig) -> None:
        assert config.max_batch_tokens <= runner.config.n_batch
        self.runner = runner
        self.config = config
        n_seq_max = runner.config.n_seq_max
        n_slots = min(config.max_running, n_seq_max)
        caching = config.prefix_caching and n_slots < n_seq_max and runner.config.kv_unified
        self.blocks = BlockManager(
            runner.config.n_ctx // config.block_size,
            config.block_size,
            caching,
            max_cached_blocks=config.prefix_cache_tokens // config.block_size,
            max_held_blocks=config.held_cache_tokens // config.block_size,
            # each hold keeps one holder's cells at each of its blocks' positions (cells.py): half the
            # holders stay for other cached prefixes
            max_holds=max(1, (n_seq_max - n_slots) // 2),
            grace_s=GRACE_S if config.prefix_cache_adaptive else 0.0,
            grace_steps=GRACE_STEPS if config.prefix_cache_adaptive else 0,
        )
        self.scheduler = Scheduler(dataclasses.replace(config, max_running=n_slots), self.blocks)
        self.cells = Cells(runner, self.blocks, n_slots)
        # how many unused cached blocks to keep (None: all max_cached_blocks, always)
        self.cache_budget = None
        if caching and config.prefix_cache_adaptive:
            ceiling = self.blocks.max_cached_blocks
            start = min(ceiling, START_TOKENS // config.block_size)
            self.cache_budget = CacheBudget(ceiling, config.block_size, start)
            self.blocks.set_cache_target(start)
        self._reused_seen = 0  # blocks.reused_tokens the budget has been told of
        self.remote = RemoteSwap()
        self.grammar = Grammar(runner.n_vocab, runner.config.n_threads)
        self.speed = SpeedMeter()  # this device's prefill speed and decode step, from the steps
        self.scheduler.draft_cost = self._draft_cost
        self._samples: dict[int, list[Sequence]] = {}  # request id → its live samples
        self._ids = 0
        self._prompt_tokens = 0
        self._generated = 0
        self._finished = 0
        self._probes: set[int] = set()  # requests that measure speed (SpeedMeter): not in the counters
        self._drafted = 0  # speculation: tokens drafted, and of those accepted
        self._accepted = 0
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
        imported: KvState | None = None,
        prefill_only: bool = False,
        may_leave: bool = False,
        matcher: LLMatcher | None = None,
        probe: bool = False,
    ) -> None:
        """Queues a request of `params.n` samples; refuses one that could never fit in the KV cache.

        `shared` is (salt, tokens) of a declared shared prefix the prompt starts with: its blocks are
        cached under that salt, shared with every app that declares the same, even when apps are
        isolated. `imported` is the KV of the prompt's first tokens, computed elsewhere (`prefill`
        on another engine): FailedPrecondition if it is of another model file or cache type,
        InvalidArgument unless its tokens begin the prompt and leave at least one to compute.
        Either refusal changes nothing. `prefill_only`: see `prefill`. `may_leave`: its KV may be kept
        by the remote store when it is preempted beyond the swap budget (its prompt may leave the device).
        `matcher`: structured output; sample 0 takes it, the others a copy each. `probe`: the service's
        speed probe, whose tokens and end the request counters leave out."""
        if not prompt:
            raise ValueError("empty prompt")
        # a constrained sample's tokens pass its grammar one at a time: it does not speculate
        speculates = bool(self.config.spec_draft_max) and matcher is None and not prefill_only
        if imported is not None:
            imported.check(self.runner.digest, self.runner.config.cache_type)
            k = len(imported.tokens)
            if k >= len(prompt) or tuple(prompt[:k]) != imported.tokens:
                raise InvalidArgument(
                    f"the imported KV state's {k} tokens are not a proper prefix of the "
                    f"{len(prompt)}-token prompt"
                )
        if prefill_only and params.n != 1:
            raise ValueError("a prefill has one sample")
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
        samples = self._samples[request_id] = []
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
                params=params,
                rng=_generator(base_seed + index, params.skip_draws if params.temperature > 0 else 0),
                request_id=request_id,
                index=index,
                prefill_only=prefill_only,
                imported=imported if first is None else None,  # the others hit the first's blocks
                may_leave=may_leave,
                matcher=None if matcher is None else matcher if first is None else matcher.deep_copy(),
                drafter=Drafter() if speculates else None,
            )
            first = first or seq
            samples.append(seq)
            self.scheduler.add(seq)
        if probe:
            self._probes.add(request_id)
        else:
            self._prompt_tokens += len(prompt)

    def prefill(
        self, request_id: int, tokens: list[int], app: str = "", shared: tuple[str, int] = ("", 0)
    ) -> None:
        """Queues a prefill-only request: it computes `tokens` but the last (batched with the running
        sequences, using the prefix cache) and ends with one event whose `state` holds their KV, to
        be `imported` by a request of these tokens, on this engine or another of the same model and
        cache type. The last token is left to the importer, whose first decode yields the logits
        it samples from (as MLC's microserving splits prefill from decode)."""
        if len(tokens) < 2:
            raise InvalidArgument("a prefill needs at least 2 tokens (the last is left to the importer)")
        self.add(request_id, tokens[:-1], SamplingParams(max_tokens=0), app, shared, prefill_only=True)

    def export(self, request_id: int) -> tuple[KvState, list[int]]:
        """Hands a single-sample request over to another engine (a planned migration) and ends it
        here, freeing its KV: returns the KV state of every token computed so far (all but the last
        sampled one, between steps) and all its tokens, prompt and output. The receiver continues it
        with add(tokens, params with max_tokens less the output, imported=state): its first decode
        computes the last sampled token. (A seeded draw does not continue the same random stream.)

        NotFound if the request has ended; InvalidArgument for a prefill or n > 1;
        FailedPrecondition while it has no KV (waiting to start or for a recompute): send its tokens."""
        samples = self._samples.get(request_id)
        if not samples:
            raise NotFound(f"request {request_id} is not in the engine (it ended)")
        seq = samples[0]
        if seq.prefill_only or seq.params.n != 1:
            raise InvalidArgument("only a generation of one sample can be exported")
        if seq.status not in (Status.RUNNING, Status.SWAPPED) or seq.num_computed == 0:
            raise FailedPrecondition(f"request {request_id} has no KV yet; send its tokens instead")
        if seq.away in (Away.AWAY, Away.FETCHING):
            raise FailedPrecondition(f"request {request_id} has its KV on another device; send its tokens")
        state = self._state(seq, seq.num_computed)
        tokens = seq.tokens
        self._end(seq, aborted=True)
        return state, tokens

    def abort(self, request_id: int) -> None:
        """Stops every sample of a request and frees their KV."""
        for seq in list(self._samples.get(request_id, ())):
            self._end(seq, aborted=True)

    def stop(self, request_id: int, index: int) -> None:
        """Stops one sample (its caller found a stop string)."""
        for seq in list(self._samples.get(request_id, ())):
            if seq.index == index:
                self._end(seq, aborted=True)

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
            preemptions_remote=sch.preemptions["remote"],
            remote_kv_failures=self.remote.failures,
            remote_kv_bytes_sent=self.remote.bytes_sent,
            remote_kv_bytes_received=self.remote.bytes_received,
            spec_draft_tokens=self._drafted,
            spec_accepted_tokens=self._accepted,
            prefill_tokens_per_s=self.speed.figures.prefill_tokens_per_s,
            decode_step_s=self.speed.figures.decode_step_s,
            kv_blocks_held=b.held_blocks,
            holds_dropped=b.holds_dropped,
            prefix_cache_unused_tokens=b.num_unused_cached * b.block_size,
            prefix_cache_target_tokens=b.cache_target * b.block_size,
        )

    def hold(self, key: object, tokens: list[int], app: str = "") -> int:
        """Keeps the cached blocks of `tokens` (as `app`'s prompt would hit them) until `release(key)`
        or memory pressure (BlockManager.hold): a session's transcript, a pinned context. Returns the
        tokens held."""
        held = self.blocks.hold(key, tokens, app if self.config.isolate_apps else "", app)
        self.cells.apply_evictions()  # the blocks a replaced or dropped hold left may have gone
        return held

    def release(self, key: object) -> None:
        self.blocks.release(key)
        self.cells.apply_evictions()

    # ---- the remote store (remote_swap.py) ----

    def calibrate(self) -> None:
        """Measures the device's figures (speed.py) before the first request: a prompt of
        `CALIBRATION_TOKENS` tokens, decode steps of it alone and one verifying a draft, in slot 0,
        forgotten after. Until a decode step of one or two sequences has been seen, no sequence drafts
        (llm_engine._draft_cost) and placement has nothing to compare: 8 chats that began together
        never drafted, while the same chats begun one by one did, and ran 1.3x as fast."""
        tokens = (self.runner.tokenize(CALIBRATION_TEXT, add_special=False) * CALIBRATION_TOKENS)[
            :CALIBRATION_TOKENS
        ]
        # (tokens, logits wanted, of them drafted, lone): the prompt, three decodes, a draft verified
        steps = [(tokens, 1, 0, False)] + [([tokens[k]], 1, 0, True) for k in range(3)]
        steps.append((tokens[3:8], 5, 4, True))
        pos = 0
        try:
            for chunk, want, drafted, lone in steps:
                t0 = time.perf_counter()
                self.runner.decode([(0, chunk, pos, want)], lone=lone)
                self.speed.observe(len(chunk), 1, time.perf_counter() - t0, drafted=drafted)
                pos += len(chunk)
        finally:
            self.runner.drop(0)

    def use_remote_store(self) -> None:
        """A remote store takes the sequences the swap budget cannot (see `take_moves`)."""
        self.scheduler.remote = True

    def take_moves(self) -> list[Move]:
        """The moves to the remote store queued since the last call, for the event loop to make."""
        return self.remote.take_moves()

    def kept(self, ticket: int, handle: object | None) -> None:
        """The store kept a state shipped under `ticket` (`handle`), or failed to (None): the saved
        bytes go, or the sequence is recomputed."""
        seq = self.remote.settle(ticket)
        if seq is None:  # ended, or swapped in from here meanwhile
            if handle is not None:
                self.remote.moves.append(Drop(handle))
            return
        assert seq.status == Status.SWAPPED and seq.away is Away.SHIPPING
        if handle is None:
            self._lost(seq)
            return
        self.remote.bytes_sent += self.cells.drop_saved(seq.seq_id)
        self.remote.away(seq, handle)
        seq.away = Away.AWAY

    def returned(self, ticket: int, state: KvState | None) -> None:
        """A state asked back under `ticket` arrived (None: the store failed): the sequence swaps in
        from it, or is recomputed. A state that is not the sequence's own is refused."""
        seq = self.remote.settle(ticket)
        if seq is None:  # it ended meanwhile; the store forgot the state when it gave it back
            return
        assert seq.status == Status.SWAPPED and seq.away is Away.FETCHING
        want = tuple(seq.span(0, seq.num_computed))
        digest, kind = self.runner.digest, self.runner.config.cache_type
        if state is None or (state.model_digest, state.cache_type, state.tokens) != (digest, kind, want):
            if state is not None:
                log.warning("a remote store returned another KV state than it was given; recomputing")
            self._lost(seq)
            return
        self.remote.bytes_received += len(state.data)
        self.cells.keep_saved(seq.seq_id, state.data)
        self.scheduler.came_back(seq)

    def _lost(self, seq: Sequence) -> None:
        self.remote.failures += 1
        self.cells.drop_saved(seq.seq_id)
        self.scheduler.lost(seq)

    def _ship(self, batch: Batch) -> None:
        """Queues the step's moves: states just saved for the store, states to be asked back; a state
        still shipping whose sequence swapped in from here is not wanted there."""
        for seq in batch.swap_in:
            self.remote.forget(seq)
        for seq in batch.ship:
            self.remote.put(seq, self._state(seq, seq.num_computed))
        for seq in batch.fetch:
            self.remote.get(seq)

    def _draft_cost(self, tokens: int) -> float:
        """The share of a step of `tokens` tokens that one more (drafted) token costs: t / (T1 + (B-1) t)
        times B (speculation.py), with t a drafted token's measured cost (speed.py; until measured,
        DRAFT_COST_START times a prompt token's), or the configured figure."""
        if self.config.spec_token_cost is not None:
            return self.config.spec_token_cost
        s = self.speed.figures
        if s.prefill_tokens_per_s <= 0 or s.decode_step_s <= 0:
            return 1.0  # not measured yet: no drafts
        prompt_token = 1.0 / s.prefill_tokens_per_s  # a drafted token costs at least that
        t = max(s.draft_token_s, prompt_token) if s.draft_token_s else DRAFT_COST_START * prompt_token
        b = max(tokens, 1)
        return b * t / (s.decode_step_s + (b - 1) * t)

    @staticmethod
    def _lone(batch: Batch) -> bool:
        """Whether the step is one sequence decoding (its prompt computed): what solo.py takes."""
        if len(batch.scheduled) != 1:
            return False
        seq, _ = batch.scheduled[0]
        return seq.num_computed >= len(seq.prompt) and not seq.prefill_only

    # ---- one step ----

    def step(self) -> list[TokenEvent]:
        self.blocks.tick()
        batch = self.scheduler.schedule()
        work = self.cells.prepare(batch)
        self._ship(batch)
        if not work:
            return []
        self._count_waste()
        t0 = time.perf_counter()
        try:
            logits = self.runner.decode(work, lone=self._lone(batch))
        except DecodeError as exc:
            if exc.code != 1:
                raise
            self._no_kv_slot()
            return []
        sampled = self._sample(batch, logits)
        rows = sum(len(w[1]) for w in work)
        drafted = sum(len(seq.draft) for seq, _ in batch.scheduled)
        self.speed.observe(rows, len(work), time.perf_counter() - t0, drafted=drafted)
        self._size_cache(len(work))
        return self._postprocess(batch, sampled)

    def _sample(self, batch: Batch, logits: dict[int, np.ndarray]) -> Sampled:
        """Tokens for each scheduled sequence whose every token is now computed; a constrained one's
        among those its grammar allows (their masks computed together), which advances its matcher;
        one with a draft verified position by position (`_verify`)."""
        ready = [
            seq
            for seq, n in batch.scheduled
            if seq.num_computed + n - len(seq.draft) == seq.num_tokens and not seq.prefill_only
        ]
        constrained = [seq for seq in ready if seq.matcher is not None]
        masks = dict(zip(constrained, self.grammar.masks(constrained), strict=True)) if constrained else {}
        out: Sampled = []
        for seq in ready:
            rows = logits[self.cells.slot(seq.seq_id)]
            if seq.draft:
                out.append((seq, self._verify(seq, rows)))
                continue
            lg = rows[-1]
            allowed = masks.get(seq)
            if allowed is not None and not allowed.any():  # a matcher in an error state
                log.warning("structured output allows no token: %s", seq.matcher and seq.matcher.get_error())
                tok, logprob, seq.ended = self.runner.eos, None, True
            else:
                tok, logprob = sample(seq, lg, allowed)
                if allowed is not None:
                    self.grammar.advance(seq, tok)
            out.append((seq, [(tok, logprob)]))
            if self.trace is not None:
                self.trace.append((seq.request_id, seq.index, lg))
        return out

    def _verify(self, seq: Sequence, rows: np.ndarray) -> list[tuple[int, float | None]]:
        """Samples after the sequence's last token and after each drafted one, as plain decoding
        would (penalties see the tokens accepted so far, the random stream draws once a token), while
        each sampled token is the drafted one; the first that differs, or the one after the whole
        draft, ends it. Stops at an end-of-generation token."""
        draft, got = seq.draft, []
        try:
            for j, lg in enumerate(rows):
                tok, logprob = sample(seq, lg)
                got.append((tok, logprob))
                seq.output.append(tok)  # for the penalties of the next position
                if self.trace is not None:
                    self.trace.append((seq.request_id, seq.index, lg))
                if j == len(draft) or tok != draft[j] or tok in seq.stop_tokens:
                    break
        finally:
            del seq.output[len(seq.output) - len(got) :]  # the scheduler appends them (postprocess)
        accepted = len(got) - 1
        assert seq.drafter is not None
        seq.drafter.accepted(accepted, len(draft))
        self._drafted += len(draft)
        self._accepted += accepted
        return got

    def _postprocess(self, batch: Batch, sampled: Sampled) -> list[TokenEvent]:
        """Records the step (the scheduler's accounting, newly cached blocks), drops the KV of
        rejected drafted tokens, ends finished samples and returns their tokens as events."""
        before = {seq.seq_id: len(seq.output) for seq, _ in sampled}
        drafted = {seq.seq_id: len(seq.draft) for seq, _ in sampled if seq.draft}
        finished = self.scheduler.postprocess(
            batch, {seq.seq_id: [t for t, _ in toks] for seq, toks in sampled}
        )
        self.cells.keep_cached()
        events = [self._export_prefill(seq) for seq in finished if seq.prefill_only]
        for seq, drawn in sampled:
            toks = drawn[: len(seq.output) - before[seq.seq_id]]  # those past an end are not kept
            if seq.seq_id in drafted and seq not in finished:
                self.runner.drop(self.cells.slot(seq.seq_id), seq.num_computed)  # the rejected rest
            reason = None
            if seq in finished:
                reason = "stop" if seq.stopped else "length"
                self._end(seq)
            cached = seq.cached_tokens or 0
            for i, (tok, logprob) in enumerate(toks):
                end = reason if i == len(toks) - 1 else None
                events.append(
                    TokenEvent(seq.request_id, tok, end is not None, seq.index, logprob, end, cached)
                )
            if seq.request_id not in self._probes:
                self._generated += len(toks)
        return events

    # ---- internals ----

    def _export_prefill(self, seq: Sequence) -> TokenEvent:
        """Ends a prefill whose prompt is computed; its event carries the prompt's KV state."""
        state = self._state(seq, len(seq.prompt))
        self._end(seq)
        return TokenEvent(
            seq.request_id,
            -1,
            True,
            finish_reason="prefilled",
            cached_tokens=seq.cached_tokens or 0,
            state=state,
        )

    def _state(self, seq: Sequence, n_tokens: int) -> KvState:
        data = self.cells.save(seq.seq_id)
        return KvState(self.runner.digest, self.runner.config.cache_type, tuple(seq.span(0, n_tokens)), data)

    def _size_cache(self, sequences: int) -> None:
        """Tells the cache budget of the step (its sequences: their decode rows are what unused cells
        slow down) and of reuse since the last; applies a new target (the blocks it evicts free their
        cells at the next step's prepare)."""
        if self.cache_budget is None:
            return
        b = self.blocks
        self.cache_budget.reuse(b.reused_tokens - self._reused_seen)
        self._reused_seen = b.reused_tokens
        self.cache_budget.step(sequences, b.num_unused_cached)
        target = self.cache_budget.decide()
        if target is not None:
            b.set_cache_target(target)
        else:
            b.expire()

    def _count_waste(self) -> None:
        used = len(self.blocks.blocks) - self.blocks.num_free_blocks
        self._reserved_cells += used * self.blocks.block_size
        self._waste_cells += self.blocks.unfilled_slots()

    def _end(self, seq: Sequence, aborted: bool = False) -> None:
        samples = self._samples.get(seq.request_id)
        if samples is None or seq not in samples:
            return
        if aborted:
            self.scheduler.abort(seq)
            self.cells.apply_evictions()
        self.cells.forget(seq.seq_id)
        self.remote.forget(seq)
        samples.remove(seq)
        if not samples:
            del self._samples[seq.request_id]
            if seq.request_id in self._probes:
                self._probes.discard(seq.request_id)
            else:
                self._finished += not aborted
        for s in samples:  # samples waiting for this one's prompt wait no longer
            if s.after is seq:
                s.after = None

    def _no_kv_slot(self) -> None:
        """llama_decode found no room although the blocks said there was (fragmented cells): free
        the cached cells, and if nothing was cached, recompute the newest sequence later."""
        log.warning("llama_decode found no KV slot; evicting the prefix cache")
        if self.blocks.evict_unused() == 0:
            seq = self.scheduler.preempt_newest()
            if seq is not None:
                self.cells.release(seq.seq_id)
        self.cells.apply_evictions()

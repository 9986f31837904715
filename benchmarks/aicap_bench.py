"""aicap: the on-device LLM through the daemon, side by side with a bare llama_decode loop and with
llama-cpp-python's high-level Llama answering the same requests one after another.

Run: .venv/bin/python benchmarks/aicap_bench.py [--quick] [--clients 1,4,8,16] [--per-client 2]
     [--max-tokens 128] [--rounds 1] [--systems bare-u,bare-s,serial,engine,daemon,llama-server]
     [--prefix-reps 3] [--llama-server PATH] [--lengths 16,64,256]

One run, every system on the same prompts (the same token lists), interleaved per concurrency level; every
level and round gets prompts of its own, so no system reuses a prefix cached by an earlier run:

- bare-u / bare-s: the ceiling, a direct llama_cpp loop with continuous batching in its simplest form (a new
  request's whole prompt is decoded in the same batch as the running decodes, argmax in numpy, a client's next
  request starts as soon as its previous one ends), on one context with unified KV (the engine's layout, same
  n_ctx and n_seq_max) and with per-sequence KV streams (kv_unified=False; n_ctx = n_seq_max x 512 so every
  stream holds a prompt plus its output).
- serial: llama_cpp.Llama answering the requests one after another in arrival order (what its own server
  does); every client arrives at t=0, so TTFT of a request includes its wait behind the earlier ones.
- engine: aicap's AsyncEngine driven directly (no gRPC), in a child process (EngineProcess says why):
  separates the engine's overhead from the service's.
- daemon: the real daemon process (tests/integration/harness.Daemon), N clients calling AiService.Complete
  over gRPC on its Unix socket; TTFT = call start to first chunk, ITL = between chunks.
- llama-server: llama.cpp's own server (`-np <max N> -kvu`, the daemon's n_ctx and threads, flash attention
  as the engine has it), N client threads over HTTP (benchmarks/llama_server.py). Left out, with a note, when
  its binary is not built: `bash benchmarks/build_llama_server.sh`.

Every request generates exactly --max-tokens tokens (greedy, end-of-generation ignored/masked). Aggregate
tok/s = all generated tokens / (first request start to last token). Then: prefix reuse (TTFT of a request
whose ~1000-token prefix an earlier request had, against a cold one of the same length, through the daemon,
the in-process engine and serial Llama), and the engine's KV accounting from GetStats sampled during N=8.
CPU steal on this VM varies: --rounds R repeats the sweep interleaved and prints medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import cpu_times, machine, proc_jiffies  # noqa: E402
from llama_server import LlamaServer, find_binary  # noqa: E402

from aicap.engine.model_runner import default_model_path, quiet_llama_logs  # noqa: E402
from aicap.engine.tokenizer import Tokenizer  # noqa: E402

PERMISSION = "ohos.permission.USE_AI"
LENGTHS = (16, 64, 256)  # prompt lengths (tokens), cycled over the requests
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}  # llama_context_params.flash_attn_type
PER_SEQ_CTX = 512  # cells per sequence of the per-sequence-streams bare loop (a prompt plus its output)
ALL_SYSTEMS = ("bare-u", "bare-s", "serial", "engine", "daemon", "llama-server")
LABELS = {
    "bare-u": "bare loop, unified KV",
    "bare-s": "bare loop, per-seq KV",
    "serial": "serial Llama",
    "engine": "engine (no gRPC)",
    "daemon": "ours (daemon, gRPC)",
    "llama-server": "llama-server -kvu (HTTP)",
}

WORDS = (  # noqa: SIM905
    "the a of and to in is that it for on with as was at by from this be are or an have not they which "
    "one you were all we when there can more if no out so said what up its about into than them only "
    "other new some could time these two may then do first any my now such like our over man me even "
    "most made after also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see men work long "
    "get here between both life being under never day same another know while last might us great old "
    "year off come since against go came right used take three device data service table query model token "
    "batch cache kernel memory thread socket permission window river mountain garden letter music engine "
    "harbor winter summer forest village market doctor teacher student history science language number"
).split()


# ---------------------------------------------------------------- workload


def text_of(rng: random.Random, n_words: int) -> str:
    out = []
    for _ in range(n_words):
        sentence = rng.choices(WORDS, k=rng.randint(5, 14))
        out.append(" ".join(sentence).capitalize() + rng.choice((".", ".", ".", "?", "!")))
    return " ".join(out)


def text_with_tokens(tok: Tokenizer, rng: random.Random, n_tokens: int, lead: str = "") -> str:
    """Varied text of about `n_tokens` tokens (never more): sentences are added while they fit."""
    text = lead
    while True:
        more = (text + " " if text else "") + text_of(rng, 1)
        if len(tok.tokenize(more)) > n_tokens:
            break
        text = more
    words = text.split(" ")
    while len(tok.tokenize(" ".join([*words, "and"]))) <= n_tokens:  # top up with single words
        words.append(rng.choice(WORDS))
    return " ".join(words)


@dataclass
class Workload:
    """`clients` x `per_client` requests; request j of client c is prompts[c * per_client + j]."""

    clients: int
    per_client: int
    max_tokens: int
    texts: list[str]
    tokens: list[list[int]]

    def prompt(self, client: int, j: int) -> int:
        return client * self.per_client + j


def make_prompts(
    tok: Tokenizer, count: int, seed: int = 1, lengths: tuple[int, ...] = LENGTHS
) -> tuple[list[str], list[list[int]]]:
    rng = random.Random(seed)
    texts = [text_with_tokens(tok, rng, lengths[i % len(lengths)]) for i in range(count)]
    return texts, [tok.tokenize(t) for t in texts]


# ---------------------------------------------------------------- measurements


@dataclass
class Run:
    """One system at one concurrency: per-request arrival, token times and token count."""

    system: str
    clients: int
    start: float = 0.0
    end: float = 0.0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    note: str = ""
    others: float = 0.0  # share of the CPUs other processes used meanwhile

    def request(self, arrival: float, times: list[float]) -> None:
        if times:
            self.ttft.append(times[0] - arrival)
            self.itl.extend(b - a for a, b in itertools.pairwise(times))
            self.end = max(self.end, times[-1])
        self.tokens += len(times)

    @property
    def tok_s(self) -> float:
        return self.tokens / max(1e-9, self.end - self.start)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class CpuWatch:
    """CPU steal, and the CPU used by processes other than this one and the daemon: llama.cpp's threads
    (OpenMP in this build) slow down many times over when anything else wants the 2 cores."""

    def __init__(self) -> None:
        self.pids: set[int] = {os.getpid()}
        self.start = self.snap()

    def watch(self, pid: int) -> None:
        self.pids.add(pid)
        self.start = self.snap()

    def snap(self) -> tuple[int, int, int, int]:
        """(steal, busy, total, ours) jiffies."""
        return (*cpu_times(), sum(proc_jiffies(p) for p in self.pids))

    @staticmethod
    def shares(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[float, float]:
        """(steal, others) between two snapshots, as shares of all CPU time."""
        span = max(1, b[2] - a[2])
        return (b[0] - a[0]) / span, max(0, (b[1] - a[1]) - (b[3] - a[3])) / span

    def report(self) -> str:
        steal, other = self.shares(self.start, self.snap())
        return (
            f"CPU steal {100 * steal:.0f}%, other processes used {100 * other:.0f}% of the CPUs during "
            "the run" + (" (NOISY: others were running; see the 'others' column)" if other > 0.05 else "")
        )


# ---------------------------------------------------------------- (a) the bare loop


class BareLoop:
    """Continuous batching in its simplest form, straight on llama.cpp's low-level API."""

    def __init__(
        self, model: Any, cfg: Any, n_ctx: int, n_seq_max: int, kv_unified: bool, flash_attn: str
    ) -> None:
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = cp.n_ubatch = self.n_batch = cfg.max_batch_tokens
        cp.n_seq_max = n_seq_max
        cp.n_threads = cp.n_threads_batch = cfg.n_threads
        cp.kv_unified = kv_unified
        cp.flash_attn_type = FLASH_ATTN[flash_attn]
        cp.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model, cp)
        assert self.ctx, "cannot create a llama.cpp context"
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.n_ctx, self.n_seq_max, self.unified = n_ctx, n_seq_max, kv_unified

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)

    def run(self, w: Workload, system: str) -> Run:
        llama_cpp.llama_memory_clear(self.mem, True)
        b = self.batch
        run = Run(system, w.clients)
        # cells a request may need; unified KV shares n_ctx, per-sequence streams get n_ctx / n_seq_max each
        cap = self.n_ctx if self.unified else self.n_ctx // self.n_seq_max
        reserved = 0
        free_slots = list(range(self.n_seq_max - 1, -1, -1))
        run.start = time.perf_counter()
        queue: deque[tuple[int, int, float]] = deque((c, 0, run.start) for c in range(w.clients))
        live: dict[int, _Live] = {}
        while queue or live:
            n = 0
            for slot, s in live.items():  # one decode token per running request
                b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = s.last, s.pos, 1, 1
                b.seq_id[n][0] = slot
                s.index = n
                n += 1
            while queue and free_slots:  # then whole prompts of new requests, while they fit
                c, j, arrival = queue[0]
                prompt = w.tokens[w.prompt(c, j)]
                need = len(prompt) + w.max_tokens
                assert need <= cap, f"a request needs {need} cells, a sequence may have {cap}"
                if n + len(prompt) > self.n_batch or (self.unified and reserved + need > self.n_ctx):
                    break
                queue.popleft()
                slot = free_slots.pop()
                reserved += need
                for k, t in enumerate(prompt):
                    b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = t, k, 1, 0
                    b.seq_id[n][0] = slot
                    n += 1
                b.logits[n - 1] = 1
                live[slot] = _Live(c, j, arrival, len(prompt), n - 1, need)
            b.n_tokens = n
            code = llama_cpp.llama_decode(self.ctx, b)
            if code != 0:
                raise RuntimeError(f"llama_decode returned {code}")
            now = time.perf_counter()
            for slot, s in list(live.items()):
                ptr = llama_cpp.llama_get_logits_ith(self.ctx, s.index)
                s.last = int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())
                if s.times:
                    s.pos += 1
                s.times.append(now)
                if len(s.times) >= w.max_tokens:
                    run.request(s.arrival, s.times)
                    llama_cpp.llama_memory_seq_rm(self.mem, slot, -1, -1)
                    free_slots.append(slot)
                    reserved -= s.need
                    del live[slot]
                    if s.j + 1 < w.per_client:
                        queue.append((s.client, s.j + 1, now))
        return run


@dataclass(slots=True)
class _Live:
    """A running request of the bare loop."""

    client: int
    j: int
    arrival: float
    pos: int  # where the next decoded token goes
    index: int  # its output's index in the batch
    need: int  # cells reserved
    last: int = 0  # the last sampled token, decoded next step
    times: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- (b) serial Llama


class Serial:
    """llama_cpp.Llama, one request after another in arrival order."""

    def __init__(self, model_path: Path, cfg: Any, eog: list[int]) -> None:
        self.llm = llama_cpp.Llama(str(model_path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, verbose=False)
        self.eog = np.array(eog)
        self.sampled = 0

    def mask_eog(self, input_ids: Any, scores: Any) -> Any:
        """A logits processor: end-of-generation tokens can never be sampled (and counts the samples)."""
        self.sampled += 1
        scores[self.eog] = -np.inf
        return scores

    def complete(self, prompt: list[int], max_tokens: int) -> list[float]:
        """Token times of one streamed completion."""
        times = []
        end = 0.0
        self.sampled = 0
        for chunk in self.llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stop=[],
            logits_processor=llama_cpp.LogitsProcessorList([self.mask_eog]),
        ):
            end = time.perf_counter()
            if chunk["choices"][0]["finish_reason"] is None:  # one chunk per token, then a last one
                times.append(end)
        # text held back (inside a UTF-8 character) comes with the last chunk: count the tokens sampled
        times += [end] * (min(self.sampled, max_tokens) - len(times))
        return times

    def run(self, w: Workload, system: str = "serial") -> Run:
        self.llm.reset()
        run = Run(system, w.clients)
        run.start = time.perf_counter()
        queue: deque[tuple[int, int, float]] = deque((c, 0, run.start) for c in range(w.clients))
        while queue:
            c, j, arrival = queue.popleft()
            times = self.complete(w.tokens[w.prompt(c, j)], w.max_tokens)
            run.request(arrival, times)
            if j + 1 < w.per_client:
                queue.append((c, j + 1, times[-1]))
        return run

    def ttft(self, prompt: list[int]) -> float:
        t0 = time.perf_counter()
        times = self.complete(prompt, 2)
        return times[0] - t0


# ---------------------------------------------------------------- (c) the engine in this process


class InProcess:
    """aicap's AsyncEngine with the daemon's configuration, driven from an event loop in this process."""

    def __init__(self, model_path: Path, cfg: Any) -> None:
        from aicap.config import AiConfig, EngineConfig, RunnerConfig
        from aicap.engine.async_engine import AsyncEngine
        from aicap.models import engine_factory

        config = AiConfig(  # the engine settings of the daemon's AiConfig
            runner=RunnerConfig(
                n_ctx=cfg.n_ctx, n_seq_max=cfg.n_seq_max, n_threads=cfg.n_threads, flash_attn=cfg.flash_attn
            ),
            engine=EngineConfig(
                block_size=cfg.block_size,
                max_batch_tokens=cfg.max_batch_tokens,
                max_running=cfg.max_running,
                swap_budget_tokens=cfg.swap_budget_tokens,
                prefix_cache_tokens=cfg.prefix_cache_tokens,
                isolate_apps=cfg.isolate_prefix_cache_per_app,
            ),
        )
        self.engine = AsyncEngine(engine_factory(model_path, cfg.n_ctx, config))

    def close(self) -> None:
        self.engine.close()
        if self.engine.engine is not None:
            self.engine.engine.runner.close()

    def params(self, max_tokens: int) -> Any:
        from aicap.engine.sampler import SamplingParams

        return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

    async def _one(self, prompt: list[int], max_tokens: int, app: str) -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        times = []
        gen = self.engine.generate(prompt, self.params(max_tokens), app=app)
        async with contextlib.aclosing(gen):
            async for _ in gen:
                times.append(time.perf_counter())
        return t0, times

    async def _run(self, w: Workload, run: Run) -> None:
        async def client(c: int) -> None:
            for j in range(w.per_client):
                t0, times = await self._one(w.tokens[w.prompt(c, j)], w.max_tokens, f"com.bench.client{c}")
                run.request(t0, times)

        run.start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(w.clients)))

    def run(self, w: Workload, system: str = "engine") -> Run:
        run = Run(system, w.clients)
        asyncio.run(self._run(w, run))
        return run

    def ttft(self, prompt: list[int]) -> float:
        t0, times = asyncio.run(self._one(prompt, 2, "com.bench.prefix"))
        return times[0] - t0


def _engine_worker(conn: Any, model_path: Path, cfg: Any) -> None:
    """The child process of EngineProcess: runs what the parent sends, until it sends None."""
    engine = InProcess(model_path, cfg)
    conn.send("ready")
    try:
        while (msg := conn.recv()) is not None:
            kind, arg = msg
            conn.send(engine.run(arg) if kind == "run" else engine.ttft(arg))
    finally:
        engine.close()


class EngineProcess:
    """InProcess in a child process of its own. In this one, the bare loops and serial Llama run
    llama.cpp from the main thread, the engine from its thread: two OpenMP teams, four threads on two
    cores, and libgomp then cuts its spin-wait at barriers to a hundred spins (see GOMP_SPINCOUNT), which
    made every llama_decode here up to 2.7x slower (bare-u N=1: 80 -> 31 tok/s). One team per process."""

    def __init__(self, model_path: Path, cfg: Any) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_engine_worker, args=(child, model_path, cfg), daemon=True)
        self.proc.start()
        if self._conn.recv() != "ready":
            raise RuntimeError("the engine process did not start")

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def run(self, w: Workload, system: str = "engine") -> Run:
        self._conn.send(("run", w))
        run: Run = self._conn.recv()
        return run

    def ttft(self, prompt: list[int]) -> float:
        self._conn.send(("ttft", prompt))
        value: float = self._conn.recv()
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()


# ---------------------------------------------------------------- (c) the daemon over gRPC


class ThroughDaemon:
    """The real daemon process; one app per client (each with USE_AI), calls over the Unix socket."""

    def __init__(self, data_dir: Path, clients: int, env: dict[str, str]) -> None:
        from harness import Daemon

        self.daemon = Daemon(data_dir, env=env).start(service="aicap.v1.AiService")  # model loaded
        self.tokens = [self.daemon.add_app(f"com.bench.client{c}", PERMISSION) for c in range(clients)]
        self.prefix_token = self.daemon.add_app("com.bench.prefix", PERMISSION)

    @property
    def pid(self) -> int:
        assert self.daemon.proc is not None
        return self.daemon.proc.pid

    def close(self) -> None:
        self.daemon.stop()

    def _stub(self, channel: Any) -> Any:
        from aicap.v1 import aicap_pb2_grpc

        return aicap_pb2_grpc.AiServiceStub(channel)

    def _request(self, text: str, max_tokens: int) -> Any:
        from aicap.v1 import aicap_pb2

        params = aicap_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        return aicap_pb2.CompleteRequest(prompt=text, params=params)

    async def _one(self, stub: Any, token: str, text: str, max_tokens: int) -> tuple[float, list[float], Any]:
        t0 = time.perf_counter()
        times: list[float] = []
        usage = None
        call = stub.Complete(
            self._request(text, max_tokens), metadata=(("authorization", f"Bearer {token}"),)
        )
        async for chunk in call:
            now = time.perf_counter()
            times.extend([now] * max(1, len(chunk.token_ids)))
            if chunk.HasField("usage"):
                usage = chunk.usage
        return t0, times, usage

    async def _run(self, w: Workload, run: Run, sample: Callable[[], None] | None) -> None:
        import grpc

        async with grpc.aio.insecure_channel(self.daemon.address) as channel:
            stub = self._stub(channel)

            async def client(c: int) -> None:
                for j in range(w.per_client):
                    i = w.prompt(c, j)
                    t0, times, usage = await self._one(stub, self.tokens[c], w.texts[i], w.max_tokens)
                    if usage is not None and usage.prompt_tokens != len(w.tokens[i]):
                        run.note = f"prompt tokenized to {usage.prompt_tokens}, not {len(w.tokens[i])}"
                    run.request(t0, times)

            async def sampler() -> None:
                while sample is not None:
                    await asyncio.to_thread(sample)
                    await asyncio.sleep(0.5)

            run.start = time.perf_counter()
            watcher = asyncio.create_task(sampler())
            try:
                await asyncio.gather(*(client(c) for c in range(w.clients)))
            finally:
                watcher.cancel()

    def run(self, w: Workload, system: str = "daemon", sample: Callable[[], None] | None = None) -> Run:
        run = Run(system, w.clients)
        asyncio.run(self._run(w, run, sample))
        return run

    def ttft(self, text: str) -> float:
        import grpc

        async def go() -> float:
            async with grpc.aio.insecure_channel(self.daemon.address) as channel:
                t0, times, _ = await self._one(self._stub(channel), self.prefix_token, text, 2)
                return times[0] - t0

        return asyncio.run(go())

    def stats(self) -> Any:
        import grpc

        from aicap.v1 import aicap_pb2

        with grpc.insecure_channel(self.daemon.address) as channel:
            md = (("authorization", f"Bearer {self.tokens[0]}"),)
            resp = self._stub(channel).GetStats(aicap_pb2.GetStatsRequest(), metadata=md)
        return resp.engines[0] if resp.engines else None


# ---------------------------------------------------------------- the report


def median_run(runs: list[Run]) -> dict[str, float]:
    keys = {
        "tok_s": lambda r: r.tok_s,
        "ttft50": lambda r: pct(r.ttft, 0.5),
        "ttft99": lambda r: pct(r.ttft, 0.99),
        "itl50": lambda r: pct(r.itl, 0.5),
        "itl99": lambda r: pct(r.itl, 0.99),
    }
    return {k: statistics.median(f(r) for r in runs) for k, f in keys.items()}


def print_table(results: dict[tuple[str, int], list[Run]], clients: list[int], systems: list[str]) -> None:
    head = f"{'N':>3} {'system':<24}{'tok/s':>8}{'TTFT p50/p99 (ms)':>22}{'ITL p50/p99 (ms)':>19}"
    print(head + f"  {'tok/s vs: bare-u':>16}{'bare-s':>8}{'serial':>8}{'l-server':>9}{'others':>8}")
    for n in clients:
        med = {s: median_run(results[s, n]) for s in systems if (s, n) in results}
        for s in systems:
            if s not in med:
                continue
            m = med[s]
            ratios = "".join(
                f"{m['tok_s'] / med[o]['tok_s']:>{w}.2f}" if o in med and o != s else f"{'':>{w}}"
                for o, w in (("bare-u", 8), ("bare-s", 8), ("serial", 8), ("llama-server", 9))
            )
            notes = {r.note for r in results[s, n] if r.note}
            print(
                f"{n:>3} {LABELS[s]:<24}{m['tok_s']:>8.1f}"
                f"{m['ttft50'] * 1e3:>11.0f} /{m['ttft99'] * 1e3:>8.0f}"
                f"{m['itl50'] * 1e3:>10.1f} /{m['itl99'] * 1e3:>7.1f}  {ratios}"
                f"{100 * max(r.others for r in results[s, n]):>7.0f}%"
                + (f"  ({'; '.join(notes)})" if notes else "")
            )


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_targets(results: dict[tuple[str, int], list[Run]], n: int) -> None:
    med = {s: median_run(results[key]) for s in ALL_SYSTEMS if (key := (s, n)) in results}
    print(f"\ntargets at N={n}:")
    for ours in ("daemon", "engine"):
        if ours not in med:
            continue
        m = med[ours]
        for bare in ("bare-u", "bare-s"):
            if bare in med:
                r = m["tok_s"] / med[bare]["tok_s"]
                print(f"  {LABELS[ours]}: throughput {r:.2f} x {LABELS[bare]} (>= 0.90): {verdict(r >= 0.9)}")
        if "serial" in med:
            r = m["tok_s"] / med["serial"]["tok_s"]
            print(f"  {LABELS[ours]}: throughput {r:.2f} x serial (>= 1.4): {verdict(r >= 1.4)}")
            r = m["ttft99"] / med["serial"]["ttft99"]
            print(f"  {LABELS[ours]}: TTFT p99 {r:.2f} x serial's (<= 0.33): {verdict(r <= 1 / 3)}")
        if "llama-server" in med:
            r = m["tok_s"] / med["llama-server"]["tok_s"]
            t = m["ttft99"] / med["llama-server"]["ttft99"]
            print(
                f"  {LABELS[ours]}: throughput {r:.2f} x llama-server's (> 1: {verdict(r > 1)}), "
                f"TTFT p99 {t:.2f} x its"
            )


# ---------------------------------------------------------------- prefix reuse


def prefix_prompts(tok: Tokenizer, reps: int, prefix_tokens: int) -> list[tuple[str, str]]:
    """(seed, hit) text pairs: the same ~prefix_tokens-token prefix, different short questions; every
    pair's prefix is new, so each seed request is cold and its hit follows it."""
    rng = random.Random(7)
    pairs = []
    for i in range(reps):
        prefix = text_with_tokens(tok, rng, prefix_tokens, lead=f"System notes, part {i + 1}.")
        q1 = f"\n\nQuestion: which {rng.choice(WORDS)} is the {rng.choice(WORDS)}? Answer:"
        q2 = f"\n\nQuestion: where is the {rng.choice(WORDS)} of {rng.choice(WORDS)}? Answer:"
        pairs.append((prefix + q1, prefix + q2))
    return pairs


def prefix_reuse(
    pairs: list[tuple[str, str]], tok: Tokenizer, systems: dict[str, Callable[[str, list[int]], float]]
) -> list[str]:
    lines = [
        f"prefix reuse: a {len(tok.tokenize(pairs[0][0]))}-token prompt, cold (a new prefix), then a hit "
        f"(the same prefix, another question); {len(pairs)} pair(s), medians"
    ]
    for name, ttft in systems.items():
        cold, hit = [], []
        for seed, again in pairs:
            cold.append(ttft(seed, tok.tokenize(seed)))
            hit.append(ttft(again, tok.tokenize(again)))
        c, h = statistics.median(cold), statistics.median(hit)
        lines.append(
            f"  {name:<26} TTFT cold {c * 1e3:7.1f} ms   hit {h * 1e3:7.1f} ms   hit/cold {h / c:.3f}"
            f"   (<= 0.10: {verdict(h / c <= 0.1)})"
        )
    return lines


# ---------------------------------------------------------------- main


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N=1,8, 1 request per client, 32 tokens, 1 pair.")
    ap.add_argument("--clients", default="1,4,8,16", help="Concurrency levels.")
    ap.add_argument("--per-client", type=int, default=2, help="Requests each client sends back to back.")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1, help="Interleaved repeats; medians are printed.")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    ap.add_argument("--prefix-reps", type=int, default=3, help="Cold/hit pairs for prefix reuse (0: skip).")
    ap.add_argument("--prefix-tokens", type=int, default=1000)
    ap.add_argument(
        "--bare-flash-attn",
        choices=sorted(FLASH_ATTN),
        default="auto",
        help="Flash attention of the bare loop (llama.cpp's default: auto; the engine's: ai.flash_attn, on).",
    )
    ap.add_argument("--daemon-env", action="append", default=[], help="KEY=VALUE for the daemon.")
    ap.add_argument("--llama-server", default=None, help="Its binary (else $LLAMA_SERVER, the built one).")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="Prompt lengths (tokens), cycled.")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.per_client, args.max_tokens, args.prefix_reps = "1,8", 1, 32, 1
    args.lengths = tuple(int(n) for n in args.lengths.split(","))
    return args


def ai_settings(env: dict[str, str]) -> Any:
    """The daemon's `ai` settings (datamgr.config defaults with the DATAMGR_AI__* given to the daemon)."""
    from datamgr.config import AiSettings

    prefix = "DATAMGR_AI__"
    return AiSettings(**{k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)})


class Systems:
    """Every system, created once and kept idle between runs (they share the 2 cores only when busy)."""

    def __init__(self, args: argparse.Namespace, model_path: Path, tmp: Path, watch: CpuWatch) -> None:
        self.names = [s for s in args.systems.split(",") if s]
        env = dict(kv.split("=", 1) for kv in args.daemon_env)
        self.cfg = cfg = ai_settings(env)
        quiet_llama_logs()
        self.tok = Tokenizer(model_path)
        self.eog = [t for t in range(self.tok.n_vocab) if self.tok.is_eog(t)]
        self.model = llama_cpp.llama_model_load_from_file(
            str(model_path).encode(), llama_cpp.llama_model_default_params()
        )
        max_clients = max(int(n) for n in args.clients.split(","))
        self.bare: dict[str, BareLoop] = {}
        if "bare-u" in self.names:
            self.bare["bare-u"] = BareLoop(
                self.model, cfg, cfg.n_ctx, cfg.n_seq_max, kv_unified=True, flash_attn=args.bare_flash_attn
            )
        if "bare-s" in self.names:
            n_seq = max_clients
            self.bare["bare-s"] = BareLoop(
                self.model, cfg, n_seq * PER_SEQ_CTX, n_seq, kv_unified=False, flash_attn=args.bare_flash_attn
            )
        self.serial = Serial(model_path, cfg, self.eog) if "serial" in self.names else None
        self.engine = EngineProcess(model_path, cfg) if "engine" in self.names else None
        if self.engine is not None:
            watch.watch(self.engine.pid)
        self.daemon = None
        if "daemon" in self.names:
            self.daemon = ThroughDaemon(tmp / "data", max_clients, env)
            watch.watch(self.daemon.pid)
        self.server: LlamaServer | None = None
        if "llama-server" in self.names:
            binary = find_binary(args.llama_server)
            if binary is None:
                print("llama-server left out: not built (bash benchmarks/build_llama_server.sh)", flush=True)
                self.names.remove("llama-server")
            else:
                fa = "on" if cfg.flash_attn else "off"
                self.server = LlamaServer(
                    binary, model_path, cfg.n_ctx, max_clients, cfg.n_threads, fa, tmp / "llama-server.log"
                )
                watch.watch(self.server.pid)

    def run(self, name: str, w: Workload, sample: Callable[[], None] | None = None) -> Run:
        if name in self.bare:
            return self.bare[name].run(w, name)
        if name == "serial" and self.serial is not None:
            return self.serial.run(w)
        if name == "engine" and self.engine is not None:
            return self.engine.run(w)
        if name == "daemon" and self.daemon is not None:
            return self.daemon.run(w, sample=sample)
        if name == "llama-server" and self.server is not None:
            return self._through_server(w, name)
        raise ValueError(name)

    def _through_server(self, w: Workload, name: str) -> Run:
        assert self.server is not None
        server, run, lock = self.server, Run(name, w.clients), threading.Lock()

        def request(c: int, j: int) -> None:
            t0, times = server.complete(w.tokens[w.prompt(c, j)], w.max_tokens)
            with lock:
                run.request(t0, times)

        run.start = time.perf_counter()
        server.run_clients(w.clients, w.per_client, request)
        return run

    def warm_up(self) -> None:
        """One short request through every system (graph allocation, lazy loads) before measuring."""
        texts, tokens = make_prompts(self.tok, 1, seed=99)
        for name in self.names:
            self.run(name, Workload(1, 1, 4, texts, tokens))

    def stats(self) -> Any:
        return self.daemon.stats() if self.daemon is not None else None

    def close(self) -> None:
        for b in self.bare.values():
            b.close()
        if self.engine is not None:
            self.engine.close()
        if self.daemon is not None:
            self.daemon.close()
        if self.server is not None:
            self.server.close()
        llama_cpp.llama_model_free(self.model)


def kv_report(samples: list[Any], after8: Any, final: Any) -> list[str]:
    lines = ["KV accounting and cache figures (the daemon's GetStats):"]
    lines.append(
        f"  kv_waste after the N=8 run {100 * after8.kv_waste:.2f}% "
        f"(< 4%: {verdict(after8.kv_waste < 0.04)}; "
        "the engine's figure: unfilled cells of used blocks over cells of used blocks, summed over every "
        "step since the daemon started)"
    )
    busy = [s for s in samples if s is not None and s.kv_blocks_used > 0]
    if busy:
        usage = [s.kv_usage for s in busy]
        lines.append(
            f"  kv_usage during N=8 (every 0.5 s): mean {100 * statistics.mean(usage):.1f}%, max "
            f"{100 * max(usage):.1f}% of {final.kv_blocks_total} blocks of {final.kv_block_size} tokens; "
            f"waiting max {max(s.requests_waiting for s in busy)}, running max "
            f"{max(s.requests_running for s in busy)}"
        )
    hits = final.prefix_cache_hits / final.prefix_cache_queries if final.prefix_cache_queries else 0.0
    lines.append(
        f"  at the end (after the prefix test): prefix cache {final.prefix_cache_hits}/"
        f"{final.prefix_cache_queries} hits ({100 * hits:.0f}%), preemptions swap {final.preemptions_swap} "
        f"recompute {final.preemptions_recompute}, requests finished {final.requests_finished}"
    )
    ttft, itl = final.time_to_first_token, final.inter_token_latency
    lines.append(
        f"  the daemon's own histograms (all requests): TTFT p50/p99 "
        f"{ttft.p50 * 1e3:.0f}/{ttft.p99 * 1e3:.0f} ms, ITL p50/p99 "
        f"{itl.p50 * 1e3:.1f}/{itl.p99 * 1e3:.1f} ms"
    )
    return lines


def sweep(
    args: argparse.Namespace, sys_: Systems, clients: list[int], watch: CpuWatch
) -> tuple[dict[tuple[str, int], list[Run]], list[Any], Any]:
    """Every system at every N, interleaved; the daemon's stats are sampled during its N=8 runs."""
    results: dict[tuple[str, int], list[Run]] = {}
    samples: list[Any] = []
    after8: list[Any] = []
    for rnd in range(args.rounds):
        for n in clients:
            # new prompts for every level and round: no system may reuse an earlier run's prefix cache
            texts, tokens = make_prompts(sys_.tok, n * args.per_client, 1000 * (rnd + 1) + n, args.lengths)
            w = Workload(n, args.per_client, args.max_tokens, texts, tokens)
            order = sys_.names if rnd % 2 == 0 else sys_.names[::-1]  # alternate who goes first
            for name in order:
                t0, cpu0 = time.perf_counter(), watch.snap()
                sample = (lambda: samples.append(sys_.stats())) if name == "daemon" and n == 8 else None
                run = sys_.run(name, w, sample)
                run.others = watch.shares(cpu0, watch.snap())[1]
                results.setdefault((name, n), []).append(run)
                if sample is not None:
                    after8.append(sys_.stats())
                print(
                    f"  round {rnd + 1} N={n:<2} {LABELS[name]:<24} {run.tok_s:7.1f} tok/s "
                    f"({run.tokens} tokens, {time.perf_counter() - t0:.1f} s, others used "
                    f"{100 * run.others:.0f}% of the CPUs)",
                    flush=True,
                )
    return results, samples, after8[-1] if after8 else None


def prefix_systems(sys_: Systems) -> dict[str, Callable[[str, list[int]], float]]:
    out: dict[str, Callable[[str, list[int]], float]] = {}
    if (d := sys_.daemon) is not None:
        out[LABELS["daemon"]] = lambda text, _tokens: d.ttft(text)
    if (e := sys_.engine) is not None:
        out[LABELS["engine"]] = lambda _text, tokens: e.ttft(tokens)
    if (s := sys_.serial) is not None:
        out["serial Llama (own reuse)"] = lambda _text, tokens: s.ttft(tokens)
    if (ls := sys_.server) is not None:

        def server_ttft(_text: str, tokens: list[int]) -> float:
            t0, times = ls.complete(tokens, 2)
            return times[0] - t0

        out["llama-server (cache_prompt)"] = server_ttft
    return out


def main() -> None:
    args = parse()
    clients = [int(n) for n in args.clients.split(",")]
    model_path = default_model_path()
    watch = CpuWatch()
    began = time.perf_counter()
    extra: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aicap-bench-") as tmp:
        sys_ = Systems(args, model_path, Path(tmp), watch)
        cfg = sys_.cfg
        try:
            sys_.warm_up()
            results, samples, after8 = sweep(args, sys_, clients, watch)
            if args.prefix_reps:
                pairs = prefix_prompts(sys_.tok, args.prefix_reps, args.prefix_tokens)
                extra += prefix_reuse(pairs, sys_.tok, prefix_systems(sys_))
            if after8 is not None:
                extra += kv_report(samples, after8, sys_.stats())
            cpu = watch.report()
        finally:
            sys_.close()
    print()
    print(f"machine: {machine()}; {cpu}")
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M')}   llama-cpp-python {llama_cpp.__version__}   "
        f"model: {model_path.name}   n_threads {cfg.n_threads}"
    )
    print(
        f"workload: {args.per_client} request(s) per client back to back, prompts cycling "
        f"{'/'.join(map(str, args.lengths))} tokens, {args.max_tokens} output tokens (greedy, EOS ignored); "
        f"the daemon's settings (engine, bare-u): n_ctx {cfg.n_ctx}, n_seq_max {cfg.n_seq_max}, max_running "
        f"{cfg.max_running}, max_batch_tokens {cfg.max_batch_tokens}; bare-s: {PER_SEQ_CTX} cells per "
        f"sequence; bare flash attention {args.bare_flash_attn}; medians of {args.rounds} round(s)"
    )
    print_table(results, clients, sys_.names)
    print("others: the most CPU other processes took during that row's runs; above ~5% the row is noise")
    if 8 in clients:
        print_targets(results, 8)
    for line in extra:
        print(line if line.startswith(" ") else "\n" + line)
    print(f"\ntotal time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()

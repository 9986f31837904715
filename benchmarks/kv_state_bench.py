"""KV state between devices: what a prefilled prompt's KV costs to ship and to import, per cache type,
against computing the prompt again (the baseline an importer would otherwise pay).

Run: .venv/bin/python benchmarks/kv_state_bench.py [--tokens 1000] [--reps 3] [--threads 2]

For f16 and q8_0 KV caches, in one process on the bundled model, on the same prompt (`--tokens` tokens of
English prose):
- bytes per token of the exported state, raw and with zlib level 1 (and its speed: kv_state.py ships raw);
- prefill tok/s: LLMEngine.prefill of the prompt on an idle engine (what the exporting device spends);
- export: ModelRunner.save + the chunks (header, CRC-32) per 1,000 tokens;
- import: KvState.from_chunks (CRC-32) + ModelRunner.restore per 1,000 tokens;
- time to first token on the importing engine, importing the state vs computing the prompt itself;
- q8_0's logits against f16's on the same tokens (max |Δlogit|, lowest correlation), prompt by prompt.
Medians of --reps runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine  # noqa: E402

from aicap.config import EngineConfig, RunnerConfig  # noqa: E402
from aicap.engine.llm_engine import LLMEngine  # noqa: E402
from aicap.engine.model_runner import ModelRunner, default_model_path  # noqa: E402
from aicap.engine.sampler import SamplingParams  # noqa: E402
from aicap.kv_state import KvState  # noqa: E402

CACHE_TYPES = ("f16", "q8_0")
PROSE = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based ink and a wooden screw press into a system that could produce books "
    "faster and more cheaply than ever before. Within fifty years presses were at work in more than two "
    "hundred cities, and the price of a book fell to a fraction of what a scribe had charged. Scholars "
    "argued about what the flood of print would do to memory, to authority and to the church; merchants "
    "simply bought almanacs, grammars and calendars by the thousand. "
)
PROBES = [
    "The capital of France is",
    "Once upon a time, in a land far away, there lived a",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
]


def engine_for(cache_type: str, n_ctx: int, threads: int) -> LLMEngine:
    cfg = RunnerConfig(
        default_model_path(), n_ctx=n_ctx, n_seq_max=8, n_batch=512, n_threads=threads, cache_type=cache_type
    )
    return LLMEngine(ModelRunner(cfg), EngineConfig(block_size=16, max_batch_tokens=512, max_running=4))


def fresh(engine: LLMEngine) -> LLMEngine:
    """A new engine on the same context with an empty cache (no prefix hits between runs)."""
    engine.runner.drop(-1)
    return LLMEngine(engine.runner, engine.config)


def drain(engine: LLMEngine, rid: int) -> tuple[float, KvState | None]:
    """Runs the engine until request `rid` yields its first event: (seconds, its state if any)."""
    t = time.perf_counter()
    while True:
        for ev in engine.step():
            if ev.seq_id == rid:
                took = time.perf_counter() - t
                engine.abort(rid)
                while engine.has_work():
                    engine.step()
                return took, ev.state


def export_time(runner: ModelRunner, slot: int, cache_type: str, tokens: list[int]) -> float:
    t = time.perf_counter()
    data = runner.save(slot)
    list(KvState(runner.digest, cache_type, tuple(tokens), data).to_chunks())
    return time.perf_counter() - t


def import_time(runner: ModelRunner, slot: int, chunks: list[bytes]) -> float:
    t = time.perf_counter()
    runner.restore(slot, KvState.from_chunks(chunks).data)
    return time.perf_counter() - t


def alone(runner: ModelRunner, tokens: list[int]) -> np.ndarray:
    runner.drop(0)
    out = runner.decode([(0, tokens, 0, 1)])[0][-1]
    runner.drop(0)
    return out


def measure(cache_type: str, n_tokens: int, reps: int, threads: int) -> dict[str, float]:
    engine = engine_for(cache_type, max(1024, 2 * n_tokens + 64), threads)
    runner = engine.runner
    prompt = (runner.tokenize(PROSE * (n_tokens // 60 + 2)))[: n_tokens + 1]
    runner.digest  # noqa: B018  (computed once per file, outside the timings)
    rows: dict[str, list[float]] = {
        k: [] for k in ("prefill", "export", "import", "ttft_import", "ttft_local")
    }
    state: KvState | None = None
    for rep in range(reps):
        e = fresh(engine)
        e.prefill(1, prompt)
        took, state = drain(e, 1)
        assert state is not None
        rows["prefill"].append(took)
        # export: what the prefill's end does (save) plus the wire format; import: the reverse
        fresh(engine)
        slot, chunks = 0, list(state.to_chunks())
        for i in range(0, n_tokens, 512):
            runner.decode([(slot, prompt[i : min(i + 512, n_tokens)], i, 1)])
        rows["export"].append(export_time(runner, slot, cache_type, prompt[:-1]))
        runner.drop(slot)
        rows["import"].append(import_time(runner, slot, chunks))
        runner.drop(slot)
        # first token on the importing engine: import vs compute the prompt
        e = fresh(engine)
        params = SamplingParams(max_tokens=1, ignore_eos=True)
        t = time.perf_counter()
        e.add(10 + rep, prompt, params, imported=KvState.from_chunks(chunks))
        took, _ = drain(e, 10 + rep)
        rows["ttft_import"].append(time.perf_counter() - t)
        e = fresh(engine)
        t = time.perf_counter()
        e.add(20 + rep, prompt, params)
        drain(e, 20 + rep)
        rows["ttft_local"].append(time.perf_counter() - t)
    assert state is not None
    raw = len(state.data)
    t = time.perf_counter()
    packed = zlib.compress(state.data, 1)
    zspeed = raw / (time.perf_counter() - t) / 1e6
    med = {k: statistics.median(v) for k, v in rows.items()}
    per_k = 1000 / n_tokens
    result = {
        "bytes_per_token": raw / n_tokens,
        "zlib_bytes_per_token": len(packed) / n_tokens,
        "zlib_mb_s": zspeed,
        "prefill_tok_s": n_tokens / med["prefill"],
        "export_ms_per_1k": med["export"] * 1000 * per_k,
        "import_ms_per_1k": med["import"] * 1000 * per_k,
        "ttft_import_ms": med["ttft_import"] * 1000,
        "ttft_local_ms": med["ttft_local"] * 1000,
    }
    runner.close()
    return result


def deviation() -> list[tuple[str, int, float, float, bool]]:
    """q8_0 vs f16 last-token logits on each probe and on the long prose prompt."""
    f16 = ModelRunner(RunnerConfig(default_model_path(), n_ctx=1024, n_seq_max=1, n_batch=512))
    q8 = ModelRunner(
        RunnerConfig(default_model_path(), n_ctx=1024, n_seq_max=1, n_batch=512, cache_type="q8_0")
    )
    out = []
    for text in [*PROBES, PROSE]:
        toks = f16.tokenize(text)
        a, b = alone(f16, toks), alone(q8, toks)
        corr = float(np.corrcoef(a, b)[0, 1])
        out.append(
            (
                text[:28].replace("\n", " "),
                len(toks),
                float(np.abs(a - b).max()),
                corr,
                int(a.argmax()) == int(b.argmax()),
            )
        )
    f16.close()
    q8.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1000, help="prompt tokens prefilled and shipped")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="decode threads (the daemon's ai.n_threads)")
    args = ap.parse_args()
    print(f"kv_state_bench {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
    print(f"model {default_model_path().name}, prompt {args.tokens} tokens, {args.threads} threads, ", end="")
    print(f"medians of {args.reps}, load average {os.getloadavg()[0]:.1f} at start\n")
    res = {ct: measure(ct, args.tokens, args.reps, args.threads) for ct in CACHE_TYPES}
    f, q = res["f16"], res["q8_0"]
    rows = [
        ("state bytes / token", "bytes_per_token", "{:,.0f}"),
        ("  zlib-1 bytes / token", "zlib_bytes_per_token", "{:,.0f}"),
        ("  zlib-1 speed (MB/s)", "zlib_mb_s", "{:.0f}"),
        ("prefill (tok/s)", "prefill_tok_s", "{:.0f}"),
        ("export ms / 1k tokens", "export_ms_per_1k", "{:.1f}"),
        ("import ms / 1k tokens", "import_ms_per_1k", "{:.1f}"),
        (f"TTFT, import ({args.tokens} tok) ms", "ttft_import_ms", "{:.0f}"),
        (f"TTFT, compute ({args.tokens} tok) ms", "ttft_local_ms", "{:.0f}"),
    ]
    print(f"{'':34} {'f16':>10} {'q8_0':>10} {'q8_0/f16':>9}")
    for label, key, fmt in rows:
        print(f"{label:34} {fmt.format(f[key]):>10} {fmt.format(q[key]):>10} {q[key] / f[key]:>9.2f}")
    for ct in CACHE_TYPES:
        r = res[ct]
        ratio = r["ttft_local_ms"] / r["ttft_import_ms"]
        print(f"{ct}: importing reaches the first token {ratio:.1f}x sooner than computing the prompt")
    print("\nq8_0 vs f16 logits (last prompt token, logits span ~35-40):")
    print(f"{'prompt':30} {'tokens':>6} {'max |d|':>8} {'corr':>8} {'argmax':>7}")
    for text, n, d, c, same in deviation():
        print(f"{text:30} {n:>6} {d:>8.3f} {c:>8.5f} {'same' if same else 'DIFF':>7}")


if __name__ == "__main__":
    main()

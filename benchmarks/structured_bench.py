"""The cost of structured output: tok/s of N clients with a JSON schema against the same without, in one run.

Run: .venv/bin/python benchmarks/structured_bench.py [--clients 8] [--per-client 2] [--max-tokens 128]
     [--rounds 3] [--threads 2] [--systems engine,daemon]

Two systems, each measured plain and constrained on the same prompts, rounds interleaved (which mode goes
first alternates), medians printed with the ratio constrained / plain (target: at least 0.9x):

- engine: aicap's LLMEngine stepped directly in this process (no gRPC, no event loop): N sequences in
  every step, so the ratio is the engine's own cost of masking (one llguidance call for the step's masks,
  the masked sampling, advancing the matchers).
- daemon: the real daemon process (tests/integration/harness.Daemon), N client threads streaming
  AiService.Chat over gRPC on its Unix socket, each sending its requests back to back.

Every request generates exactly --max-tokens tokens either way, so both modes keep the same N sequences
in every batch: the schema (SCHEMA, a shop's products: nested objects, bounded strings and numbers, enums)
asks for at least 200 products, which never ends within max_tokens, and the plain requests ignore the
end-of-generation token. Sampling is the daemon's default (temperature 0.8, top_k 40, ...), seeded.
Aggregate tok/s = generated tokens / (first request start to last token).

`SCHEMA` and `response_format()` are what benchmarks/http_bench.py may send as OpenAI's response_format.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine  # noqa: E402

PERMISSION = "ohos.permission.USE_AI"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "shop": {"type": "string", "maxLength": 30},
        "products": {
            "type": "array",
            "minItems": 200,  # longer than any max_tokens here: the answer never ends early
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 24},
                    "price": {"type": "number", "minimum": 0, "maximum": 1000},
                    "stock": {"type": "integer", "minimum": 0, "maximum": 500},
                    "category": {"enum": ["food", "tools", "toys", "books", "clothes"]},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
                },
                "required": ["name", "price", "stock", "category"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["shop", "products"],
    "additionalProperties": False,
}
SHOPS = ["a bakery", "a hardware store", "a toy shop", "a bookshop", "a clothes shop", "a market stall"]


def response_format() -> dict[str, Any]:
    """OpenAI's response_format for SCHEMA."""
    return {"type": "json_schema", "json_schema": {"name": "shop", "schema": SCHEMA, "strict": True}}


def prompt(i: int, round_: int) -> str:
    return f"List the products of {SHOPS[i % len(SHOPS)]} number {round_ * 1000 + i} as JSON."


def run_clients(call: Callable[[int], int], clients: int, per_client: int) -> tuple[int, float]:
    """`clients` threads each making `per_client` calls back to back (call(i) returns the tokens it
    generated): (all tokens, seconds from the first start to the last end)."""
    totals = [0] * clients
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            for k in range(per_client):
                totals[c] += call(c * per_client + k)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(totals), time.perf_counter() - t0


# ---- the systems ----


class EngineSystem:
    """LLMEngine in this process, every request of a round added at once (max_running = clients)."""

    def __init__(self, clients: int, threads: int) -> None:
        from aicap import structured
        from aicap.config import EngineConfig, RunnerConfig
        from aicap.engine.model_runner import ModelRunner, default_model_path
        from aicap.engine.tokenizer import Tokenizer

        self.tok = Tokenizer(default_model_path())
        self.lt = self.tok.grammar_tokenizer()
        self.grammar = structured.compile_format(
            self.lt, structured.Format("json_schema", json.dumps(SCHEMA))
        )
        self.runner = ModelRunner(
            RunnerConfig(default_model_path(), n_ctx=8192, n_seq_max=clients * 2 + 8, n_threads=threads)
        )
        self.config = EngineConfig(max_running=clients, max_batch_tokens=512)
        self.clients = clients

    def measure(self, constrained: bool, n: int, round_: int, max_tokens: int) -> tuple[int, float]:
        from aicap import structured
        from aicap.chat import render_chat
        from aicap.engine.llm_engine import LLMEngine
        from aicap.engine.sampler import SamplingParams

        for slot in range(self.runner.config.n_seq_max):  # a fresh engine finds the context's cells empty
            self.runner.drop(slot)
        engine = LLMEngine(self.runner, self.config)
        template = self.tok.chat_template() or ""
        for i in range(n):
            text = render_chat(template, [{"role": "user", "content": prompt(i, round_)}], "", "")
            params = SamplingParams(
                max_tokens=max_tokens, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=i,
                ignore_eos=not constrained,
            )  # fmt: skip
            m = structured.matcher(self.lt, self.grammar) if constrained else None
            engine.add(i, self.tok.tokenize(text, add_special=False), params, matcher=m)
        tokens, t0 = 0, time.perf_counter()
        while engine.has_work():
            tokens += len(engine.step())
        return tokens, time.perf_counter() - t0

    def close(self) -> None:
        self.runner.close()
        self.tok.close()


class DaemonSystem:
    """The real daemon, N client threads over gRPC."""

    def __init__(self, clients: int, threads: int, max_tokens: int, data: Path) -> None:
        from harness import Daemon

        env = {
            "DATAMGR_AI__N_THREADS": str(threads),
            "DATAMGR_AI__MAX_RUNNING": str(max(16, clients)),
            "DATAMGR_AI__MAX_CONCURRENT_PER_APP": str(clients),
            "DATAMGR_AI__MAX_TOKENS_LIMIT": str(max_tokens),
            "DATAMGR_HTTP__ENABLED": "false",
        }
        self.daemon = Daemon(data, env=env).start(service="aicap.v1.AiService")
        self.token = self.daemon.add_app("com.example.bench", PERMISSION)
        self.pid = self.daemon.proc.pid if self.daemon.proc is not None else 0

    def measure(
        self, constrained: bool, clients: int, per_client: int, round_: int, max_tokens: int
    ) -> tuple[int, float]:
        from aicap import AiClient

        extra: dict[str, Any] = (
            {"response_format": response_format()} if constrained else {"ignore_eos": True}
        )
        with AiClient.connect(self.daemon.address, self.token) as ai:

            def call(i: int) -> int:
                messages = [("user", prompt(i, round_))]
                with ai.stream_chat(messages, max_tokens=max_tokens, seed=i, timeout=300, **extra) as stream:
                    return sum(len(chunk.token_ids) for chunk in stream)

            return run_clients(call, clients, per_client)

    def close(self) -> None:
        self.daemon.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=2, help="daemon: requests each client sends")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="decode threads (the daemon's ai.n_threads)")
    ap.add_argument("--systems", default="engine,daemon")
    args = ap.parse_args()
    systems = args.systems.split(",")
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    print(
        f"N={args.clients} clients, {args.max_tokens} tokens a request, {args.rounds} rounds, "
        f"{args.threads} decode threads; schema: nested objects, bounded strings and numbers, enums"
    )
    results: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="structured-bench-") as tmp:
        engine = EngineSystem(args.clients, args.threads) if "engine" in systems else None
        daemon = (
            DaemonSystem(args.clients, args.threads, args.max_tokens, Path(tmp) / "data")
            if "daemon" in systems
            else None
        )
        try:
            for r in range(args.rounds):
                for constrained in (r % 2 == 0, r % 2 == 1):
                    if engine is not None:
                        tokens, secs = engine.measure(constrained, args.clients, r, args.max_tokens)
                        results.setdefault(("engine", constrained), []).append(tokens / secs)
                    if daemon is not None:
                        tokens, secs = daemon.measure(
                            constrained, args.clients, args.per_client, r, args.max_tokens
                        )
                        results.setdefault(("daemon", constrained), []).append(tokens / secs)
                line = ", ".join(
                    f"{s} {'schema' if c else 'plain'} {v[-1]:.1f}" for (s, c), v in sorted(results.items())
                )
                print(f"round {r + 1}: {line} tok/s", flush=True)
        finally:
            if engine is not None:
                engine.close()
            if daemon is not None:
                daemon.close()
    print(f"\n{'system':<30}{'plain tok/s':>14}{'schema tok/s':>15}{'ratio':>9}{'per-round ratio':>18}")
    for s in ("engine", "daemon"):
        if (s, False) not in results:
            continue
        plain, schema = results[(s, False)], results[(s, True)]
        per_round = statistics.median(b / a for a, b in zip(plain, schema, strict=True))
        ratio = statistics.median(schema) / statistics.median(plain)
        label = "engine (in process)" if s == "engine" else "daemon (gRPC, N clients)"
        print(
            f"{label:<30}{statistics.median(plain):>14.1f}{statistics.median(schema):>15.1f}"
            f"{ratio:>8.2f}x{per_round:>17.2f}x"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}; target: schema at least 0.9x plain")


if __name__ == "__main__":
    main()

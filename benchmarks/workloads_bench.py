"""App-shaped workloads on the daemon and on llama.cpp's llama-server, in one run (issue 14).

Run: .venv/bin/python benchmarks/workloads_bench.py [--rounds 2] [--workloads chat,docs,short] [--users 8]
     [--daemon-env DATAMGR_AI__MAX_BATCH_TOKENS=1024 ...] [--ours-also NAME:KEY=VALUE,...]
     [--llama-also NAME:MODEL.gguf]

`--ours-also` runs another daemon with those settings beside the default one (e.g.
`q4_1:DATAMGR_AI__FAST_WEIGHTS=false`, the model's weights as shipped) and `--llama-also` another
llama-server on another GGUF (e.g. the daemon's Q8_0 copy of the built-in model); each is one more
system in every round, with its ratio to llama-server.

Each workload streams chat completions (POST /v1/chat/completions, greedy, the end-of-generation token
ignored, so every answer has exactly its max_tokens) from N client threads through our daemon's HTTP
API and through llama-server (`-np N -kvu`, the daemon's n_ctx, threads and flash attention, its prompt
cache on), with the same client code and the same fresh content in each round; rounds rotate which
system goes first, and the table shows medians.

- chat: N users of one chat app, 3 turns each, under the app's system prompt of ~400 tokens; each turn
  resends the whole history (system, earlier questions and the answers as streamed) and a new
  question; 128 tokens a turn. What a chat app that keeps no session does. The users are one app (one
  token): the daemon's prefix cache is per app, and apps share only prefixes they declare shared.
- docs: N distinct documents of ~600 tokens to summarize, one each; 128 tokens out.
- short: N clients x 2 distinct short prompts (a system message and 12-48 words), 128 tokens out.

Printed per workload: aggregate tok/s (completion tokens / first request to last token), TTFT p50 and
p99, and ITL p99 (the gap between consecutive streamed contents), and ours / llama-server ratios, the
medians of the rounds and the median of the rounds' own ratios. llama-server is built by
`bash benchmarks/build_llama_server.sh`; without it the benchmark says so and stops.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import cpu_times, machine  # noqa: E402
from aicap_bench import WORDS  # noqa: E402
from harness import Daemon  # noqa: E402
from http_bench import event_contents, open_chat, sse_events  # noqa: E402
from llama_server import LlamaServer, find_binary  # noqa: E402

from aicap.engine.model_runner import default_model_path  # noqa: E402

PERMISSION = "ohos.permission.USE_AI"
OURS, LLAMA = "ours", "llama-server"
MAX_TOKENS = 128
Messages = list[dict[str, str]]


@dataclass
class Run:
    """One system on one workload: every answer's TTFT and inter-token gaps, tokens, wall time."""

    start: float = 0.0
    end: float = 0.0
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the server found cached (its usage says)
    ttfts: list[float] = field(default_factory=list)
    turns: dict[int, list[float]] = field(default_factory=dict)  # a client's n-th request -> its TTFTs
    gaps: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ttft: float, times: list[float], usage: tuple[int, int, int], turn: int = 0) -> None:
        """One answer: its TTFT, content times, (completion, prompt, cached prompt) tokens."""
        tokens, prompt, cached = usage
        with self.lock:
            self.ttfts.append(ttft)
            self.turns.setdefault(turn, []).append(ttft)
            self.gaps.extend(b - a for a, b in itertools.pairwise(times))
            self.tokens += tokens
            self.prompt_tokens += prompt
            self.cached_tokens += cached
            self.end = max(self.end, times[-1])

    @property
    def tok_s(self) -> float:
        return self.tokens / (self.end - self.start)

    def ttft(self, q: float) -> float:
        return quantile(self.ttfts, q)

    @property
    def itl_p99(self) -> float:
        return quantile(self.gaps, 0.99) if self.gaps else 0.0


def quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


class Endpoint:
    def __init__(self, name: str, port: int, tokens: list[str]) -> None:
        self.name, self.port, self.tokens = name, port, tokens

    def chat(self, client: int, messages: Messages) -> tuple[float, list[float], str, tuple[int, int, int]]:
        """(TTFT, the times of the streamed contents, the answer, (completion, prompt, cached prompt)
        tokens) of one chat."""
        conn, resp, t0 = open_chat(self.name, self.port, self.tokens[client], messages, MAX_TOKENS)
        times: list[float] = []
        text: list[str] = []
        usage: dict[str, Any] = {}
        for event in sse_events(resp):
            for content in event_contents(event):
                times.append(time.perf_counter())
                text.append(content)
            usage = event.get("usage") or usage
        conn.close()
        if not times:
            raise RuntimeError(f"{self.name}: a stream without content")
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        counts = (usage.get("completion_tokens", len(times)), usage.get("prompt_tokens", 0), cached)
        return times[0] - t0, times, "".join(text), counts


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


# A workload: per client, a function that runs its requests through `send` (messages -> answer).
Workload = Callable[[random.Random, int], Callable[[int, Callable[[int, Messages], str]], None]]


def chat(rng: random.Random, users: int) -> Callable[[int, Callable[[int, Messages], str]], None]:
    system = "You are the assistant of a household's notes app. " + words(rng, 330)
    questions = [[words(rng, 20) + "?" for _ in range(3)] for _ in range(users)]

    def client(c: int, send: Callable[[int, Messages], str]) -> None:
        messages = [{"role": "system", "content": system}]
        for q in questions[c]:
            messages.append({"role": "user", "content": q})
            messages.append({"role": "assistant", "content": send(c, messages)})

    return client


def docs(rng: random.Random, users: int) -> Callable[[int, Callable[[int, Messages], str]], None]:
    documents = [f"Document {i}. " + words(rng, 480) for i in range(users)]

    def client(c: int, send: Callable[[int, Messages], str]) -> None:
        send(c, [{"role": "user", "content": f"Summarize this document.\n\n{documents[c]}"}])

    return client


def short(rng: random.Random, users: int) -> Callable[[int, Callable[[int, Messages], str]], None]:
    prompts = [[f"{c}.{j}: " + words(rng, (12, 48)[(c + j) % 2]) for j in range(2)] for c in range(users)]

    def client(c: int, send: Callable[[int, Messages], str]) -> None:
        for p in prompts[c]:
            send(c, [{"role": "system", "content": "Answer at length."}, {"role": "user", "content": p}])

    return client


WORKLOADS: dict[str, Workload] = {"chat": chat, "docs": docs, "short": short}


ONE_APP = {"chat"}  # workloads whose clients are one app (the others: an app each)


def run(
    endpoint: Endpoint,
    users: int,
    client: Callable[[int, Callable[[int, Messages], str]], None],
    one_app: bool = False,
) -> Run:
    result = Run()
    errors: list[BaseException] = []

    sent = [0] * users

    def send(c: int, messages: Messages) -> str:
        ttft, times, answer, usage = endpoint.chat(0 if one_app else c, messages)
        result.add(ttft, times, usage, sent[c])
        sent[c] += 1
        return answer

    def body(c: int) -> None:
        try:
            client(c, send)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(c,)) for c in range(users)]
    result.start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return result


def report(name: str, runs: dict[str, list[Run]]) -> None:
    theirs = runs[LLAMA]

    def med(rs: list[Run], f: Callable[[Run], float]) -> float:
        return statistics.median(f(r) for r in rs)

    def paired(ours: list[Run], f: Callable[[Run], float]) -> float:
        return statistics.median(f(a) / f(b) for a, b in zip(ours, theirs, strict=True))

    print(f"\n{name}: medians of {len(theirs)} rounds")
    print("| system | tok/s | TTFT p50 (ms) | TTFT p99 (ms) | ITL p99 (ms) |")
    print("|---|---|---|---|---|")
    for label, rs in runs.items():
        print(
            f"| {label} | {med(rs, lambda r: r.tok_s):.1f} | {1000 * med(rs, lambda r: r.ttft(0.5)):.0f} | "
            f"{1000 * med(rs, lambda r: r.ttft(0.99)):.0f} | {1000 * med(rs, lambda r: r.itl_p99):.0f} |"
        )
    ratios = [
        ("tok/s", lambda r: r.tok_s),
        ("TTFT p50", lambda r: r.ttft(0.5)),
        ("TTFT p99", lambda r: r.ttft(0.99)),
        ("ITL p99", lambda r: r.itl_p99),
    ]
    for label, ours in runs.items():
        if label == LLAMA:
            continue
        parts = [f"{k} {med(ours, f) / med(theirs, f):.2f} ({paired(ours, f):.2f})" for k, f in ratios]
        print(f"{label} / llama-server (round by round in brackets): {', '.join(parts)}")


def also(value: str) -> tuple[str, str]:
    """An --ours-also or --llama-also value: (NAME, the rest)."""
    name, sep, rest = value.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME:SETTINGS")
    return name, rest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--daemon-env", action="append", default=[], help="KEY=VALUE for the daemon.")
    ap.add_argument("--ours-also", action="append", default=[], type=also, help="NAME:KEY=VALUE,...")
    ap.add_argument("--llama-also", action="append", default=[], type=also, help="NAME:MODEL.gguf")
    args = ap.parse_args()
    names = [w for w in args.workloads.split(",") if w]
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))} (known: {', '.join(WORKLOADS)})")
    binary = find_binary(None)
    if binary is None:
        sys.exit("llama-server is not built: bash benchmarks/build_llama_server.sh")
    print(f"workloads_bench: {machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    tmp = Path(tempfile.mkdtemp(prefix="workloads_bench-"))
    env = {
        "DATAMGR_AI__N_CTX": str(args.n_ctx),
        "DATAMGR_AI__N_THREADS": str(args.threads),
        "DATAMGR_LOG_LEVEL": "WARNING",
        **dict(kv.split("=", 1) for kv in args.daemon_env),
    }
    daemons: list[Daemon] = []
    servers: list[LlamaServer] = []
    try:
        systems = []
        for i, (name, settings) in enumerate([(OURS, ""), *args.ours_also]):
            extra = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
            daemon = Daemon(tmp / f"data{i}", env={**env, **extra}).start(service="aicap.v1.AiService")
            daemons.append(daemon)
            tokens = [daemon.add_app(f"com.bench.user{c}", PERMISSION) for c in range(args.users)]
            systems.append(Endpoint(name, daemon.endpoint()["http_port"], tokens))
        for i, (name, model) in enumerate([(LLAMA, str(default_model_path())), *args.llama_also]):
            server = LlamaServer(
                binary, Path(model), args.n_ctx, args.users, args.threads, "on", tmp / f"llama{i}.log"
            )
            servers.append(server)
            systems.append(Endpoint(name, server.port, tokens))
        rng = random.Random(args.seed)
        for s in systems:  # what loads lazily, not measured
            run(s, args.users, short(rng, args.users))
        results: dict[str, dict[str, list[Run]]] = {w: {s.name: [] for s in systems} for w in names}
        steal0, busy0, total0 = cpu_times()
        for r in range(args.rounds):
            for w in names:
                client = WORKLOADS[w](rng, args.users)  # fresh content: no system finds an earlier round's
                for s in systems[r % len(systems) :] + systems[: r % len(systems)]:
                    res = run(s, args.users, client, w in ONE_APP)
                    results[w][s.name].append(res)
                    print(
                        f"round {r + 1} {w:6} {s.name:>12}: {res.tok_s:6.1f} tok/s, TTFT p50 "
                        f"{1000 * res.ttft(0.5):6.0f} ms, p99 {1000 * res.ttft(0.99):6.0f} ms, "
                        f"ITL p99 {1000 * res.itl_p99:5.0f} ms, {res.tokens} tokens, "
                        f"{res.cached_tokens}/{res.prompt_tokens} prompt tokens cached; TTFT p50 by turn "
                        + " / ".join(f"{1000 * quantile(v, 0.5):.0f}" for _, v in sorted(res.turns.items())),
                        flush=True,
                    )
        steal1, busy1, total1 = cpu_times()
        jiffies = max(total1 - total0, 1)
        print(
            f"\nCPU during the rounds: {100 * (busy1 - busy0) / jiffies:.0f}% busy, "
            f"{100 * (steal1 - steal0) / jiffies:.1f}% stolen"
        )
        for w in names:
            report(w, results[w])
    finally:
        for server in servers:
            server.close()
        for daemon in daemons:
            daemon.stop()


if __name__ == "__main__":
    main()

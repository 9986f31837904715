"""Speculation where output copies input: ours with n-gram drafts against ours without, and against
llama.cpp's llama-server with and without its own n-gram speculation, in one run.

Run: .venv/bin/python benchmarks/spec_bench.py [--clients 1,8] [--per-client 2] [--rounds 2]
     [--workloads extract,rewrite,chat] [--ours-also NAME:KEY=VALUE,...]

Three workloads of chat completions through each server's OpenAI API (POST /v1/chat/completions,
streamed, greedy, the end-of-generation token ignored so every request makes --max-tokens tokens):
- extract: a list of ~12 contact records (name, city, phone, e-mail), and "copy them as JSON lines";
- rewrite: a ~200-word paragraph, and "repeat it exactly, word for word";
- chat: 48 random words to answer at length, nothing to copy (speculation must not cost here).
Each request has its own records or paragraph (random words, so no server finds another request's
prompt cached). Systems: ours (the daemon's defaults: speculation on, drafts sized by the measured cost
of a token), ours with ai.spec_draft_max = 0, llama-server (`-np N -kvu -fa on`, the daemon's n_ctx and
threads), llama-server with `--spec-type ngram-simple`. Rounds rotate which system goes first; the
table shows medians of tok/s and the ratios (targets, issue 14: at least 1.3x llama-server with its
speculation at N=1, no loss at N=8), and our drafted / accepted tokens. `--ours-also` adds a daemon
with other settings (e.g. `one context:DATAMGR_AI__SOLO_WEIGHTS=false`) to every round.
"""

from __future__ import annotations

import argparse
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

from _machine import machine  # noqa: E402
from aicap_bench import WORDS  # noqa: E402
from harness import Daemon  # noqa: E402
from http_bench import PERMISSION, Endpoint, run  # noqa: E402
from llama_server import LlamaServer, find_binary  # noqa: E402

from aicap.engine.model_runner import default_model_path  # noqa: E402

OURS, PLAIN, LLAMA, LLAMA_NGRAM = "ours", "ours, no speculation", "llama-server", "llama-server ngram-simple"
CITIES = ["Lisbon", "Oslo", "Kyoto", "Quito", "Dakar", "Perth", "Tartu", "Cusco", "Hanoi", "Malmo"]


def extract(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for _ in range(12):
        first, last = rng.choice(WORDS).title(), rng.choice(WORDS).title()
        phone = f"+{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
        rows.append(
            f"{first} {last}, {rng.choice(CITIES)}, {phone}, {first.lower()}.{last.lower()}@example.org"
        )
    records = "\n".join(rows)
    ask = "Copy every record below as one JSON object per line, with the keys name, city, phone and email."
    return [{"role": "user", "content": f"{ask}\n\n{records}"}]


def rewrite(rng: random.Random) -> list[dict[str, str]]:
    text = " ".join(rng.choice(WORDS) for _ in range(200))
    return [{"role": "user", "content": f"Repeat this text exactly, word for word:\n\n{text}"}]


def chat(rng: random.Random) -> list[dict[str, str]]:
    """Nothing to copy (http_bench's chats): speculation must cost nothing here."""
    words = " ".join(rng.choice(WORDS) for _ in range(48))
    return [{"role": "system", "content": "Answer at length."}, {"role": "user", "content": words}]


WORKLOADS = {"extract": extract, "rewrite": rewrite, "chat": chat}


def spec_counts(daemon: Daemon) -> tuple[int, int]:
    """Our drafted and accepted tokens so far (the daemon's /metrics on its HTTP port)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", daemon.endpoint()["http_port"], timeout=10)
    admin = (daemon.data_dir / "admin.token").read_text().strip()
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {admin}"})
    resp = conn.getresponse()
    text = resp.read().decode()
    if resp.status != 200:
        raise RuntimeError(f"/metrics: HTTP {resp.status}: {text[:200]}")
    conn.close()
    found = {}
    for line in text.splitlines():
        for name in (
            "aicap_spec_decode_num_draft_tokens_total",
            "aicap_spec_decode_num_accepted_tokens_total",
        ):
            if line.startswith(name + "{"):
                found[name] = found.get(name, 0) + int(float(line.rsplit(" ", 1)[1]))
    return (
        found.get("aicap_spec_decode_num_draft_tokens_total", 0),
        found.get("aicap_spec_decode_num_accepted_tokens_total", 0),
    )


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,8", help="Concurrency levels.")
    ap.add_argument("--per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--ours-also", action="append", default=[], help="NAME:KEY=VALUE,...")
    return ap.parse_args()


def main() -> None:
    args = parse()
    levels = [int(c) for c in args.clients.split(",")]
    top = max(levels)
    print(f"spec_bench: {machine()}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    binary = find_binary(args.llama_server)
    tmp = Path(tempfile.mkdtemp(prefix="spec_bench-"))
    env = {
        "DATAMGR_AI__N_CTX": str(args.n_ctx),
        "DATAMGR_AI__N_THREADS": str(args.threads),
        "DATAMGR_AI__MAX_TOKENS_LIMIT": str(max(1024, args.max_tokens)),
        "DATAMGR_LOG_LEVEL": "WARNING",
    }
    daemons = {
        OURS: Daemon(tmp / "ours", env=env),
        PLAIN: Daemon(tmp / "plain", env={**env, "DATAMGR_AI__SPEC_DRAFT_MAX": "0"}),
    }
    for i, also in enumerate(args.ours_also):
        name, _, settings = also.partition(":")
        extra = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
        daemons[name] = Daemon(tmp / f"also{i}", env={**env, **extra})
    workloads = {w: WORKLOADS[w] for w in args.workloads.split(",")}
    servers: list[LlamaServer] = []
    systems: list[Any] = []
    try:
        for name, d in daemons.items():
            d.start(service="aicap.v1.AiService")
            assert d.proc is not None
            tokens = [d.add_app(f"com.bench.spec{c}", PERMISSION) for c in range(top)]
            systems.append(Endpoint(name, d.endpoint()["http_port"], tokens, d.proc.pid))
        if binary is None:
            print("llama-server not found (bash benchmarks/build_llama_server.sh): ours alone")
        else:
            for name, extra in ((LLAMA, []), (LLAMA_NGRAM, ["--spec-type", "ngram-simple"])):
                s = LlamaServer(
                    binary,
                    default_model_path(),
                    args.n_ctx,
                    top,
                    args.threads,
                    "on",
                    tmp / f"{name}.log",
                    extra,
                )
                servers.append(s)
                systems.append(Endpoint(name, s.port, [""] * top, s.pid))
        rng = random.Random(args.seed)
        for s in systems:  # what loads lazily; not measured
            run(s, 1, 1, [extract(rng)], 8)
        results: dict[tuple[str, str, int], list[float]] = {}
        counts = {name: spec_counts(d) for name, d in daemons.items()}
        drafted: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for r in range(args.rounds):
            for wname, make in workloads.items():
                for n in levels:
                    work = [make(rng) for _ in range(n * args.per_client)]
                    for s in systems[r % len(systems) :] + systems[: r % len(systems)]:
                        res = run(s, n, args.per_client, work, args.max_tokens)
                        results.setdefault((wname, s.name, n), []).append(res.tok_s)
                        note = ""
                        if s.name in daemons and s.name != PLAIN:
                            now = spec_counts(daemons[s.name])
                            d, a = now[0] - counts[s.name][0], now[1] - counts[s.name][1]
                            counts[s.name] = now
                            if s.name == OURS:
                                drafted.setdefault((wname, n), []).append((d, a))
                            note = f", drafted {d}, accepted {a}"
                        print(
                            f"round {r + 1} {wname} N={n} {s.name:>26}: {res.tok_s:6.1f} tok/s{note}",
                            flush=True,
                        )
        report(results, drafted, levels, [s.name for s in systems], list(workloads))
    finally:
        for s in servers:
            s.close()
        for d in daemons.values():
            d.stop()


def report(
    results: dict[tuple[str, str, int], list[float]],
    drafted: dict[tuple[str, int], list[tuple[int, int]]],
    levels: list[int],
    names: list[str],
    workloads: list[str],
) -> None:
    def med(w: str, s: str, n: int) -> float | None:
        v = results.get((w, s, n))
        return statistics.median(v) if v else None

    print("\n| workload | N | " + " | ".join(names) + " | ours / llama-server ngram | ours / ours no spec |")
    print("|---|---|" + "---|" * (len(names) + 2))
    for w in workloads:
        for n in levels:
            cells = [med(w, s, n) for s in names]
            ours, plain, ngram = med(w, OURS, n), med(w, PLAIN, n), med(w, LLAMA_NGRAM, n)
            r1 = f"{ours / ngram:.2f}" if ours and ngram else "-"
            r2 = f"{ours / plain:.2f}" if ours and plain else "-"
            row = " | ".join(f"{c:.1f}" if c else "-" for c in cells)
            d = drafted.get((w, n), [])
            acc = f" (drafted {sum(x for x, _ in d)}, accepted {sum(y for _, y in d)})" if d else ""
            print(f"| {w} | {n} | {row} | {r1} | {r2}{acc} |")


if __name__ == "__main__":
    main()

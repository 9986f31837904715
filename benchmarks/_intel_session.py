"""Sessions against resending the history (issue 15.4; a part of benchmarks/intelligence_bench.py).

Run: .venv/bin/python benchmarks/_intel_session.py [--turns 5] [--rounds 3] [--quick]

One real daemon (tests/integration/harness.Daemon, the built-in model, greedy). A conversation of
`--turns` turns runs two ways, each by an app of its own (the prefix cache is per app):

- session: CreateSession(instructions) and each turn sends only its question (Chat with `session`);
  the daemon's prompt begins with the previous prompt and answer tokens, whose KV the session holds.
- resend: each turn sends the instructions, every earlier question and answer and the new question
  (what an app does without sessions).

Time to first token (client side: request sent to first streamed chunk) is taken at every turn, and
the ratio session / resend at the last turn (target at most 0.2 at the fifth). Two conditions:

- quiet: nothing else runs. The daemon's prefix cache already keeps the resent history's blocks
  (within one app, as far as the re-tokenized answers agree with the generated tokens), so resending
  is cheap here too: this is the honest lower bound of the difference.
- contended: between two turns, `--noise-apps` other apps each complete a distinct prompt of
  `--noise-tokens` tokens, more than ai.prefix_cache_tokens together: unheld cached blocks (the resend
  app's) are evicted as the least recently used, while the session's hold keeps its blocks.

Rounds alternate the two ways; figures are medians over rounds. `run(args)` returns them as a dict.
"""

from __future__ import annotations

import argparse
import json
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

from aicap.client import AiClient  # noqa: E402

USE_AI = "ohos.permission.USE_AI"
AI_SERVICE = "aicap.v1.AiService"
QUESTIONS = [
    "Describe the morning routine of a lighthouse keeper.",
    "What does the keeper eat for lunch, and why?",
    "Which storms does the keeper remember best?",
    "How does the keeper spend long winter evenings?",
    "What would the keeper tell a new apprentice?",
    "How has the lighthouse changed over the years?",
    "What does the keeper think about automation?",
    "Describe the view from the lantern room at dusk.",
]
FACT = (
    "The lighthouse stands on a granite island, its lamp turns every ten seconds, and supplies come by boat. "
)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", type=int, default=5, help="turns per conversation (at most 8)")
    p.add_argument("--rounds", type=int, default=3, help="conversations per way and condition")
    p.add_argument("--max-tokens", type=int, default=48, help="answer length bound per turn")
    p.add_argument("--instructions-facts", type=int, default=20, help="sentences of background (length)")
    p.add_argument("--noise-apps", type=int, default=3, help="other apps sending between turns (contended)")
    p.add_argument("--noise-tokens", type=int, default=900, help="prompt tokens of each noise request")
    p.add_argument("--conditions", nargs="+", default=["quiet", "contended"], choices=["quiet", "contended"])
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 turns, 1 round, short texts")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.turns, args.rounds, args.instructions_facts, args.max_tokens = 3, 1, 6, 16
        args.noise_tokens = 800
    args.turns = min(args.turns, len(QUESTIONS))
    return args


def _ttft(stream: Any) -> tuple[float, str, int]:
    """(seconds to the first chunk, the whole text, cached prompt tokens) of a started stream."""
    t0 = time.perf_counter()
    first = None
    text, cached = [], 0
    with stream:
        for chunk in stream:
            if first is None:
                first = time.perf_counter() - t0
            text.append(chunk.text)
            if chunk.usage is not None:
                cached = chunk.usage.cached_tokens
    assert first is not None, "no chunk came"
    return first, "".join(text), cached


def _noise(clients: list[AiClient], tokens: int, serial: list[int]) -> None:
    """Each noise app completes a prompt of about `tokens` tokens that nobody sent before."""
    for c in clients:
        serial[0] += 1
        words = " ".join(f"w{serial[0]}x{i}" for i in range(tokens // 4))
        c.complete(words, max_tokens=1, temperature=0)


def _conversation(
    way: str, ai: AiClient, instructions: str, args: argparse.Namespace, noise: Any
) -> list[tuple[float, int]]:
    """(TTFT, cached tokens) of each turn of one conversation, `way` "session" or "resend"."""
    out = []
    sampling = {"max_tokens": args.max_tokens, "temperature": 0.0}
    if way == "session":
        with ai.create_session(instructions) as s:
            for q in QUESTIONS[: args.turns]:
                ttft, _, cached = _ttft(s.stream(q, **sampling))
                out.append((ttft, cached))
                noise()
        return out
    history: list[tuple[str, str]] = [("system", instructions)]
    for q in QUESTIONS[: args.turns]:
        ttft, answer, cached = _ttft(ai.stream_chat([*history, ("user", q)], **sampling))  # type: ignore[arg-type]
        history += [("user", q), ("assistant", answer)]
        out.append((ttft, cached))
        noise()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "DATAMGR_AI__N_CTX": "4096",
        "DATAMGR_AI__MAX_TOKENS_LIMIT": "256",
        "DATAMGR_AI__MAX_SESSIONS_PER_APP": "4",
    }
    result: dict[str, Any] = {"machine": machine(), "turns": args.turns, "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="intel-session-") as tmp:
        daemon = Daemon(Path(tmp) / "data", env=env).start(service=AI_SERVICE)
        try:
            tokens = {
                way: daemon.add_app(f"com.bench.{way}", USE_AI) for way in ("session", "resend", "warm")
            }
            noise_tokens = [daemon.add_app(f"com.bench.noise{i}", USE_AI) for i in range(args.noise_apps)]
            clients = {way: AiClient.connect(daemon.address, t) for way, t in tokens.items()}
            noisy = [AiClient.connect(daemon.address, t) for t in noise_tokens]
            clients["warm"].complete("Warm up.", max_tokens=4, temperature=0)
            serial = [0]
            for condition in args.conditions:
                per_way: dict[str, list[list[tuple[float, int]]]] = {"session": [], "resend": []}
                for r in range(args.rounds):
                    # a fresh background each round, so that no earlier round's blocks help
                    instructions = f"Round {condition} {r}. " + FACT * args.instructions_facts
                    order = ("session", "resend") if r % 2 == 0 else ("resend", "session")
                    for way in order:

                        def noise(condition: str = condition) -> None:
                            if condition == "contended":
                                _noise(noisy, args.noise_tokens, serial)

                        per_way[way].append(_conversation(way, clients[way], instructions, args, noise))
                summary: dict[str, Any] = {}
                for way, convs in per_way.items():
                    summary[f"{way}_ttft_s"] = [
                        statistics.median(c[t][0] for c in convs) for t in range(args.turns)
                    ]
                    summary[f"{way}_cached_tokens"] = [
                        statistics.median(c[t][1] for c in convs) for t in range(args.turns)
                    ]
                summary["ratio_last_turn"] = summary["session_ttft_s"][-1] / summary["resend_ttft_s"][-1]
                result[condition] = summary
            for c in [*clients.values(), *noisy]:
                c.close()
        finally:
            daemon.stop()
    return result


def report(result: dict[str, Any]) -> None:
    print(f"machine: {result['machine']}")
    print(f"sessions vs resending the history, {result['turns']} turns, median of {result['rounds']} rounds")
    for condition in ("quiet", "contended"):
        r = result.get(condition)
        if r is None:
            continue
        print(f"\n{condition}:")
        print(
            f"  {'turn':>4} {'session TTFT':>13} {'cached':>7} {'resend TTFT':>12} {'cached':>7} {'ratio':>6}"
        )
        for t in range(result["turns"]):
            s, rs = r["session_ttft_s"][t], r["resend_ttft_s"][t]
            print(
                f"  {t + 1:>4} {s * 1000:>11.1f}ms {r['session_cached_tokens'][t]:>7.0f} "
                f"{rs * 1000:>10.1f}ms {r['resend_cached_tokens'][t]:>7.0f} {s / rs:>6.2f}"
            )
        print(f"  ratio at turn {result['turns']}: {r['ratio_last_turn']:.2f}x (target <= 0.2x at the fifth)")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)


if __name__ == "__main__":
    main()

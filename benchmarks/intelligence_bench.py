"""Issue 15's benchmark in one run: the AI as a data service, each part beside its baseline.

Run: .venv/bin/python benchmarks/intelligence_bench.py [--quick] [--json] [--skip embed retrieve session]

1. Embedding throughput (texts/s): the daemon's Embed RPC against llama.cpp's embedding called directly
   in process, same GGUF, texts and batch size (benchmarks/_intel_embed.py; target at least 0.8x).
2. Retrieval latency p50/p99 over 100,000 rows against a brute-force numpy scan of the same vectors, and
   write throughput of an indexed table against the same table unindexed, the embedding behind the
   writes (benchmarks/_intel_retrieve.py; target at least 0.7x).
3. Multi-turn chat with a session against resending the history: TTFT at the fifth turn, quiet and with
   other apps' traffic between turns (benchmarks/_intel_session.py; target at most 0.2x).

Each part starts its own daemon and stops it before the next, so none runs beside another. Each module
also runs alone with more options; `--quick` makes every part a smoke run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _intel_embed
import _intel_retrieve
import _intel_session

PARTS = ("embed", "retrieve", "session")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of every part")
    ap.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    ap.add_argument("--json", action="store_true", help="print all results as one JSON object")
    return ap.parse_args()


def _retrieve_args(quick: bool) -> argparse.Namespace:
    argv = ["--rows", "5000", "--queries", "50", "--write-rows", "2000", "--singles", "100", "--rounds", "2"]
    return _intel_retrieve.parser().parse_args(argv if quick else [])


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = ["--quick"] if args.quick else []
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if "embed" not in args.skip:
        out["embed"] = _intel_embed.run(_intel_embed.parse(quick))
    if "retrieve" not in args.skip:
        out["retrieve"] = _intel_retrieve.run(_retrieve_args(args.quick))
    if "session" not in args.skip:
        out["session"] = _intel_session.run(_intel_session.parse(quick))
    return out


def summary(out: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(measure, baseline, ours, ratio, target) rows of what ran."""
    rows = []
    if e := out.get("embed"):
        rows.append(
            (
                "embedding, texts/s",
                f"llama.cpp in process {e['llama_cpp_texts_per_s']:.1f}",
                f"{e['ours_texts_per_s']:.1f}",
                f"{e['ratio']:.2f}x",
                ">= 0.8x",
            )
        )
    if r := out.get("retrieve"):
        if ret := r.get("retrieval"):
            ours, brute = ret["ours_retrieve"], ret["numpy_brute_force"]
            rows.append(
                (
                    f"retrieval over {ret['rows']:,} rows, p50 / p99 ms",
                    f"numpy scan {brute['p50_ms']:.2f} / {brute['p99_ms']:.2f}",
                    f"{ours['p50_ms']:.2f} / {ours['p99_ms']:.2f}",
                    f"{ours['p50_ms'] / brute['p50_ms']:.2f}x (p50)",
                    "",
                )
            )
        if w := r.get("writes"):
            for kind in ("batch", "single"):
                rates, ratios = w[f"{kind}_rows_per_s"], w[f"{kind}_ratio_over_plain"]
                for name, ratio in ratios.items():
                    if name == "plain":
                        continue
                    rows.append(
                        (
                            f"{kind} inserts, rows/s, {name}",
                            f"unindexed {rates['plain']}",
                            f"{rates[name]}",
                            f"{ratio:.2f}x",
                            ">= 0.7x",
                        )
                    )
    if s := out.get("session"):
        for condition in ("quiet", "contended"):
            if c := s.get(condition):
                turn = len(c["session_ttft_s"])
                rows.append(
                    (
                        f"TTFT at turn {turn}, {condition}, ms",
                        f"resend history {c['resend_ttft_s'][-1] * 1000:.0f}",
                        f"session {c['session_ttft_s'][-1] * 1000:.0f}",
                        f"{c['ratio_last_turn']:.2f}x",
                        "<= 0.2x",
                    )
                )
    return rows


def main() -> None:
    args = parse()
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    if "embed" in out:
        _intel_embed.report(out["embed"])
    if "retrieve" in out:
        print(json.dumps(out["retrieve"], indent=2))
    if "session" in out:
        _intel_session.report(out["session"])
    print(f"\nintelligence_bench, started {out['started']}")
    print("| measure | baseline | ours | ratio | target |")
    print("|---|---|---|---|---|")
    for row in summary(out):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

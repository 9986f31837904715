"""The model across devices: a weak device (a quarter of a core, cgroup v1 `cpu.cfs_quota_us`) paired
with a strong one (the rest of the machine), both real daemons with the real model, in one run.

Run (as root, cgroup v1): .venv/bin/python benchmarks/cross_device_bench.py [--clients 8] [--requests 2]

- Offload: `--clients` apps' threads on the weak device each send `--requests` completions back to back
  (distinct ~60-token prompts, 64 tokens out, greedy, EOS ignored), first with placement LOCAL (the
  baseline: the weak device alone), then AUTO (the daemon places each request by expected first token).
  Printed: tok/s and TTFT p50/p99 of each, the ratio (target: AUTO at least 3x LOCAL's tok/s), and where
  AUTO's requests ran.
- Split (Splitwise): a ~1,000-token prompt's time to first token on the weak device alone, against
  prefill on the strong device and decode on the weak one from the KV state it sends (target at most
  0.3x); the bytes shipped.
- Migration (planned): the same, but the strong device's owner drains it (`datamgr ai drain`) after
  10 tokens: the gap (target at most 1 s), tokens lost and repeated.
- Migration (unplanned): a request from the weak device runs on the strong one; after 10 tokens the
  strong daemon is killed (-9). Printed: the gap between the last token before the kill and the next
  one (detection + replay of prompt and streamed tokens on the weak device; target at most 3 s), and
  tokens lost or repeated (the stream must hold exactly max_tokens; target 0 and 0).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from _machine import machine  # noqa: E402
from cgroup import cpu_cgroup, start_in, unavailable  # noqa: E402
from harness import Daemon  # noqa: E402
from test_pairing import _owner, _pair  # noqa: E402

from aicap import AiClient  # noqa: E402

USE_AI = "ohos.permission.USE_AI"
APP = "com.bench.ai"
ENV = {"DATAMGR_AI__ENABLED": "true", "DATAMGR_DISCOVERY__ENABLED": "false", "DATAMGR_SYNC__AUTO": "false"}
MAX_TOKENS = 64


def prompt(client: int, request: int) -> str:
    return (
        f"Client {client}, request {request}: write a short paragraph about the history of the number "
        f"{client * 100 + request}, its properties, and where it appears in everyday life."
    )


def offload_phase(
    address: str, token: str, clients: int, requests: int, placement: str
) -> tuple[float, list[float], dict[str, int]]:
    """tok/s over the phase, each request's TTFT, and how many requests each device served."""
    ttfts: list[float] = []
    where: dict[str, int] = {}
    tokens = [0]
    lock = threading.Lock()

    def run(c: int) -> None:
        with AiClient.connect(address, token) as ai:
            for r in range(requests):
                t0 = time.perf_counter()
                first = None
                n = 0
                device = "?"
                for chunk in ai.stream_complete(
                    prompt(c, r), max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True, placement=placement
                ):
                    if first is None:
                        first = time.perf_counter() - t0
                    n += len(chunk.token_ids)
                    if chunk.usage is not None:
                        device = chunk.usage.device
                with lock:
                    ttfts.append(first or 0.0)
                    tokens[0] += n
                    where[device] = where.get(device, 0) + 1

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tokens[0] / (time.perf_counter() - t0), ttfts, where


def moved(
    address: str, token: str, strong_id: str, prompt: str, move: Callable[[], object]
) -> tuple[float, int, int]:
    """(gap in s, tokens received, max_tokens) for a stream on the strong device that `move` ends
    there after 10 tokens: the gap is from the token before to the token after."""
    stamps: list[float] = []
    got: list[int] = []
    with AiClient.connect(address, token) as ai:
        stream = ai.stream_complete(
            prompt, max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True, placement=strong_id
        )
        at = 0
        for chunk in stream:
            got.extend(chunk.token_ids)
            stamps.append(time.perf_counter())
            if len(got) == 10:
                move()
                at = len(stamps)
    gap = stamps[at] - stamps[at - 1] if len(stamps) > at else float("inf")
    return gap, len(got), MAX_TOKENS


def long_prompt_ttft(address: str, token: str, placement: str, i: int) -> float:
    """Seconds to the first token of a ~1,000-token prompt (another each call: no prefix-cache hit)."""
    text = f"Document {i}. " + "The tide comes in over the old harbour wall, and the boats lift. " * 70
    with AiClient.connect(address, token) as ai:
        t0 = time.perf_counter()
        for _chunk in ai.stream_complete(text, max_tokens=1, temperature=0, placement=placement):
            return time.perf_counter() - t0
    return float("nan")


def p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--quota", type=float, default=0.25, help="The weak device's share of one core.")
    parser.add_argument(
        "--peer-max-concurrent",
        type=int,
        help="ai.peer_max_concurrent of the strong device (default: --clients; the setting's own default, "
        "4, keeps half of 8 clients' requests on the weak device)",
    )
    parser.add_argument("--logs", type=Path, help="Copy both daemons' logs into this directory at the end.")
    return parser.parse_args()


def main() -> None:
    args = _args()
    if reason := unavailable():
        raise SystemExit(f"needs a cgroup v1 cpu group for the weak device: {reason}")

    peer_max = args.peer_max_concurrent or args.clients
    with tempfile.TemporaryDirectory(prefix="xdev-bench-") as tmp, cpu_cgroup(args.quota) as group:
        root = Path(tmp)
        strong = Daemon(
            root / "strong",
            env={
                **ENV,
                "DATAMGR_DISCOVERY__DEVICE_NAME": "strong",
                "DATAMGR_AI__SERVE_PEERS": "paired",
                "DATAMGR_AI__PEER_MAX_CONCURRENT": str(peer_max),
            },
        )
        weak = Daemon(
            root / "weak",
            # one decode thread: a quarter of a core cannot run a team of two
            env={
                **ENV,
                "DATAMGR_DISCOVERY__DEVICE_NAME": "weak",
                "DATAMGR_AI__OFFLOAD": "true",
                "DATAMGR_AI__N_THREADS": "1",
            },
        )
        start_in(None, strong)
        start_in(group, weak)
        try:
            _pair(weak, strong)
            with _owner(strong) as owner:
                strong_id = owner.identity().device_id
            with _owner(weak) as owner:
                weak_id = owner.identity().device_id
            token = weak.add_app(APP, USE_AI)
            local = offload_phase(weak.address, token, args.clients, args.requests, "local")
            auto = offload_phase(weak.address, token, args.clients, args.requests, "auto")
            split_local = [long_prompt_ttft(weak.address, token, "local", i) for i in range(2)]
            split = [long_prompt_ttft(weak.address, token, "split", 10 + i) for i in range(2)]
            with _owner(weak) as owner:
                shipped = [
                    r.bytes for r in owner.peer_reads(strong_id, 10) if r.key.startswith("ai-prefill:")
                ]
            admin = (strong.data_dir / "admin.token").read_text().strip()
            with AiClient.connect(strong.address, admin) as owner:
                river = "Once upon a time, by a river,"
                d_gap, d_got, _ = moved(weak.address, token, strong_id, river, owner.drain)
                owner.drain(resume=True)
            sea = "Once upon a time, in a city by the sea,"
            gap, got, wanted = moved(weak.address, token, strong_id, sea, strong.kill9)
        finally:
            weak.stop()
            if strong.proc is not None:
                strong.stop()
            keep_logs(args.logs, weak, strong)

    print(f"machine: {machine()}")
    print(
        f"weak device: {args.quota:g} of a core (cgroup cpu.cfs_quota_us); strong: the rest of the machine, "
        f"serving it up to {peer_max} generations at once (ai.peer_max_concurrent)"
    )
    print(
        f"{args.clients} clients on the weak device x {args.requests} requests, ~60-token prompts, "
        f"{MAX_TOKENS} tokens out, greedy"
    )
    print_offload(local, auto, {weak_id: "weak", strong_id: "strong"})
    here, there = statistics.median(split_local), statistics.median(split)
    kib = statistics.median(shipped) / 1024 if shipped else float("nan")
    print(
        f"a ~1,000-token prompt from the weak device, TTFT: prefill and decode there {here:.2f} s; "
        f"prefill on the strong device, decode on the weak (split) {there:.2f} s = {there / here:.2f}x "
        f"(target <= 0.3x: {'met' if there / here <= 0.3 else 'NOT met'}); KV state shipped {kib:,.0f} KiB"
    )
    print(gap_line("planned migration (datamgr ai drain on the serving device)", d_gap, 1.0, d_got, wanted))
    print(gap_line("migration after kill -9 of the serving device", gap, 3.0, got, wanted))


def keep_logs(to: Path | None, *daemons: Daemon) -> None:
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        for d in daemons:
            shutil.copy(d.log_path, to / f"{d.data_dir.name}.log")


Phase = tuple[float, list[float], dict[str, int]]


def print_offload(local: Phase, auto: Phase, names: dict[str, str]) -> None:
    print(f"{'placement':12} {'tok/s':>8} {'TTFT p50 (s)':>13} {'TTFT p99 (s)':>13}  served by")
    for name, (tps, ttfts, where) in (("LOCAL", local), ("AUTO", auto)):
        served = ", ".join(f"{names.get(d, d)} {n}" for d, n in sorted(where.items()))
        print(f"{name:12} {tps:8.1f} {statistics.median(ttfts):13.2f} {p(ttfts, 0.99):13.2f}  {served}")
    ratio = auto[0] / local[0]
    print(f"AUTO / LOCAL tok/s: {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")


def gap_line(what: str, gap: float, target: float, got: int, wanted: int) -> str:
    met = "met" if gap <= target else "NOT met"
    lost, repeated = max(0, wanted - got), max(0, got - wanted)
    return (
        f"{what}: gap {gap:.2f} s (target <= {target:g} s: {met}); tokens {got} of {wanted}: "
        f"lost {lost}, repeated {repeated}"
    )


if __name__ == "__main__":
    main()

"""Tenants: one app's latency while another app attacks the daemon, beside the same work on an idle daemon.

Also the daemon's peak memory against what its configured limits allow (issue 10).

Run: .venv/bin/python benchmarks/tenants_bench.py [--quick] [--no-ai] [--seconds 40] [--attacks ...]
     [--daemon-env KEY=VALUE ...]

One run, one real daemon (tests/integration/harness.Daemon on a temp data dir, with the model unless --no-ai):

- idle: the good app (com.bench.good) works for --seconds: one thread loops over DataShare insert + a one-row
  query, KV put + get, UDMF DATA_HUB insert + get of a small record; another loops over AI complete of 8
  tokens (greedy, EOS ignored). p50 and p99 per kind of call.
- contended: the same work for the same time while com.bench.hostile attacks, each attack a process of its own
  (benchmarks/_hostile.py; niced by --nice, so that the hostile clients' own CPU is the OS's business and the
  figures show the daemon's share): change subscriptions it never reads (DataShare and KV), floods of 1 MiB
  DATA_HUB records, 1 MiB KV values and ~800 KB DataShare rows (until refused, or until the bench's cap
  --flood-mb per kind), Deletes and queries with two long `like` patterns over ~800 KB rows, 500,000-character
  prompts, and large messages with a token the daemon does not know (to DataShare Insert and Health Check).
  `--attacks` picks some of them, to tell which one costs what.

Prints both phases' p50/p99 per kind and the p99 ratio (target: within 3x), each attack's outcomes by status
code (refusals are expected; INTERNAL or UNKNOWN is a bug), the daemon's peak RSS (VmHWM) after each phase
beside an allowance computed from the daemon's settings, its RSS once the attacks ended, and whether it
still answers. Limits that exist in datamgr.config are found at run time (the bench passes only settings
that exist): a per-app storage quota, if there is one, is set to --quota-mb so that the flood meets it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _hostile  # noqa: E402
from _hostile import ATTACKS, BUG_CODES, HOSTILE, MiB, Plan, code_of  # noqa: E402
from _limits import Limits  # noqa: E402
from _machine import cpu_times, machine, proc_jiffies  # noqa: E402
from harness import Daemon  # noqa: E402

GOOD = "com.bench.good"
GOOD_URI = f"datashare:///{GOOD}/main/notes"
GOOD_MANIFEST = {
    "bundle": GOOD,
    "stores": [
        {
            "name": "main",
            "tables": [
                {
                    "name": "notes",
                    "primary_key": "id",
                    "columns": [
                        {"name": "id", "type": "integer"},
                        {"name": "title", "type": "text"},
                        {"name": "n", "type": "integer"},
                    ],
                }
            ],
        }
    ],
}
USE_AI = "ohos.permission.USE_AI"
AI_PROMPT = "The capital of France is"
TARGET = 3.0
KINDS = (
    "DataShare insert",
    "DataShare query (1 row)",
    "KV put",
    "KV get",
    "UDMF insert (DATA_HUB)",
    "UDMF get",
    "AI complete (8 tokens)",
)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def proc_status(pid: int, key: str) -> int:
    """A /proc/<pid>/status size (VmRSS, VmHWM) in bytes; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class CpuShares:
    """Shares of all CPU time during a phase: the daemon's, the bench's own processes', others' (noise)."""

    def __init__(self, daemon: int) -> None:
        self.daemon = daemon
        self.pids: set[int] = {os.getpid()}
        self.start = self.snap()

    def snap(self) -> tuple[int, int, int, int, int]:
        return (*cpu_times(), proc_jiffies(self.daemon), sum(proc_jiffies(p) for p in self.pids))

    def restart(self) -> None:
        self.start = self.snap()

    def line(self) -> str:
        a, b = self.start, self.snap()
        span = max(1, b[2] - a[2])
        daemon, bench = b[3] - a[3], b[4] - a[4]
        others = max(0, (b[1] - a[1]) - daemon - bench)
        return (
            f"CPU: daemon {100 * daemon / span:.0f}%, bench clients {100 * bench / span:.0f}%, "
            f"others {100 * others / span:.0f}%, steal {100 * (b[0] - a[0]) / span:.0f}% of all cores"
        )


@dataclass
class Phase:
    """The good app's latencies (seconds) and failures per kind of call, and what the machine did."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    cpu: str = ""
    busy_since: float = 0.0  # start of the call in progress (0: none), for the hang watchdog

    def timed(self, kind: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        self.busy_since = time.monotonic()
        try:
            result = fn(*args)
        except Exception as exc:  # a failure of the good app's call is a finding, counted and printed
            self.failures[kind][code_of(exc)] += 1
            return None
        finally:
            self.busy_since = 0.0
        self.latencies[kind].append(time.perf_counter() - t0)
        return result


class GoodApp:
    """The well-behaved app's SDK clients, opened once; `work()` runs its loops for a while."""

    def __init__(self, address: str, token: str, ai: bool) -> None:
        from aicap import AiClient
        from datamgr.client import DataShareHelper, KvStoreClient, SecurityLevel
        from udmf import UdmfClient

        self.ds = DataShareHelper.connect(address, token)
        self.ds.register_provider(GOOD_MANIFEST)
        self.kv_client = KvStoreClient.connect(address, token)
        self.kv = self.kv_client.get_kv_store("prefs", security_level=SecurityLevel.S1)
        self.udmf = UdmfClient.connect(address, token=token)
        self.ai = AiClient.connect(address, token) if ai else None
        self.i = 0

    def close(self) -> None:
        for c in (self.ds, self.kv_client, self.udmf, self.ai):
            if c is not None:
                c.close()

    def _data_loop(self, p: Phase, until: float) -> None:
        from datamgr.client import DataSharePredicates
        from udmf import Intention, PlainText, UnifiedData, UnifiedRecord

        while time.monotonic() < until:
            self.i += 1
            i = self.i
            row_id = p.timed(KINDS[0], self.ds.insert, GOOD_URI, {"title": f"note {i}", "n": i})
            if row_id is not None:
                p.timed(KINDS[1], self._query_one, DataSharePredicates().equal_to("id", row_id))
            p.timed(KINDS[2], self.kv.put, f"key{i % 1000}", f"value {i}")
            p.timed(KINDS[3], self.kv.get, f"key{i % 1000}")
            data = UnifiedData(UnifiedRecord(PlainText(f"hello {i}")))
            key = p.timed(KINDS[4], self.udmf.insert_data, data, Intention.DATA_HUB)
            if key is not None:
                p.timed(KINDS[5], self.udmf.get_data, key)

    def _query_one(self, where: Any) -> None:
        with self.ds.query(GOOD_URI, where) as rs:
            assert rs.row_count == 1, rs.row_count

    def _ai_loop(self, p: Phase, until: float) -> None:
        assert self.ai is not None
        greedy = {"max_tokens": 8, "temperature": 0.0, "ignore_eos": True}
        while time.monotonic() < until:
            p.timed(KINDS[6], lambda: self.ai.complete(AI_PROMPT, **greedy))  # type: ignore[union-attr,arg-type]

    def work(self, seconds: float, p: Phase) -> Phase:
        until = time.monotonic() + seconds
        loops = [self._data_loop] + ([self._ai_loop] if self.ai is not None else [])
        threads = [threading.Thread(target=loop, args=(p, until), daemon=True) for loop in loops]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return p


class Hostile:
    """The misbehaving app's attack processes (spawned: no gRPC state crosses a fork)."""

    def __init__(self, plan: Plan, attacks: list[str]) -> None:
        self.ctx = mp.get_context("spawn")
        self.plan = plan
        self.attacks = attacks
        self.stop = self.ctx.Event()
        self.results: Any = self.ctx.Queue()
        self.procs: dict[str, Any] = {}
        self.outcomes: dict[str, tuple[dict[str, dict[str, int]], dict[str, int], str]] = {}

    def start(self, timeout: float = 120) -> None:
        """Starts the attacks, subscribers first (so the floods feed them), each once it is ready."""
        order = sorted(self.attacks, key=lambda a: a != "subscribers")
        for attack in order:
            ready = self.ctx.Event()
            proc = self.ctx.Process(
                target=_hostile.run, args=(attack, self.plan, self.stop, ready, self.results), daemon=True
            )
            proc.start()
            self.procs[attack] = proc
            if not ready.wait(timeout):
                print(f"  {attack}: not ready after {timeout:.0f} s (the daemon may be stalled)", flush=True)

    def finish(self, timeout: float = 60) -> None:
        """Stops every attack and collects its counts; a process that does not report is killed."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < len(self.procs) and time.monotonic() < deadline:
            try:
                attack, counts, sizes, error = self.results.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # queue.Empty: a process that never reported
                break
            self.outcomes[attack] = (counts, sizes, error)
        for attack, proc in self.procs.items():
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            if attack not in self.outcomes:
                self.outcomes[attack] = ({}, {}, f"no report within {timeout:.0f} s after stop (killed)")


def watchdog(phase: Phase, daemon: Daemon, hang_s: float, done: threading.Event) -> None:
    """Reports a daemon that stopped answering the good app's calls, and ends the run."""
    while not done.wait(1.0):
        since = phase.busy_since
        if since and time.monotonic() - since > hang_s:
            proc = daemon.proc
            state = "exited" if proc is None or proc.poll() is not None else "running"
            print(
                f"\nHUNG: a call of the good app has waited {hang_s:.0f} s; the daemon is {state}", flush=True
            )
            print("last lines of the daemon log:\n" + "\n".join(daemon.log().splitlines()[-30:]), flush=True)
            if proc is not None and proc.poll() is None:
                proc.kill()
            os._exit(2)


def run_phase(good: GoodApp, seconds: float, cpu: CpuShares, daemon: Daemon, hang_s: float) -> Phase:
    phase = Phase()
    done = threading.Event()
    threading.Thread(target=watchdog, args=(phase, daemon, hang_s, done), daemon=True).start()
    cpu.restart()
    good.work(seconds, phase)
    phase.cpu = cpu.line()
    done.set()
    return phase


def health(daemon: Daemon) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert daemon.proc is not None
    if daemon.proc.poll() is not None:
        return f"CRASHED (exit code {daemon.proc.returncode})"
    try:
        with grpc.insecure_channel(daemon.address) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    except grpc.RpcError as exc:
        return f"NOT ANSWERING ({exc.code().name} within 30 s)"


# ---------------------------------------------------------------- report


def print_latencies(idle: Phase, busy: Phase) -> None:
    print(
        f"{'the good app, per call (ms)':<28}{'idle n':>8}{'p50':>9}{'p99':>9}"
        f"{'attacked n':>12}{'p50':>9}{'p99':>10}{'p99 ratio':>11}"
    )
    for kind in KINDS:
        a, b = idle.latencies.get(kind, []), busy.latencies.get(kind, [])
        if not a and not b:
            continue
        ratio = pct(b, 0.99) / pct(a, 0.99) if a and b else float("nan")
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(
            f"{kind:<28}{len(a):>8}{1e3 * pct(a, 0.5):>9.2f}{1e3 * pct(a, 0.99):>9.2f}"
            f"{len(b):>12}{1e3 * pct(b, 0.5):>9.2f}{1e3 * pct(b, 0.99):>10.2f}{ratio:>9.2f}x  {verdict}"
        )
    for name, phase in (("idle", idle), ("attacked", busy)):
        for kind, codes in phase.failures.items():
            print(f"  FAILED calls of the good app ({name}), {kind}: {dict(codes)}")
    print(f"target: every p99 within {TARGET:.0f}x of idle")


def print_attacks(hostile: Hostile, plan: Plan) -> list[str]:
    """Each attack's outcomes; returns the bugs seen (INTERNAL / UNKNOWN)."""
    bugs: list[str] = []
    print(f"the hostile app ({HOSTILE}), outcomes by status code:")
    for attack in hostile.attacks:
        counts, sizes, error = hostile.outcomes.get(attack, ({}, {}, "no report"))
        for kind, by_code in counts.items():
            accepted = f" ({sizes[kind] / MiB:,.0f} MiB accepted)" if sizes.get(kind) else ""
            capped = (
                "; stopped at the bench's cap, never refused"
                if plan.flood_cap_bytes and sizes.get(kind, 0) >= plan.flood_cap_bytes
                else ""
            )
            text = ", ".join(f"{code} {n}" for code, n in sorted(by_code.items(), key=lambda kv: -kv[1]))
            print(f"  {attack:<12}{kind:<50}{text}{accepted}{capped}")
            bugs += [f"{kind}: {code} x{by_code[code]}" for code in BUG_CODES if code in by_code]
        if error:
            print(f"  {attack:<12}ERROR: {error}")
    return bugs


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Short phases and smaller attacks (under a minute).")
    ap.add_argument(
        "--seconds", type=float, default=None, help="Length of each phase (default 40; quick 10)."
    )
    ap.add_argument(
        "--no-ai", action="store_true", help="Leave the model out (no AI work, no prompt attack)."
    )
    ap.add_argument("--attacks", default=",".join(ATTACKS), help=f"Comma list of {', '.join(ATTACKS)}.")
    ap.add_argument("--flood-mb", type=int, default=None, help="Bench cap per flood kind (1024; quick 256).")
    ap.add_argument(
        "--quota-mb", type=int, default=None, help="Per-app storage quota, if the daemon has one."
    )
    ap.add_argument(
        "--preauth-mb", type=int, default=None, help="Unauthenticated message size (64; quick 32)."
    )
    ap.add_argument(
        "--pattern-chars",
        type=int,
        default=None,
        help="Length of each `like` pattern (default: the daemon's datashare.max_pattern_chars, else 1000).",
    )
    ap.add_argument("--nice", type=int, default=10, help="Niceness of the hostile app's processes.")
    ap.add_argument(
        "--hang-s", type=float, default=300, help="A good call waiting this long: the daemon hung."
    )
    ap.add_argument("--daemon-env", action="append", default=[], help="KEY=VALUE for the daemon.")
    args = ap.parse_args()
    args.seconds = args.seconds or (10.0 if args.quick else 40.0)
    args.attacks = [a for a in args.attacks.split(",") if a and not (args.no_ai and a == "prompts")]
    unknown = set(args.attacks) - set(ATTACKS)
    if unknown:
        ap.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    return args


@dataclass
class Result:
    """What one run measured."""

    env: dict[str, str]
    plan: Plan
    idle: Phase
    busy: Phase
    hostile: Hostile
    idle_hwm: int  # the daemon's VmHWM after the idle phase
    peak: int  # its VmHWM after the attacks
    after: int  # its VmRSS 3 s after the attacks ended
    state: str  # its health then
    code: int | None = None  # its exit code on SIGTERM
    tracebacks: Counter[str] = field(default_factory=Counter)  # the exception line of each in its log


def measure(args: argparse.Namespace, limits: Limits, env: dict[str, str], tmp: Path) -> Result:
    """Starts the daemon, runs the idle and the attacked phase, stops it."""
    daemon = Daemon(tmp / "data", env=env).start(service="" if args.no_ai else "aicap.v1.AiService")
    assert daemon.proc is not None
    pid = daemon.proc.pid
    try:
        good_token = daemon.add_app(GOOD, USE_AI)
        hostile_token = daemon.add_app(HOSTILE, USE_AI)
        with daemon.helper(hostile_token) as h:
            h.register_provider(_hostile.MANIFEST)
        plan = Plan(
            address=daemon.address,
            token=hostile_token,
            flood_cap_bytes=(args.flood_mb or (256 if args.quick else 1024)) * MiB,
            pattern_chars=args.pattern_chars or limits.get("datashare.max_pattern_chars", 1000),
            ds_subscribers=8 if args.quick else 16,
            preauth_bytes=(args.preauth_mb or (32 if args.quick else 64)) * MiB,
            nice=args.nice,
        )
        good = GoodApp(daemon.address, good_token, ai=not args.no_ai)
        cpu = CpuShares(pid)
        print(f"warming up; {args.seconds:.0f} s idle, {args.seconds:.0f} s attacked", flush=True)
        good.work(2.0, Phase())
        idle = run_phase(good, args.seconds, cpu, daemon, args.hang_s)
        idle_hwm = proc_status(pid, "VmHWM")
        print(f"  idle: {sum(map(len, idle.latencies.values()))} calls; starting the attacks", flush=True)
        hostile = Hostile(plan, args.attacks)
        hostile.start()
        cpu.pids.update(p.pid for p in hostile.procs.values())
        busy = run_phase(good, args.seconds, cpu, daemon, args.hang_s)
        print(f"  attacked: {sum(map(len, busy.latencies.values()))} calls; stopping the attacks", flush=True)
        hostile.finish()
        peak = proc_status(pid, "VmHWM")
        time.sleep(3)
        result = Result(
            env, plan, idle, busy, hostile, idle_hwm, peak, proc_status(pid, "VmRSS"), health(daemon)
        )
        good.close()
    finally:
        code = None
        try:
            code = daemon.stop(timeout=60)
        except Exception as exc:  # a daemon that does not stop is a finding; the figures are kept
            print(f"the daemon did not stop on SIGTERM: {exc!r}; killing it")
            daemon.kill9()
    result.code, result.tracebacks = code, tracebacks(daemon.log())
    return result


def tracebacks(log: str) -> Counter[str]:
    """The exception line ending each traceback in a log, counted."""
    found: Counter[str] = Counter()
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = next((x for x in lines[i + 1 :] if x and not x.startswith(" ")), "?")
            found[end[:150]] += 1
    return found


def report(args: argparse.Namespace, limits: Limits, r: Result) -> None:
    print()
    print(f"machine: {machine()}")
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M')}   phases: {args.seconds:.0f} s each   "
        f"hostile processes' niceness: {args.nice}"
    )
    passed = " ".join(f"{k}={v}" for k, v in sorted(r.env.items()))
    print(f"daemon settings passed: {passed or 'none (defaults)'}")
    print(f"idle     {r.idle.cpu}")
    print(f"attacked {r.busy.cpu}")
    print()
    print_latencies(r.idle, r.busy)
    print()
    bugs = print_attacks(r.hostile, r.plan)
    print()
    counts = {a: r.hostile.outcomes[a][0] for a in r.hostile.outcomes}
    allowance, terms = limits.memory_allowance(r.idle_hwm, r.plan, counts)
    print(
        f"daemon peak RSS (VmHWM): idle {r.idle_hwm / MiB:,.0f} MiB; with the attacks {r.peak / MiB:,.0f} MiB"
    )
    print(
        f"allowance from the settings (an estimate): {allowance / MiB:,.0f} MiB = idle peak "
        f"{r.idle_hwm / MiB:,.0f} MiB"
    )
    for text, size in terms:
        print(f"  + {size / MiB:>12,.0f} MiB  {text}")
    over = r.peak - allowance
    verdict = (
        "met" if over <= 0 else f"NOT met, over by {over / MiB:,.0f} MiB ({100 * over / allowance:.0f}%)"
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if allowance > memory:
        verdict += (
            f" only because the limits allow more than the machine's {memory / 2**30:.0f} GiB: NOT bounded"
        )
    print(f"target: peak within the allowance: {verdict}")
    print(f"daemon RSS 3 s after the attacks ended: {r.after / MiB:,.0f} MiB")
    print(
        f"daemon after the attacks: {r.state}; exit code on SIGTERM {r.code}; "
        f"tracebacks in its log: {sum(r.tracebacks.values())}"
    )
    for line, n in r.tracebacks.most_common(8):
        print(f"  {n} x {line}")
    for bug in bugs:
        print(f"BUG: {bug}")


def main() -> None:
    args = parse()
    began = time.perf_counter()
    limits = Limits()
    quota = args.quota_mb * MiB if args.quota_mb is not None else None
    env = {**limits.bench_env(quota), **dict(kv.split("=", 1) for kv in args.daemon_env)}
    if args.no_ai:
        env["DATAMGR_AI__ENABLED"] = "false"
    limits.load(env)
    with tempfile.TemporaryDirectory(prefix="tenants-bench-") as tmp:
        result = measure(args, limits, env, Path(tmp))
    report(args, limits, result)
    print(f"\ntotal time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()

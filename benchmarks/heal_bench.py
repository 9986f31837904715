"""Time from the heal of a network partition to convergence, for 10,000 records changed during it,
beside the same 10,000-record incremental sync between the same daemons without a partition (one
manual sync call), in one run.

Run as root (it makes two network namespaces joined by a veth pair, and removes them):
    .venv/bin/python benchmarks/heal_bench.py [--records 10000] [--partitions 5,10,20] [--cut drop]

Alpha and bravo each run in their own namespace, discovery and the peer port on the veth addresses,
paired; the store holds `--records` keys, synced. Two variants of the same changes: one side (alpha
changes every key) and mixed (alpha changes the first 60% of the keys, bravo the last 60%: 20%
written on both, bravo's later writes win).

- Baseline, automatic sync off: the changes, then one `sync([bravo])` from alpha (PUSH for one side,
  PUSH_PULL for mixed), timed from the call to its answer.
- Heal, the same daemons restarted with automatic sync on: the link is cut (`--cut drop`: every
  packet silently lost, both links up; `down`: alpha's link down), the changes are made, the
  partition lasts its round's length, then the link comes back. Timed from the heal until both
  daemons' SQLite files hold the expected winners (read-only polling every 20 ms); "first" is when
  the first change landed. Each row also says whether discovery still listed both peers online at
  the heal: a partition that spans a peer's refresh queries (80-95% of `--offline-after-s` after it
  was last heard) makes it OFFLINE, and nothing finds it again; such a round is followed by a
  restart of both daemons, untimed, so that the next one starts online and synced.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from _machine import machine  # noqa: E402
from harness import Daemon  # noqa: E402
from netns import Cut, VethPair  # noqa: E402
from test_partition_heal import (  # noqa: E402
    STORE_ID,
    Host,
    Version,
    merged,
    open_store,
    rows,
    start_hosts,
    stop,
    wait_online,
)

from datamgr.client import DeviceClient  # noqa: E402
from datamgr.client.kv import SingleKVStore, SyncMode  # noqa: E402

CONVERGE_BOUND_S = 30.0
RUN_BOUND_S = 1200


def value(i: int, version: int) -> str:
    return f'{{"id": {i}, "title": "note number {i}", "version": {version}, "body": "lorem ipsum dolor"}}'


def put(store: SingleKVStore, keys: range, version: int) -> None:
    for start in range(keys.start, keys.stop, 128):
        store.put_batch({f"key{i:07d}": value(i, version) for i in range(start, min(keys.stop, start + 128))})


def change(a: SingleKVStore, b: SingleKVStore, n: int, mixed: bool, version: int) -> None:
    if mixed:
        put(a, range(0, n * 6 // 10), version)
        put(b, range(n * 4 // 10, n), version)
    else:
        put(a, range(n), version)


Digest = tuple[int, int, int]


def digest(state: dict[bytes, Version]) -> Digest:
    return len(state), sum(v[0] & 0xFFFFFFFF for v in state.values()), sum(v[0] >> 32 for v in state.values())


def db_digest(d: Daemon) -> Digest:
    """The same digest, computed by SQLite (cheap enough to poll)."""
    conn = sqlite3.connect(f"file:{d.data_dir / 'datamgr.db'}?mode=ro", uri=True, timeout=10)
    try:
        count, low, high = conn.execute(
            "SELECT count(*), total(hlc & 4294967295), total(hlc >> 32) FROM kv_entries "
            "WHERE store_id = ? AND device = ''",
            (STORE_ID,),
        ).fetchone()
    finally:
        conn.close()
    return count, int(low), int(high)


def baseline(a: Host, b: Host, n: int, mixed: bool, version: int) -> float:
    with a.client() as ca, b.client() as cb:
        sa, sb = open_store(ca), open_store(cb)
        change(sa, sb, n, mixed, version)
        expected = merged(rows(a.daemon), rows(b.daemon))
        started = time.perf_counter()
        result = sa.sync([b.device_id], SyncMode.PUSH_PULL if mixed else SyncMode.PUSH_ONLY)[b.device_id]
        elapsed = time.perf_counter() - started
    if result.code != "OK" or rows(a.daemon) != expected or rows(b.daemon) != expected:
        raise SystemExit(f"baseline sync did not converge: {result}")
    return elapsed


@dataclass
class Round:
    partition_s: float
    first: float | None = None  # the first change landed, seconds after the heal
    converged: float | None = None  # both hold the expected winners (None: not within the bound)
    offline: bool = False  # at the heal, discovery listed the peer offline on either side


def online(*hosts: Host) -> bool:
    """Each host lists its peer online."""
    for h in hosts:
        with DeviceClient(h.daemon.address, token_path=h.daemon.data_dir / "admin.token") as c:
            if not any(p.online for p in c.list_devices()):
                return False
    return True


def heal_round(
    net: VethPair, a: Host, b: Host, n: int, mixed: bool, version: int, r: Round, cut: Cut
) -> None:
    with a.client() as ca, b.client() as cb:
        sa, sb = open_store(ca), open_store(cb)
        net.partition(cut)
        cut_at = time.monotonic()
        try:
            change(sa, sb, n, mixed, version)
            expected = merged(rows(a.daemon), rows(b.daemon))
            before = db_digest(a.daemon), db_digest(b.daemon)
            if before == (digest(expected),) * 2:
                raise SystemExit("the changes crossed the partition")
            time.sleep(max(0.0, cut_at + r.partition_s - time.monotonic()))
            r.offline = not online(a, b)
        finally:
            net.heal()
    healed = time.perf_counter()
    want = digest(expected)
    while (elapsed := time.perf_counter() - healed) < CONVERGE_BOUND_S:
        now = db_digest(a.daemon), db_digest(b.daemon)
        if r.first is None and now != before:
            r.first = elapsed
        if now == (want, want):
            if rows(a.daemon) != expected or rows(b.daemon) != expected:
                raise SystemExit("the digests match but the rows differ")
            r.converged = elapsed
            return
        time.sleep(0.02)


def restart(a: Host, b: Host) -> None:
    """Both daemons stopped and started again (same data, same devices): they announce themselves,
    see each other ONLINE and catch up."""
    stop(a, b)
    for h in (a, b):
        h.daemon.start()
    wait_online(a.daemon, b.daemon)
    expected = merged(rows(a.daemon), rows(b.daemon))
    deadline = time.monotonic() + CONVERGE_BOUND_S
    while rows(a.daemon) != expected or rows(b.daemon) != expected:
        if time.monotonic() > deadline:
            raise SystemExit("the daemons did not catch up after a restart")
        time.sleep(0.1)


def _timeout(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError(f"the benchmark ran over {RUN_BOUND_S} s")


Results = tuple[dict[bool, list[float]], dict[bool, list[Round]]]  # baselines, heal rounds by `mixed`


def run(args: argparse.Namespace) -> Results:
    n = args.records
    base: dict[bool, list[float]] = {False: [], True: []}
    rounds: dict[bool, list[Round]] = {False: [], True: []}
    version = 1
    with tempfile.TemporaryDirectory(prefix="heal-bench-") as tmp, VethPair("dmhb") as net:
        a, b = start_hosts(Path(tmp), net, ttl=args.offline_after_s, auto=False)
        try:
            with a.client() as ca, b.client() as cb:
                open_store(cb)
                put(open_store(ca), range(n), version)
                result = open_store(ca).sync([b.device_id], SyncMode.PUSH_ONLY)[b.device_id]
                if result.code != "OK":
                    raise SystemExit(f"the initial sync failed: {result}")
            for _ in range(args.baseline_rounds):
                for mixed in (False, True):
                    version += 1
                    base[mixed].append(baseline(a, b, n, mixed, version))

            for h in (a, b):
                h.daemon.extra_env["DATAMGR_SYNC__AUTO"] = "true"
            restart(a, b)
            for partition_s in (float(x) for x in args.partitions.split(",")):
                for mixed in (False, True):
                    version += 1
                    r = Round(partition_s)
                    heal_round(net, a, b, n, mixed, version, r, args.cut)
                    rounds[mixed].append(r)
                    if r.converged is None:
                        restart(a, b)  # so that the next round starts online and synced
        finally:
            stop(a, b)
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for h in (a, b):
                    shutil.copy(h.daemon.log_path, args.logs)
    return base, rounds


def report(args: argparse.Namespace, base: dict[bool, list[float]], rounds: dict[bool, list[Round]]) -> None:
    print(f"machine: {machine()}")
    when = time.strftime("%Y-%m-%d %H:%M")
    print(
        f"{args.records:,} records changed; cut {args.cut}; offline_after_s {args.offline_after_s:g}; {when}"
    )
    for mixed in (False, True):
        name = "mixed (60% alpha, 60% bravo)" if mixed else "one side (alpha)"
        b_med = statistics.median(base[mixed])
        runs = ", ".join(f"{x:.2f}" for x in base[mixed])
        print(f"\n{name}: baseline, manual sync without a partition: median {b_med:.2f} s ({runs})")
        print(
            f"  {'partition':>9}  {'first change':>12}  {'converged':>9}  {'ratio':>6}  discovery at the heal"
        )
        for r in rounds[mixed]:
            seen = "a peer listed OFFLINE" if r.offline else "both online"
            cells = [f"{r.partition_s:>8.0f}s", f"{'-':>12}", f"{'-':>9}", f"{'-':>6}"]
            if r.converged is None:
                seen += f"; not converged within {CONVERGE_BOUND_S:.0f} s"
            else:
                first = r.first if r.first is not None else r.converged
                cells[1:] = [f"{first:>11.2f}s", f"{r.converged:>8.2f}s", f"{r.converged / b_med:>6.1f}"]
            print("  " + "  ".join([*cells, seen]))
    print("\ntarget: converged <= 2 s after the heal (ratio: converged / baseline)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--partitions", default="5,10,20", help="partition lengths (s), one round each")
    parser.add_argument("--cut", choices=["drop", "down"], default="drop")
    parser.add_argument("--baseline-rounds", type=int, default=3)
    parser.add_argument("--offline-after-s", type=float, default=30.0, help="discovery.offline_after_s")
    parser.add_argument("--logs", type=Path, help="copy the daemons' logs into this directory")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(RUN_BOUND_S)
    report(args, *run(args))


if __name__ == "__main__":
    main()

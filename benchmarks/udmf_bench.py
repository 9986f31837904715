"""UDMF: put and get of 1 KB, 1 MB and 100 MB through the daemon, side by side with copying the same bytes
to and from a file on the same disk, and the daemon's memory while a 100 MB record passes through.

Run: .venv/bin/python benchmarks/udmf_bench.py [--sizes 1K,1M,100M] [--rounds 3]

- ours: the real daemon process (tests/integration/harness.Daemon, AI off), the SDK's UdmfClient on its Unix
  socket: `insert_data` into DATA_HUB (the daemon streams large values to a file in its data directory and
  fsyncs it before answering) and `get_data` of the same key (DATA_HUB data stays after a read).
- ceiling: the same bytes written to a file in the same directory and fsynced (put), and read back (get).
- memory: the daemon's resident set (VmRSS, sampled every 5 ms) before and at its peak while a 100 MB record
  is put and then got.

MB/s are medians of --rounds; small sizes repeat each operation until it has run for a fair while.
"""

from __future__ import annotations

import argparse
import os
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
from harness import Daemon  # noqa: E402

from udmf import Intention, UdmfClient, UnifiedData, UnifiedRecord  # noqa: E402

SIZES = {"1K": 1 << 10, "1M": 1 << 20, "10M": 10 << 20, "100M": 100 << 20}
TYPE = "general.octet-stream"
MIN_SECONDS = 1.0  # each small measurement repeats at least this long


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples a process's RSS on a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))


def rate(size: int, fn: Callable[[], object]) -> float:
    """MB/s of `fn` moving `size` bytes, repeated until MIN_SECONDS have passed (at least once)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_SECONDS or size >= 50 << 20:
            return n * size / elapsed / 1e6


def file_put(path: Path, payload: bytes) -> None:
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def file_get(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def measure(client: UdmfClient, pid: int, size: int, tmp: Path) -> tuple[dict[str, float], dict[str, int]]:
    """MB/s of put, get and the file copies of one size, and the daemon's RSS growth while they ran."""
    payload = os.urandom(size)
    data = UnifiedData(UnifiedRecord(TYPE, payload))
    fpath = tmp / "copy.bin"
    keys: list[str] = []
    got: list[UnifiedData] = []  # the last get's result only

    def get_one() -> None:
        got[:] = [client.get_data(keys[-1])]

    before = rss(pid)
    with PeakRss(pid) as peak_put:
        put = rate(size, lambda: keys.append(client.insert_data(data, Intention.DATA_HUB)))
    with PeakRss(pid) as peak_get:
        get = rate(size, get_one)
    assert bytes(got[-1].get_records()[0].get_value()) == payload, "the data read back differs"
    got.clear()
    for k in keys:
        client.delete_data(key=k)
    fput = rate(size, lambda: file_put(fpath, payload))
    fget = rate(size, lambda: file_get(fpath))
    growth = {"put": peak_put.peak - before, "get": peak_get.peak - before}
    return {"put": put, "get": get, "fput": fput, "fget": fget}, growth


Rows = dict[str, dict[str, list[float]]]


def report(sizes: list[str], rows: Rows, mem: dict[str, int], rounds: int) -> None:
    print()
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}; medians of {rounds} round(s); data dir on the same disk")
    print(f"{'size':>6} {'put MB/s':>10} {'file':>9} {'ratio':>6} {'get MB/s':>10} {'file':>9} {'ratio':>6}")
    med = {name: {k: statistics.median(v) for k, v in rows[name].items()} for name in sizes}
    for name, m in med.items():
        print(
            f"{name:>6} {m['put']:>10.1f} {m['fput']:>9.1f} {m['put'] / m['fput']:>6.2f} "
            f"{m['get']:>10.1f} {m['fget']:>9.1f} {m['get'] / m['fget']:>6.2f}"
        )
    for what, growth in mem.items():
        ok = "met" if growth <= 64 << 20 else "NOT met"
        print(f"daemon memory growth during a {what}: {growth / 2**20:.1f} MB (<= 64 MB: {ok})")
    if "100M" in med:
        m = med["100M"]
        ok = m["get"] >= 100 and m["get"] / m["fget"] >= 0.25
        print(f"target: 100 MB get >= 100 MB/s and >= 25% of the file copy: {'met' if ok else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1K,1M,100M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--daemon-env", action="append", default=[], help="KEY=VALUE for the daemon.")
    args = ap.parse_args()
    env = {"DATAMGR_AI__ENABLED": "false", **dict(kv.split("=", 1) for kv in args.daemon_env)}
    sizes = [s.strip().upper() for s in args.sizes.split(",")]
    rows: Rows = {s: {"put": [], "get": [], "fput": [], "fget": []} for s in sizes}
    mem: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="udmf-bench-", dir=ROOT) as tmp:
        daemon = Daemon(Path(tmp) / "data", env=env).start()
        try:
            token = daemon.add_app("com.bench.writer")
            assert daemon.proc is not None
            with UdmfClient.connect(daemon.address, token=token) as client:
                for rnd in range(args.rounds):
                    for name in sizes:
                        m, growth = measure(client, daemon.proc.pid, SIZES[name], Path(tmp))
                        for k, v in m.items():
                            rows[name][k].append(v)
                        if SIZES[name] >= 50 << 20:
                            for k, g in growth.items():
                                mem[f"{name} {k}"] = max(mem.get(f"{name} {k}", 0), g)
                        print(
                            f"  round {rnd + 1} {name:>5}: put {m['put']:8.1f} MB/s (file {m['fput']:8.1f}), "
                            f"get {m['get']:8.1f} MB/s (file {m['fget']:8.1f})",
                            flush=True,
                        )
        finally:
            daemon.stop()
    report(sizes, rows, mem, args.rounds)


if __name__ == "__main__":
    main()

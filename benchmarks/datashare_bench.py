"""DataShare through the daemon, side by side with direct SQLAlchemy Core on the same kind of SQLite file.

Run: .venv/bin/python benchmarks/datashare_bench.py [--rows 100000] [--batch 10000] [--singles 2000]

Prints, from one run: single-row insert latency p50/p99 through the daemon; batch-insert and query
rows/s through the daemon and directly with SQLAlchemy Core (the ceiling) and their ratio; change
notification latency p50/p99 (write call start → subscriber, an upper bound of commit → subscriber),
the transport floor: a gRPC health check round trip on the same daemon, and another app's single
insert p50/p99 while one app keeps running the worst predicate the limits allow, beside idle.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from _machine import machine  # noqa: E402
from harness import Daemon  # noqa: E402

from datamgr.client import DataShareHelper, DataSharePredicates  # noqa: E402
from datamgr.errors import DatamgrError  # noqa: E402
from datamgr.storage import create_engine  # noqa: E402

BUNDLE = "com.bench.provider"
URI = f"datashare:///{BUNDLE}/main/items"
COLUMNS = [
    {"name": "id", "type": "integer"},
    {"name": "name", "type": "text", "nullable": False},
    {"name": "qty", "type": "integer"},
    {"name": "price", "type": "real"},
    {"name": "note", "type": "text"},
]
MANIFEST = {
    "bundle": BUNDLE,
    "read_permission": "bench.READ",
    "write_permission": "bench.WRITE",
    "stores": [{"name": "main", "tables": [{"name": "items", "primary_key": "id", "columns": COLUMNS}]}],
}


def rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"name": f"item-{i}", "qty": i % 1000, "price": i * 0.25, "note": "lorem ipsum dolor sit amet"}
        for i in range(start, start + n)
    ]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs: steal is time the hypervisor gave to other guests."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def core_table(path: Path) -> tuple[sa.Engine, sa.Table]:
    """The same table on a WAL SQLite file with the daemon's default settings (synchronous=NORMAL)."""
    engine = create_engine(f"sqlite:///{path}")
    meta = sa.MetaData()
    t = sa.Table(
        "items",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("qty", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
        sa.Column("price", sa.Double),
        sa.Column("note", sa.Text),
    )
    meta.create_all(engine)
    return engine, t


def core_round(engine: sa.Engine, t: sa.Table, data: list[list[dict]]) -> tuple[float, float]:
    """Batch insert and full-table query rows/s directly with SQLAlchemy Core (the ceiling)."""
    total = sum(map(len, data))
    with engine.begin() as conn:
        conn.execute(sa.delete(t))
    t0 = time.perf_counter()
    for chunk in data:
        with engine.begin() as conn:
            conn.execute(sa.insert(t), chunk)
    insert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with engine.connect() as conn:
        fetched = conn.execute(sa.select(t)).fetchall()
    query_s = time.perf_counter() - t0
    assert len(fetched) == total
    return total / insert_s, total / query_s


def daemon_round(h: DataShareHelper, data: list[list[dict]]) -> tuple[float, float]:
    """The same batch insert and query through the daemon, from a client process."""
    total = sum(map(len, data))
    h.delete(URI)
    t0 = time.perf_counter()
    for chunk in data:
        assert h.batch_insert(URI, chunk) == len(chunk)
    insert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with h.query(URI) as rs:
        count = rs.row_count
    query_s = time.perf_counter() - t0
    assert count == total, count
    return total / insert_s, total / query_s


def setup_daemon(data: Path, env: dict[str, str] | None = None) -> tuple[Daemon, str]:
    """A daemon with the benchmark provider registered; returns it and a consumer token."""
    d = Daemon(data, env=env).start()
    provider = d.add_app(BUNDLE)
    token = d.add_app("com.bench.consumer", "bench.READ", "bench.WRITE")
    with d.helper(provider) as h:
        h.register_provider(MANIFEST)
    return d, token


def single_insert_ms(d: Daemon, token: str, n: int) -> tuple[float, float]:
    """p50 and p99 of one-row inserts, one after another."""
    lat = []
    with d.helper(token) as h:
        for r in rows(n, 10_000_000):
            t0 = time.perf_counter()
            h.insert(URI, r)
            lat.append(time.perf_counter() - t0)
    return pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3


def through_daemon(d: Daemon, token: str, singles: int) -> dict[str, float]:
    """Latencies: single inserts, the transport floor, change notification."""
    out: dict[str, float] = {}
    with d.helper(token) as h:
        out["insert_p50_ms"], out["insert_p99_ms"] = single_insert_ms(d, token, singles)

        # the transport floor: a gRPC health check on the same daemon and socket, no work behind it
        with grpc.insecure_channel(d.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            lat = []
            for _ in range(singles):
                t0 = time.perf_counter()
                stub.Check(health_pb2.HealthCheckRequest())
                lat.append(time.perf_counter() - t0)
        out["floor_p50_ms"] = pct(lat, 0.5) * 1e3
        out["floor_p99_ms"] = pct(lat, 0.99) * 1e3

        # change notification: a subscriber thread stamps arrival; the writer stamps call start
        n = min(singles, 1000)
        sent: dict[int, float] = {}
        got: dict[int, float] = {}
        sub = h.subscribe(URI)
        done = threading.Event()

        def listen() -> None:
            for change in sub:
                for v in change.values:
                    got[v["qty"]] = time.perf_counter()
                if len(got) >= n:
                    break
            done.set()

        th = threading.Thread(target=listen, daemon=True)
        th.start()
        for i in range(n):
            sent[i] = time.perf_counter()
            h.insert(URI, {"name": "n", "qty": i})
            time.sleep(0.001)
        done.wait(30)
        sub.close()
        lat = [got[i] - sent[i] for i in range(n) if i in got]
        assert len(lat) == n, f"only {len(lat)} of {n} notifications arrived"
        out["notify_p50_ms"] = pct(lat, 0.5) * 1e3
        out["notify_p99_ms"] = pct(lat, 0.99) * 1e3
    return out


EVIL = "com.bench.evil"
EVIL_URI = f"datashare:///{EVIL}/main/blobs"


def worst_predicate(d: Daemon, token: str, n: int) -> dict[str, float]:
    """Another app's single-insert p50/p99 idle, then while an app loops the worst delete the limits
    allow on its own table: two 128-character `%aaa…b` patterns (one wildcard each) over rows of 800 KB
    of text, which datashare.max_statement_ms stops each time."""
    evil = d.add_app(EVIL)
    columns = [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}]
    tables = [{"name": "blobs", "primary_key": "id", "columns": columns}]
    with d.helper(evil) as h:
        h.register_provider({"bundle": EVIL, "stores": [{"name": "main", "tables": tables}]})
        for _ in range(16):
            h.insert(EVIL_URI, {"body": "a" * 800_000})
    preds = DataSharePredicates().unlike("body", "%" + "a" * 126 + "b").unlike("body", "%" + "a" * 125 + "bb")
    out: dict[str, float] = {}
    out["idle_p50_ms"], out["idle_p99_ms"] = single_insert_ms(d, token, n)
    stop = threading.Event()
    outcomes: dict[str, int] = {}

    def attack() -> None:
        with d.helper(evil) as h:
            while not stop.is_set():
                try:
                    h.delete(EVIL_URI, preds)
                    outcomes["OK"] = outcomes.get("OK", 0) + 1
                except DatamgrError as exc:
                    outcomes[exc.code] = outcomes.get(exc.code, 0) + 1

    th = threading.Thread(target=attack, daemon=True)
    th.start()
    time.sleep(0.5)
    try:
        out["attacked_p50_ms"], out["attacked_p99_ms"] = single_insert_ms(d, token, n)
    finally:
        stop.set()
        th.join(120)
    out["attack_calls"] = sum(outcomes.values())
    out["attack_stopped"] = outcomes.get("DEADLINE_EXCEEDED", 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--singles", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; medians are printed.")
    ap.add_argument(
        "--attacked", type=int, default=20, help="Single inserts measured while the worst predicate runs."
    )
    args = ap.parse_args()

    steal0, total0 = cpu_times()
    data = [rows(args.batch, i) for i in range(0, args.rows, args.batch)]
    core_ins, core_q, our_ins, our_q = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="dm-bench-") as tmp:
        engine, table = core_table(Path(tmp) / "core.db")
        d, token = setup_daemon(Path(tmp) / "data")
        try:
            with d.helper(token) as h:
                for _ in range(args.rounds):  # interleaved, so both see the same machine
                    ins, q = core_round(engine, table, data)
                    core_ins.append(ins)
                    core_q.append(q)
                    ins, q = daemon_round(h, data)
                    our_ins.append(ins)
                    our_q.append(q)
            ours = through_daemon(d, token, args.singles)
            worst = worst_predicate(d, token, args.attacked)
        finally:
            d.stop()
            engine.dispose()
        d, token = setup_daemon(Path(tmp) / "full", {"DATAMGR_SQLITE_SYNCHRONOUS": "FULL"})
        try:
            full_p50, full_p99 = single_insert_ms(d, token, args.singles)
        finally:
            d.stop()
    core_insert, core_query = statistics.median(core_ins), statistics.median(core_q)
    ours["batch_rows_s"], ours["query_rows_s"] = statistics.median(our_ins), statistics.median(our_q)
    steal1, total1 = cpu_times()
    steal = 100 * (steal1 - steal0) / max(1, total1 - total0)
    print(f"machine: {machine()}; CPU steal during the run: {steal:.0f}%")
    print(
        f"date: {time.strftime('%Y-%m-%d')}   rows: {args.rows}   batch: {args.batch}"
        f"   singles: {args.singles}"
    )
    print(f"medians of {args.rounds} interleaved rounds for the rows/s figures")
    print(f"{'metric':<34}{'daemon':>14}{'SQLAlchemy Core':>18}{'ratio':>9}")
    print(
        f"{'batch insert (rows/s)':<34}{ours['batch_rows_s']:>14,.0f}{core_insert:>18,.0f}"
        f"{ours['batch_rows_s'] / core_insert:>9.2f}"
    )
    print(
        f"{'query (rows/s)':<34}{ours['query_rows_s']:>14,.0f}{core_query:>18,.0f}"
        f"{ours['query_rows_s'] / core_query:>9.2f}"
    )
    print(f"{'single insert, FULL p50 / p99 (ms)':<34}{full_p50:>8.3f} / {full_p99:.3f}")
    print(f"{'single insert p50 / p99 (ms)':<34}{ours['insert_p50_ms']:>8.3f} / {ours['insert_p99_ms']:.3f}")
    print(
        f"{'gRPC health check p50 / p99 (ms)':<34}{ours['floor_p50_ms']:>8.3f} / {ours['floor_p99_ms']:.3f}"
    )
    print(f"{'notification p50 / p99 (ms)':<34}{ours['notify_p50_ms']:>8.3f} / {ours['notify_p99_ms']:.3f}")
    print(
        f"another app's insert p50 / p99 (ms), {args.attacked} inserts, while the worst predicate runs:"
        f" {worst['attacked_p50_ms']:.1f} / {worst['attacked_p99_ms']:.1f}; idle:"
        f" {worst['idle_p50_ms']:.3f} / {worst['idle_p99_ms']:.3f}; p99 ratio"
        f" {worst['attacked_p99_ms'] / worst['idle_p99_ms']:.0f}x"
        f" ({worst['attack_stopped']:.0f} of {worst['attack_calls']:.0f} attack calls stopped by"
        " datashare.max_statement_ms)"
    )


if __name__ == "__main__":
    main()

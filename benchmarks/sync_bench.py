"""KV sync between two real daemons on loopback (mutual TLS), side by side with inserting the same rows
locally with SQLAlchemy Core into an equivalent SQLite table, in one run.

Run: .venv/bin/python benchmarks/sync_bench.py [--entries 100000] [--changes 10000]

The source store is seeded through the daemon's SDK (put_batch, 128 entries per call, OpenHarmony's
batch limit); seeding is not timed. Timed: the initial sync (every entry, PUSH from A to B) and an
incremental sync of `--changes` updated keys, each as records/s, against the local baseline: the same
rows inserted (then upserted) into a table shaped like `kv_entries`, in transactions of the sync batch
size, on a SQLite file with the daemon's settings (WAL, synchronous NORMAL).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from _machine import machine  # noqa: E402
from harness import Daemon  # noqa: E402
from test_pairing import _owner, _pair  # noqa: E402

from datamgr.client.kv import KvStoreClient, KvStoreType, SecurityLevel, SyncMode  # noqa: E402
from datamgr.config import SyncSettings  # noqa: E402
from datamgr.storage import create_engine  # noqa: E402

BUNDLE = "com.bench.sync"
STORE = "bench"
BATCH = 1000  # the daemons' sync.batch_size (the default)
WINDOW = SyncSettings().push_window  # batches in flight (the default)
ENV = {
    "DATAMGR_AI__ENABLED": "false",
    "DATAMGR_DISCOVERY__ENABLED": "false",
    "DATAMGR_SYNC__AUTO": "false",
    "DATAMGR_SYNC__BATCH_SIZE": str(BATCH),
    "DATAMGR_SYNC__PUSH_WINDOW": str(WINDOW),
}


def value(i: int, version: int) -> str:
    return f'{{"id": {i}, "title": "note number {i}", "version": {version}, "body": "lorem ipsum dolor"}}'


def seed(client: KvStoreClient, keys: range, version: int) -> float:
    store = client.get_kv_store(STORE, kind=None, create_if_missing=False)
    started = time.perf_counter()
    for start in range(keys.start, keys.stop, 128):
        store.put_batch({f"key{i:07d}": value(i, version) for i in range(start, min(keys.stop, start + 128))})
    return time.perf_counter() - started


def timed_sync(client: KvStoreClient, peer: str, expected: int) -> float:
    store = client.get_kv_store(STORE, kind=None, create_if_missing=False)
    started = time.perf_counter()
    result = store.sync([peer], SyncMode.PUSH_ONLY)[peer]
    elapsed = time.perf_counter() - started
    if result.code != "OK" or result.pushed != expected:
        raise SystemExit(f"sync failed: {result}")
    return elapsed


def local_baseline(path: Path, n: int, changes: int) -> tuple[float, float]:
    """Seconds to insert `n` rows, then to upsert `changes` of them, in transactions of BATCH rows."""
    engine = create_engine(f"sqlite:///{path}", "NORMAL")
    md = sa.MetaData()
    t = sa.Table(
        "kv_entries",
        md,
        sa.Column("store_id", sa.String(300), primary_key=True),
        sa.Column("device", sa.String(128), primary_key=True),
        sa.Column("key", sa.LargeBinary, primary_key=True),
        sa.Column("value", sa.LargeBinary),
        sa.Column("vtype", sa.Integer, nullable=False),
        sa.Column("hlc", sa.BigInteger, nullable=False),
        sa.Column("origin", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Index("ix_bench_seq", "store_id", "seq", unique=True),
    )
    md.create_all(engine)
    store_id, origin = f"{BUNDLE}/{STORE}", "a" * 32

    def rows(keys: range, version: int, seq0: int) -> list[dict[str, object]]:
        return [
            {"store_id": store_id, "device": "", "key": f"key{i:07d}".encode(), "vtype": 1,
             "value": value(i, version).encode(), "hlc": (seq0 + i) << 16, "origin": origin, "seq": seq0 + i}
            for i in keys
        ]  # fmt: skip

    started = time.perf_counter()
    for start in range(0, n, BATCH):
        with engine.begin() as conn:
            conn.execute(sa.insert(t), rows(range(start, min(n, start + BATCH)), 1, 1))
    insert_s = time.perf_counter() - started

    started = time.perf_counter()
    for start in range(0, changes, BATCH):
        stmt = sqlite_insert(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=["store_id", "device", "key"],
            set_={c: stmt.excluded[c] for c in ("value", "vtype", "hlc", "origin", "seq")},
        )
        with engine.begin() as conn:
            conn.execute(stmt, rows(range(start, min(changes, start + BATCH)), 2, n + 1))
    upsert_s = time.perf_counter() - started
    engine.dispose()
    return insert_s, upsert_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=10_000)
    args = parser.parse_args()
    n, changes = args.entries, args.changes

    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        root = Path(tmp)
        a = Daemon(root / "alpha", env={**ENV, "DATAMGR_DISCOVERY__DEVICE_NAME": "alpha"}).start()
        b = Daemon(root / "bravo", env={**ENV, "DATAMGR_DISCOVERY__DEVICE_NAME": "bravo"}).start()
        try:
            _pair(a, b)
            with _owner(b) as owner:
                peer = owner.identity().device_id
            perm = "ohos.permission.DISTRIBUTED_DATASYNC"
            with (
                KvStoreClient.connect(a.address, a.add_app(BUNDLE, perm)) as ca,
                KvStoreClient.connect(b.address, b.add_app(BUNDLE, perm)) as cb,
            ):
                for c in (ca, cb):
                    c.get_kv_store(STORE, kind=KvStoreType.SINGLE_VERSION, security_level=SecurityLevel.S1)
                seed_s = seed(ca, range(n), 1)
                initial_s = timed_sync(ca, peer, n)
                seed(ca, range(changes), 2)
                incremental_s = timed_sync(ca, peer, changes)
                if cb.get_kv_store(STORE, kind=None).get_result_size() != n:
                    raise SystemExit("B does not hold every entry")
        finally:
            a.stop()
            b.stop()
        insert_s, upsert_s = local_baseline(root / "baseline.db", n, changes)

    print(f"machine: {machine()}")
    print(f"seeding A through the SDK (put_batch of 128): {n:,} in {seed_s:.2f} s ({n / seed_s:,.0f}/s)")
    print(f"sync batches of {BATCH:,} changes, {WINDOW} in flight")
    print(f"{'':34} {'sync A→B':>14} {'local Core':>14} {'ratio':>8}")
    for name, count, sync_s, local_s in (
        (f"initial, {n:,} entries", n, initial_s, insert_s),
        (f"incremental, {changes:,} changes", changes, incremental_s, upsert_s),
    ):
        ratio = local_s / sync_s
        print(f"{name:34} {count / sync_s:>12,.0f}/s {count / local_s:>12,.0f}/s {ratio:>7.0%}")
    print("targets: ≥ 20,000 records/s and ≥ 25% of the local insert")


if __name__ == "__main__":
    main()

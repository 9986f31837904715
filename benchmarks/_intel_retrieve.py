"""DataShare indexed tables: retrieval latency against a brute-force scan, and write throughput of an
indexed table against the same table unindexed, through the daemon.

Run: .venv/bin/python benchmarks/_intel_retrieve.py [--rows 100000] [--write-rows 20000]

(a) Retrieval, in process, on a SQLite file: a table of `--rows` rows whose vectors are random unit
    vectors around 500 cluster centres (384 dimensions, the shape of all-MiniLM-L6-v2's; random, not
    embedded texts: embedding 100,000 texts takes most of an hour on two cores), written straight into
    the vectors table. The daemon's own retrieval path (`Retriever.run`: the column's index, the check
    against the vectors table and the table's rows, k = 10) against a numpy scan of the same vectors
    held in memory (one matrix product and a partial sort), p50/p99 over `--queries` query vectors from
    the same distribution, and the index's recall@10 against that scan. The query's embedding (a call
    to the model, the same for both) is not in either figure. Also full text (FTS5 BM25) and vector
    retrieval under a selective and a broad predicate.
(b) Writes, through a daemon with its AI service (the indexes run behind the writes): rows/s of batch
    inserts and of single inserts into a table unindexed ("plain"), vector-indexed ("vector") and
    vector + full-text indexed ("both"), in short rounds in which the tables take turns batch by batch
    (row by row for single inserts), so that whatever else runs meanwhile (the embedding behind the
    writes, other processes on a shared machine) falls on all alike; the ratio over plain is taken
    within each round and its median reported. Then the backlog and how long it takes to drain.
    `--database-url` runs the daemon on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine  # noqa: E402
from harness import Daemon  # noqa: E402

from datamgr.client import DataShareHelper, DataSharePredicates  # noqa: E402
from datamgr.datashare._compile import compile_predicates  # noqa: E402
from datamgr.datashare.index_ddl import columns_table, fts_name, side_tables  # noqa: E402
from datamgr.datashare.indexer import Indexer, IndexerConfig  # noqa: E402
from datamgr.datashare.manifest import parse_manifest  # noqa: E402
from datamgr.datashare.retrieve import Retriever, Search  # noqa: E402
from datamgr.datashare.tables import ProviderRegistry  # noqa: E402
from datamgr.datashare.uri import parse_uri  # noqa: E402
from datamgr.storage import Database, create_engine  # noqa: E402

BUNDLE = "com.bench.notes"
DIM = 384
K = 10
_VOCABULARY = (
    "apple battery bridge camera candle carpet cloud coffee copper desert engine forest garden guitar "
    "harbor island jacket kettle ladder lantern lemon marble meadow mirror motor needle ocean orchid "
    "paddle pepper pillow planet pocket rabbit ribbon river rocket saddle shadow silver socket spider "
    "spring stone sugar sunset table ticket timber tunnel valley violin wagon window winter yellow"
)
WORDS = _VOCABULARY.split()
TABLES = {"plain": {}, "vector": {"vector": True}, "both": {"vector": True, "fulltext": True}}


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _ms(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_pct(xs, 50) * 1000, 3), "p99_ms": round(_pct(xs, 99) * 1000, 3)}


def _texts(rng: np.random.Generator, n: int) -> list[str]:
    picks = rng.integers(0, len(WORDS), (n, 12))
    return [" ".join(WORDS[i] for i in row) for row in picks]


def _manifest(*names: str) -> dict[str, Any]:
    """Tables of one text column, indexed as TABLES[name] says."""

    def table(name: str) -> dict[str, Any]:
        text: dict[str, Any] = {"name": "text", "type": "text"}
        if TABLES[name]:
            text["index"] = TABLES[name]
        return {
            "name": name,
            "primary_key": "id",
            "columns": [{"name": "id", "type": "integer"}, text, {"name": "n", "type": "integer"}],
        }

    return {"bundle": BUNDLE, "stores": [{"name": "main", "tables": [table(n) for n in names]}]}


class _Fixed:
    """The model id the stored random vectors claim (no text is embedded in part a)."""

    model_id = "bench-random-vectors"
    dim = DIM

    async def embed(self, texts: Any) -> np.ndarray:
        raise AssertionError("part (a) embeds nothing")


# ---- (a) retrieval ----


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def retrieval(rows: int, queries: int, hnsw_min: int, data_dir: Path) -> dict[str, Any]:  # noqa: PLR0915
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((500, DIM)).astype(np.float32)
    vecs = _unit(
        centres[rng.integers(0, 500, rows)] + 0.8 * rng.standard_normal((rows, DIM)).astype(np.float32)
    )
    qs = _unit(
        centres[rng.integers(0, 500, queries)] + 0.8 * rng.standard_normal((queries, DIM)).astype(np.float32)
    )
    engine = create_engine(f"sqlite:///{data_dir / 'retrieval.db'}")
    db = Database(engine, 2)
    providers = ProviderRegistry(engine)
    providers.register(parse_manifest(json.dumps(_manifest("both"))))
    hosted = providers.require(parse_uri(f"datashare:///{BUNDLE}/main/both"))
    side = side_tables(hosted.table, hosted.spec)
    texts = _texts(rng, rows)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, rows, 10_000):
            part = range(start, min(rows, start + 10_000))
            conn.execute(sa.insert(hosted.table), [{"id": i + 1, "text": texts[i], "n": i + 1} for i in part])
            conn.execute(
                sa.insert(side.vectors),
                [{"key": i + 1, "col": "text", "vec": vecs[i].tobytes()} for i in part],
            )
        conn.execute(sa.delete(side.pending))  # the vectors are there, and full text is built at once:
        conn.execute(sa.delete(side.fulltext))  # what the indexer would have done, without the wait
        fts = fts_name(hosted.table.name, "text")
        conn.exec_driver_sql(f"INSERT INTO {fts} ({fts}) VALUES ('rebuild')")
        conn.execute(
            sa.update(columns_table)
            .where(columns_table.c.table_name == hosted.table.name)
            .values(model_id=_Fixed.model_id, dim=DIM)
        )
    write_s = time.perf_counter() - t0
    indexer = Indexer(db, providers, _Fixed(), IndexerConfig(hnsw_min_rows=hnsw_min))  # type: ignore[arg-type]
    retriever = Retriever(db)

    async def measure() -> dict[str, Any]:
        await indexer.start(background=False)
        t0 = time.perf_counter()
        index = await indexer.vector_index(hosted, "text")
        load_s = time.perf_counter() - t0
        while index.kind == "exact" and len(index) >= hnsw_min:  # the graph is built in the background
            await asyncio.sleep(0.05)
        build_s = time.perf_counter() - t0

        def search(q: np.ndarray, preds: DataSharePredicates | None = None, text: str = "") -> Any:
            where = compile_predicates(preds or DataSharePredicates(), hosted.table, "sqlite").where
            vector = {} if text else {"text": index}
            s = Search(
                hosted, where, text or "q", K, ["id"], vector, ["text"] if text else [], None if text else q
            )
            return retriever.run(s)

        def timed(fn: Any, *args: Any) -> tuple[float, Any]:
            t = time.perf_counter()
            out = fn(*args)
            return time.perf_counter() - t, out

        ours, ann, brute, recall = [], [], [], []
        for q in qs:  # interleaved: the same machine state for both
            dt, found = await asyncio.to_thread(timed, search, q)
            ours.append(dt)
            dt, _ = timed(index.search, q, K)
            ann.append(dt)
            dt, top = timed(lambda q=q: np.argpartition(-(vecs @ q), K)[:K])
            brute.append(dt)
            truth = {int(i) + 1 for i in top}
            recall.append(len({h.key for h, _ in found.rows} & truth) / K)
        selective = DataSharePredicates().less_than("n", max(rows // 100, 20))
        broad = DataSharePredicates().greater_than("n", rows // 10)
        filtered = {
            name: _ms(
                [(await asyncio.to_thread(timed, search, q, preds))[0] for q in qs[: max(20, queries // 4)]]
            )
            for name, preds in (("selective_1pct", selective), ("broad_90pct", broad))
        }
        words = [" ".join(rng.choice(WORDS, 3)) for _ in range(max(20, queries // 4))]
        fulltext = _ms([(await asyncio.to_thread(timed, search, qs[0], None, w))[0] for w in words])
        return {
            "rows": rows,
            "vectors": "random unit vectors around 500 centres, 384 dims (not embedded texts)",
            "index": index.kind,
            "hnsw_min_rows": hnsw_min,
            "setup_write_s": round(write_s, 1),
            "load_s": round(load_s, 2),
            "load_and_build_s": round(build_s, 2),
            "ours_retrieve": _ms(ours),
            "ours_index_only": _ms(ann),
            "numpy_brute_force": _ms(brute),
            "p50_ratio_brute_over_ours": round(_pct(brute, 50) / _pct(ours, 50), 2),
            "recall_at_10_vs_brute_force": round(statistics.mean(recall), 3),
            "vector_with_predicate": filtered,
            "fulltext_bm25": fulltext,
        }

    try:
        return asyncio.run(measure())
    finally:
        db.close()


# ---- (b) writes through the daemon ----


INDEXED = [name for name in TABLES if TABLES[name]]


def _backlog(h: DataShareHelper, uris: dict[str, str]) -> dict[str, int]:
    """Each indexed table's backlog now (full-text mode where there is one: no query to embed)."""
    mode = {name: "fulltext" if TABLES[name].get("fulltext") else "vector" for name in INDEXED}
    return {name: h.retrieve(uris[name], "x", k=1, mode=mode[name]).pending for name in INDEXED}


def _drain(h: DataShareHelper, uris: dict[str, str], timeout: float) -> tuple[dict[str, int], float]:
    """Every indexed table's backlog now, and the seconds until all are empty (nan: not in `timeout`)."""
    t0 = time.perf_counter()
    first = pending = _backlog(h, uris)
    while any(pending.values()):
        if time.perf_counter() - t0 > timeout:
            return first, float("nan")
        time.sleep(0.2)
        pending = _backlog(h, uris)
    return first, time.perf_counter() - t0


def _median_ratios(rates: dict[str, list[float]]) -> dict[str, float]:
    """Per table, the median over rounds of its rate over the plain table's in the same round."""
    return {
        n: round(statistics.median(r / p for r, p in zip(rs, rates["plain"], strict=True)), 3)
        for n, rs in rates.items()
    }


def writes(
    rows: int,
    batch: int,
    singles: int,
    rounds: int,
    data_dir: Path,
    database_url: str = "",
    drain_timeout: float = 3600,
) -> dict[str, Any]:
    """Rows/s of batch inserts and of single inserts into each table, in `rounds` short rounds; in a
    round the tables take turns batch by batch (row by row), the first of each turn rotating, so a
    ratio compares rates measured over the same seconds; the medians over rounds are reported."""
    env = {"DATAMGR_DISCOVERY__ENABLED": "false", "DATAMGR_AI__N_THREADS": "1"}
    if database_url:
        env["DATAMGR_DATABASE_URL"] = database_url
    d = Daemon(data_dir / "daemon", env=env).start(service="aicap.v1.AiService")
    uris = {name: f"datashare:///{BUNDLE}/main/{name}" for name in TABLES}
    rng = np.random.default_rng(11)
    try:
        token = d.add_app(BUNDLE)
        with d.helper(token) as h:
            h.register_provider(_manifest(*TABLES))
            for uri in uris.values():  # warm-up
                h.batch_insert(uri, [{"text": t, "n": 0} for t in _texts(rng, batch)])
                h.insert(uri, {"text": "warm", "n": 0})
            _drain(h, uris, 600)
            batch_rates: dict[str, list[float]] = {n: [] for n in TABLES}
            single_rates: dict[str, list[float]] = {n: [] for n in TABLES}
            per_round = max(batch, rows // rounds // batch * batch)
            singles_per_round = max(1, singles // rounds)
            names = list(TABLES)
            for r in range(rounds):
                # the tables take turns batch by batch (and row by row below), the first of each
                # turn rotating: what else runs on the machine meanwhile falls on all alike
                batches = {
                    n: [[{"text": t, "n": r} for t in _texts(rng, batch)] for _ in range(0, per_round, batch)]
                    for n in names
                }
                spent = dict.fromkeys(names, 0.0)
                for i in range(len(batches["plain"])):
                    for name in names[i % 3 :] + names[: i % 3]:
                        t0 = time.perf_counter()
                        h.batch_insert(uris[name], batches[name][i])
                        spent[name] += time.perf_counter() - t0
                for name in names:
                    batch_rates[name].append(per_round / spent[name])
                singles_rows = {
                    n: [{"text": t, "n": r} for t in _texts(rng, singles_per_round)] for n in names
                }
                spent = dict.fromkeys(names, 0.0)
                for i in range(singles_per_round):
                    for name in names[i % 3 :] + names[: i % 3]:
                        t0 = time.perf_counter()
                        h.insert(uris[name], singles_rows[name][i])
                        spent[name] += time.perf_counter() - t0
                for name in names:
                    single_rates[name].append(singles_per_round / spent[name])
            backlog, drain_s = _drain(h, uris, drain_timeout)
        return {
            "database": "postgresql" if database_url else "sqlite",
            "tables": {n: TABLES[n] or "no index" for n in TABLES},
            "rounds": rounds,
            "batch_rows": batch,
            "batch_rows_per_round": per_round,
            "singles_per_round": singles_per_round,
            "batch_rows_per_s": {n: round(statistics.median(v)) for n, v in batch_rates.items()},
            "batch_ratio_over_plain": _median_ratios(batch_rates),
            "batch_ratio_per_round": {
                n: [round(x / p, 3) for x, p in zip(v, batch_rates["plain"], strict=True)]
                for n, v in batch_rates.items()
                if n != "plain"
            },
            "single_rows_per_s": {n: round(statistics.median(v)) for n, v in single_rates.items()},
            "single_ratio_over_plain": _median_ratios(single_rates),
            "backlog_after_writes": backlog,
            "drain_s": round(drain_s, 1),
        }
    finally:
        d.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_retrieval:
            out["retrieval"] = retrieval(args.rows, args.queries, args.hnsw_min_rows, Path(tmp))
        if not args.skip_writes:
            out["writes"] = writes(
                args.write_rows,
                args.batch,
                args.singles,
                args.rounds,
                Path(tmp),
                args.database_url,
                args.drain_timeout,
            )
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows (vectors) for the retrieval latency")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--hnsw-min-rows", type=int, default=10_000, help="datashare.index_hnsw_min_rows")
    ap.add_argument("--write-rows", type=int, default=20_000, help="batch-inserted rows per table")
    ap.add_argument("--batch", type=int, default=500, help="rows per batch insert")
    ap.add_argument("--singles", type=int, default=1000, help="single-row inserts per table")
    ap.add_argument("--rounds", type=int, default=10, help="short rounds; the tables take turns in each")
    ap.add_argument(
        "--database-url", default="", help="the daemon's database for the writes (default: its SQLite file)"
    )
    ap.add_argument(
        "--drain-timeout", type=float, default=3600, help="seconds to wait for the backlog (0: only count it)"
    )
    ap.add_argument("--skip-retrieval", action="store_true")
    ap.add_argument("--skip-writes", action="store_true")
    return ap


def main() -> None:
    result = run(parser().parse_args())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

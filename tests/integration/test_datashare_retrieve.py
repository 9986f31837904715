"""Indexed DataShare tables and Retrieve through the real daemon, its embedding model (all-MiniLM-L6-v2)
and SQLite (issue 15.2): the index follows inserts, updates and deletes; the backlog drains and shows
in the metrics; rows queued when the daemon is killed get embedded after it restarts; read permission,
predicates and bad input are checked; recall@5 of each mode on a labelled set."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon
from test_sync_daemons import BUNDLE, pair_factory  # noqa: F401 - pair_factory is a fixture

from aicap import AiClient
from datamgr.client import DataShareHelper, DataSharePredicates
from datamgr.errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model, pytest.mark.timeout(600)]

P = DataSharePredicates
NOTES = BUNDLE  # com.example.notes
READ, WRITE = "com.example.notes.READ", "com.example.notes.WRITE"
URI = f"datashare:///{NOTES}/main/notes"
PLAIN_URI = f"datashare:///{NOTES}/main/plain"
SET = json.loads((Path(__file__).parents[1] / "data" / "retrieval_set.json").read_text())
AI_ENV = {"DATAMGR_AI__N_THREADS": "1", "DATAMGR_DISCOVERY__ENABLED": "false"}

MANIFEST = {
    "bundle": NOTES,
    "read_permission": READ,
    "write_permission": WRITE,
    "stores": [
        {
            "name": "main",
            "tables": [
                {
                    "name": "notes",
                    "primary_key": "id",
                    "columns": [
                        {"name": "id", "type": "integer"},
                        {"name": "topic", "type": "text"},
                        {"name": "text", "type": "text", "index": {"vector": True, "fulltext": True}},
                        {"name": "n", "type": "integer"},
                    ],
                },
                {
                    "name": "plain",
                    "primary_key": "id",
                    "columns": [{"name": "id", "type": "integer"}, {"name": "text", "type": "text"}],
                },
            ],
        }
    ],
}


@dataclass
class Env:
    daemon: Daemon
    provider: str
    reader: str
    outsider: str


def drained(h: DataShareHelper, uri: str = URI, timeout: float = 300.0) -> None:
    """Waits until every row written so far is embedded (Retrieve's `pending` is 0)."""
    deadline = time.monotonic() + timeout
    while (pending := h.retrieve(uri, "anything", k=1, mode="fulltext").pending) > 0:
        assert time.monotonic() < deadline, f"{pending} row(s) still not embedded"
        time.sleep(0.2)


def _doc_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": d["id"],
            "topic": f"topic{(d['id'] - 1) // 10}",
            "text": f"{d['title']}. {d['body']}",
            "n": d["id"],
        }
        for d in SET["documents"]
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    d = Daemon(tmp_path_factory.mktemp("retrieve") / "data", env=AI_ENV).start(service="aicap.v1.AiService")
    try:
        provider = d.add_app(NOTES)
        reader = d.add_app("com.example.reader", READ)
        outsider = d.add_app("com.example.game")
        with d.helper(provider) as h:
            h.register_provider(MANIFEST)
            h.batch_insert(URI, _doc_rows())
            drained(h)
        yield Env(d, provider, reader, outsider)
    finally:
        d.stop()
    assert "Traceback" not in d.log()


def recall_at_5(h: DataShareHelper, mode: str) -> float:
    hits = 0
    for q in SET["questions"]:
        found = [
            r.row_id
            for r in h.retrieve(URI, q["question"], k=5, mode=mode, predicates=P().less_than("n", 1000))
        ]
        hits += bool(set(found) & set(q["relevant"]))
    return hits / len(SET["questions"])


def test_recall_at_5_on_the_labelled_set(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    with env.daemon.helper(env.reader) as h:
        recall = {mode: round(recall_at_5(h, mode), 3) for mode in ("vector", "fulltext", "hybrid")}
    n_docs, n_questions = len(SET["documents"]), len(SET["questions"])
    with capsys.disabled():
        print(f"\nrecall@5 over {n_docs} documents, {n_questions} questions: {recall}")
    assert n_docs >= 150 and n_questions >= 40
    assert max(recall.values()) >= 0.6, recall


def test_insert_update_delete_keep_the_index_current(env: Env) -> None:
    with env.daemon.helper(env.provider) as h:
        row = h.insert(
            URI, {"topic": "x", "text": "Feeding the axolotl: it eats bloodworms twice a week.", "n": 5000}
        )
        drained(h)
        top = h.retrieve(URI, "what does my salamander eat", k=1, mode="vector").rows[0]
        assert top.row_id == row and "axolotl" in top.values["text"]
        assert [r.row_id for r in h.retrieve(URI, "axolotl", mode="fulltext")] == [row]

        h.update(
            URI,
            P().equal_to("id", row),
            {"text": "Tuning a violin: tighten the pegs until the A string rings true."},
        )
        drained(h)
        top = h.retrieve(URI, "how do I get my fiddle in tune", k=1, mode="vector").rows[0]
        assert top.row_id == row and "violin" in top.values["text"]
        assert h.retrieve(URI, "axolotl bloodworms", mode="fulltext").rows == []  # the old text is gone
        assert row not in [
            r.row_id for r in h.retrieve(URI, "what does my salamander eat", k=3, mode="vector")
        ]

        h.delete(URI, P().equal_to("id", row))
        for mode in ("vector", "fulltext", "hybrid"):
            assert row not in [r.row_id for r in h.retrieve(URI, "tuning a violin", k=10, mode=mode)]


def test_pending_drains_and_shows_in_the_metrics(env: Env) -> None:
    with env.daemon.helper(env.provider) as h:
        rows = [
            {"topic": "bulk", "text": f"Bulk note number {i} about kayaks and paddles.", "n": 6000 + i}
            for i in range(300)
        ]
        h.batch_insert(URI, rows)
        first = h.retrieve(URI, "kayak paddles", k=5)
        assert first.pending > 0  # the write returned before its rows were embedded
        with AiClient.connect(
            env.daemon.address, (env.daemon.data_dir / "admin.token").read_text().strip()
        ) as ai:
            deadline = time.monotonic() + 60
            while f'datamgr_datashare_index_pending{{uri="{URI}"}}' not in ai.stats().prometheus:
                assert time.monotonic() < deadline, "the backlog never showed in the metrics"
                time.sleep(0.1)
            drained(h)
            deadline = time.monotonic() + 60
            while f'datamgr_datashare_index_pending{{uri="{URI}"}} 0.0' not in ai.stats().prometheus:
                assert time.monotonic() < deadline, "the metrics did not follow the drained backlog"
                time.sleep(0.2)
            assert "datamgr_datashare_index_vectors{" in ai.stats().prometheus
        assert h.retrieve(URI, "kayak paddles", k=5).pending == 0
        h.delete(URI, P().equal_to("topic", "bulk"))


def test_predicates_select_exactly_the_rows_returned(env: Env) -> None:
    with env.daemon.helper(env.reader) as h:
        for preds, k in [
            (P().equal_to("topic", "topic2"), 10),  # cooking: 10 rows
            (P().greater_than("n", 150), 5),
            (P().between("n", 41, 50).or_().equal_to("n", 3), 20),
            (P().equal_to("topic", "nothing"), 5),
        ]:
            with h.query(URI, preds, ["id"]) as rs:
                allowed = {r["id"] for r in rs.rows()}
            for mode in ("vector", "fulltext", "hybrid"):
                found = h.retrieve(
                    URI, "how do I cook rice and boil an egg", k=k, predicates=preds, mode=mode
                )
                ids = [r.row_id for r in found]
                assert set(ids) <= allowed, (mode, ids)
                assert len(ids) == len(set(ids))
                if mode != "fulltext":  # every allowed row has a vector: the k nearest come back
                    assert len(ids) == min(k, len(allowed))
        cooking = h.retrieve(URI, "my rice is mushy", k=3, predicates=P().equal_to("topic", "topic2"))
        assert cooking.rows[0].row_id == 24  # "Cook perfect rice"


def test_scores_columns_and_hostile_text(env: Env) -> None:
    with env.daemon.helper(env.reader) as h:
        for mode in ("vector", "fulltext", "hybrid"):
            found = h.retrieve(URI, "reset my password", k=5, mode=mode, columns=["id", "text"])
            scores = [r.score for r in found]
            assert scores == sorted(scores, reverse=True) and len(found) == 5
            assert all(r.column == "text" and set(r.values) == {"id", "text"} for r in found)
            assert found.rows[0].row_id == 11
        for hostile in ['"', "NEAR(reset", "text:password OR", "*", "')--", "AND OR NOT"]:
            h.retrieve(URI, hostile, mode="fulltext")  # searched as words, never an error


def test_read_permission_is_checked_as_query_checks_it(env: Env) -> None:
    with env.daemon.helper(env.outsider) as h:
        with pytest.raises(PermissionDenied):
            h.retrieve(URI, "password")
        with pytest.raises(PermissionDenied):
            h.query(URI).close()


def test_bad_input_statuses(env: Env) -> None:
    with env.daemon.helper(env.provider) as h:
        h.insert(PLAIN_URI, {"text": "not indexed"})
        with pytest.raises(InvalidArgument, match="the query is empty"):
            h.retrieve(URI, "   ")
        with pytest.raises(ResourceExhausted, match="max_retrieve_query_chars"):
            h.retrieve(URI, "x" * 5000)
        with pytest.raises(InvalidArgument, match="max_retrieve_k"):
            h.retrieve(URI, "rice", k=101)
        with pytest.raises(InvalidArgument, match="has no column 'nope'"):
            h.retrieve(URI, "rice", column="nope")
        with pytest.raises(InvalidArgument, match="has no column 'nope'"):
            h.retrieve(URI, "rice", columns=["id", "nope"])
        with pytest.raises(FailedPrecondition, match=f"column topic of {URI} is not indexed"):
            h.retrieve(URI, "rice", column="topic")
        with pytest.raises(FailedPrecondition, match=f"{PLAIN_URI} has no indexed column"):
            h.retrieve(PLAIN_URI, "indexed")
        with pytest.raises(InvalidArgument, match="no order_by"):
            h.retrieve(URI, "rice", predicates=P().order_by_asc("n"))
        with pytest.raises(InvalidArgument, match="no order_by"):
            h.retrieve(URI, "rice", predicates=P().limit(3, 0))
        with pytest.raises(InvalidArgument, match="unknown column 'missing'"):
            h.retrieve(URI, "rice", predicates=P().equal_to("missing", 1))


def test_cli_retrieve(env: Env) -> None:
    cmd = [sys.executable, "-m", "datamgr", "share", "retrieve", URI, "my rice turns out mushy", "-k", "3"]
    cmd += ["--where", '[["equal_to", "topic", "topic2"]]', "--columns", "id,text", "--json"]
    cmd += ["--address", env.daemon.address]
    out = subprocess.run(
        cmd,
        env={**env.daemon.env(), "DATAMGR_TOKEN": env.reader},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["pending"] == 0 and len(result["rows"]) == 3
    assert result["rows"][0]["values"]["id"] == 24
    table = subprocess.run(
        [*cmd[:-3], "--address", env.daemon.address],
        env={**env.daemon.env(), "DATAMGR_TOKEN": env.reader, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert table.returncode == 0 and "Cook perfect rice" in table.stdout and "3 rows" in table.stdout


def test_rows_queued_at_kill_9_are_embedded_after_restart(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", env=AI_ENV).start(service="aicap.v1.AiService")
    try:
        token = d.add_app(NOTES)
        with d.helper(token) as h:
            h.register_provider(MANIFEST)
            rows = [
                {"topic": "t", "text": f"Note {i}: remember to water the ferns on day {i}.", "n": i}
                for i in range(400)
            ]
            h.batch_insert(URI, rows)
        d.kill9()
        with sqlite3.connect(d.data_dir / "datamgr.db") as db:
            (queued,) = db.execute("SELECT count(*) FROM ds_1_ixp").fetchone()
            # full text: each row is in FTS5 or queued for it, never both, never neither
            in_fts = {r for (r,) in db.execute("SELECT id FROM ds_1_fts_text_docsize")}
            fts_queued = {r for (r,) in db.execute("SELECT key FROM ds_1_ixf")}
        assert queued > 0, "every row was embedded before the kill: nothing was left to test"
        assert not in_fts & fts_queued and len(in_fts | fts_queued) == 400
        d.start(service="aicap.v1.AiService")
        with d.helper(token) as h:
            drained(h)
            with sqlite3.connect(d.data_dir / "datamgr.db") as db:
                (vectors,) = db.execute("SELECT count(*) FROM ds_1_ixv").fetchone()
                (in_fts_now,) = db.execute("SELECT count(*) FROM ds_1_fts_text_docsize").fetchone()
                # FTS5 checks its index against the table: every row in, with its text
                db.execute("INSERT INTO ds_1_fts_text (ds_1_fts_text, rank) VALUES ('integrity-check', 1)")
            assert vectors == 400 and in_fts_now == 400
            top = h.retrieve(URI, "water the ferns on day 123", k=3, mode="hybrid").rows
            assert 124 in [r.row_id for r in top]
            assert [r.row_id for r in h.retrieve(URI, "ferns 123", k=1, mode="fulltext")] == [124]
    finally:
        d.stop()


def test_rows_synced_from_a_paired_device_are_indexed(pair_factory) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # alpha has the AI service (and embeds); bravo, without it, writes
    a, b = pair_factory(auto=True, DATAMGR_AI__ENABLED="true", DATAMGR_AI__N_THREADS="1")
    a.daemon.wait_healthy(120, service="aicap.v1.AiService")
    shared = {
        "name": "shared",
        "primary_key": "uid",
        "distributed": True,
        "columns": [
            {"name": "uid", "type": "text"},
            {"name": "text", "type": "text", "index": {"vector": True, "fulltext": True}},
        ],
    }
    manifest = {"bundle": NOTES, "stores": [{"name": "main", "tables": [shared]}]}
    uri = f"datashare:///{NOTES}/main/shared"
    for side in (a, b):
        with side.daemon.helper(side.token) as h:
            h.register_provider(manifest)
    with b.daemon.helper(b.token) as hb, a.daemon.helper(a.token) as ha:
        hb.batch_insert(uri, [{"uid": f"u{i}", "text": SET["documents"][i]["body"]} for i in range(40)])
        hb.insert(uri, {"uid": "fish", "text": "Feed the goldfish a pinch of flakes every morning."})
        deadline = time.monotonic() + 120
        while len(ha.retrieve(uri, "goldfish", mode="fulltext").rows) < 1:
            assert time.monotonic() < deadline, f"bravo's rows did not reach alpha:\n{a.daemon.log()[-2000:]}"
            time.sleep(0.1)
        drained(ha, uri)
        top = ha.retrieve(uri, "what should I give my pet fish to eat", k=1, mode="vector").rows[0]
        assert top.values["uid"] == "fish" and top.row_id == -1  # a text key is among the values
        hb.update(uri, P().equal_to("uid", "fish"), {"text": "Repot the orchid in bark after it flowers."})
        deadline = time.monotonic() + 120
        while ha.retrieve(uri, "orchid", mode="fulltext").rows == []:
            assert time.monotonic() < deadline, "bravo's update did not reach alpha"
            time.sleep(0.1)
        drained(ha, uri)
        top = ha.retrieve(uri, "when do I move my orchid to a new pot", k=1, mode="vector").rows[0]
        assert top.values["uid"] == "fish" and "orchid" in top.values["text"]
        hb.delete(uri, P().equal_to("uid", "fish"))
        deadline = time.monotonic() + 120
        while ha.retrieve(uri, "orchid", mode="fulltext").rows:
            assert time.monotonic() < deadline, "bravo's delete did not reach alpha"
            time.sleep(0.1)
        assert "fish" not in [r.values["uid"] for r in ha.retrieve(uri, "orchid", k=50, mode="vector")]

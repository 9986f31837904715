"""Retrieve on PostgreSQL (GIN-indexed tsvector, vectors in bytea) through the real daemon and its
embedding model: the same labelled set, the index following writes, predicates and permissions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from harness import Daemon
from test_datashare_retrieve import AI_ENV, MANIFEST, READ, SET, URI, Env, _doc_rows, drained, recall_at_5

from datamgr.client import DataSharePredicates
from datamgr.errors import PermissionDenied

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.model,
    pytest.mark.timeout(600),
]
P = DataSharePredicates


@pytest.fixture(scope="module")
def schema_url(postgres_url: str) -> Iterator[str]:
    schema = f"retrieve_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, schema_url: str) -> Iterator[Env]:
    settings = {**AI_ENV, "DATAMGR_DATABASE_URL": schema_url}
    d = Daemon(tmp_path_factory.mktemp("pg-retrieve") / "data", env=settings).start(
        service="aicap.v1.AiService"
    )
    try:
        provider = d.add_app(MANIFEST["bundle"])
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


def test_recall_at_5_on_postgresql(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    with env.daemon.helper(env.reader) as h:
        recall = {mode: round(recall_at_5(h, mode), 3) for mode in ("vector", "fulltext", "hybrid")}
    with capsys.disabled():
        print(f"\nrecall@5 on PostgreSQL (ts_rank): {recall}")
    assert max(recall.values()) >= 0.6, recall
    assert recall["fulltext"] > 0.3, recall  # the GIN index and websearch_to_tsquery do find rows


def test_writes_keep_the_index_current_on_postgresql(env: Env) -> None:
    with env.daemon.helper(env.provider) as h:
        row = h.insert(
            URI, {"topic": "x", "text": "Feeding the axolotl: it eats bloodworms twice a week.", "n": 5000}
        )
        drained(h)
        assert h.retrieve(URI, "what does my salamander eat", k=1, mode="vector").rows[0].row_id == row
        assert [r.row_id for r in h.retrieve(URI, 'axolotl "or" -bloodworms', mode="fulltext")] == [row]
        h.update(URI, P().equal_to("id", row), {"text": "Tuning a violin: tighten the pegs slowly."})
        assert h.retrieve(URI, "axolotl", mode="fulltext").rows == []
        drained(h)
        assert h.retrieve(URI, "how do I get my fiddle in tune", k=1, mode="vector").rows[0].row_id == row
        h.delete(URI, P().equal_to("id", row))
        for mode in ("vector", "fulltext", "hybrid"):
            assert row not in [r.row_id for r in h.retrieve(URI, "tuning a violin", k=10, mode=mode)]


def test_predicates_and_permissions_on_postgresql(env: Env) -> None:
    preds = P().equal_to("topic", "topic2")
    with env.daemon.helper(env.reader) as h:
        for mode in ("vector", "fulltext", "hybrid"):
            found = h.retrieve(URI, "my rice turns out mushy", k=4, predicates=preds, mode=mode)
            assert found.rows and all(21 <= r.row_id <= 30 for r in found)
            assert found.rows[0].row_id == 24
    with env.daemon.helper(env.outsider) as h, pytest.raises(PermissionDenied):
        h.retrieve(URI, "rice")
    assert len(SET["documents"]) == 160

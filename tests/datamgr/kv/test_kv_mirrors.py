"""Mirrors: a system subsystem's KV stores hand every remote batch to it inside the applying
transaction (its tables move with the watermark, or not at all) and again after the commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from datamgr.bundles import SYSTEM_BUNDLE_PREFIX
from datamgr.errors import InvalidArgument
from datamgr.hlc import HLC, pack
from datamgr.kv.storage import Change, KvStorage, StoreInfo, StoreKind, Value
from datamgr.storage import create_engine

BUNDLE = SYSTEM_BUNDLE_PREFIX + "test"
STORE = f"{BUNDLE}/rows"
side = sa.Table("mirror_side", sa.MetaData(), sa.Column("key", sa.LargeBinary, primary_key=True))


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.applied, self.after = fail, list[bytes](), list[tuple[str, list[bytes]]]()

    def apply(self, conn: sa.Connection, info: StoreInfo, changes: list[Change]) -> None:
        conn.execute(sa.insert(side), [{"key": c.key} for c in changes])
        self.applied += [c.key for c in changes]
        if self.fail:
            raise RuntimeError("the mirror broke")

    def committed(self, info: StoreInfo, peer: str, changes: list[Change]) -> None:
        self.after.append((peer, [c.key for c in changes]))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'kv.db'}")
    side.metadata.create_all(eng)
    yield eng
    eng.dispose()


def _kv(engine: sa.Engine) -> KvStorage:
    kv = KvStorage(engine, "devA", HLC(lambda: 1_800_000_000_000))
    kv.create_store(BUNDLE, "rows", StoreKind.SINGLE_VERSION, 2)
    kv.create_store("com.example.notes", "rows", StoreKind.SINGLE_VERSION, 2)
    return kv


def _batch(store: str, *keys: bytes) -> list[Change]:
    return [
        Change(store, "", k, Value.of(1), pack(1_800_000_000_000, i), "devB", i + 1)
        for i, k in enumerate(keys)
    ]


def _side(engine: sa.Engine) -> list[bytes]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(side.c.key)).scalars())


def test_a_mirror_sees_each_batch_in_its_transaction_and_after_commit(engine: sa.Engine) -> None:
    kv, mirror = _kv(engine), Recorder()
    kv.add_mirror(BUNDLE, mirror)
    kv.apply_remote(STORE, "devB", "e1", _batch(STORE, b"a", b"b"), 2)
    assert _side(engine) == [b"a", b"b"] and mirror.after == [("devB", [b"a", b"b"])]
    kv.apply_remote(STORE, "devB", "e1", _batch(STORE, b"a", b"b"), 2)  # a replay: nothing new
    kv.apply_remote("com.example.notes/rows", "devB", "e1", _batch("com.example.notes/rows", b"c"), 1)
    assert mirror.applied == [b"a", b"b"] and len(mirror.after) == 1  # app stores are not mirrored


def test_a_failing_mirror_rolls_the_batch_and_the_watermark_back(engine: sa.Engine) -> None:
    kv = _kv(engine)
    kv.add_mirror(BUNDLE, Recorder(fail=True))
    with pytest.raises(RuntimeError):
        kv.apply_remote(STORE, "devB", "e1", _batch(STORE, b"a"), 1)
    assert _side(engine) == [] and kv.scan(STORE) == [] and kv.peer_state(STORE, "devB") is None


def test_write_in_joins_the_callers_transaction(engine: sa.Engine) -> None:
    kv = _kv(engine)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        kv.write_in(conn, STORE, [(b"k", Value.of("v"))])
        raise RuntimeError("the caller's own write failed")
    assert kv.scan(STORE) == []
    with engine.begin() as conn:
        assert [c.key for c in kv.write_in(conn, STORE, [(b"k%d" % i, Value.of(i)) for i in range(300)])][
            -1
        ] == b"k299"
    assert len(kv.scan(STORE)) == 300  # no app-write limit of 128 entries


def test_only_system_bundles_have_mirrors(engine: sa.Engine) -> None:
    with pytest.raises(InvalidArgument, match=SYSTEM_BUNDLE_PREFIX):
        _kv(engine).add_mirror("com.example.notes", Recorder())

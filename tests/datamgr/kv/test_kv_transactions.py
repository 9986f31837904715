"""Open KV transactions: ownership, limits that leave a transaction unchanged, idle expiry."""

from __future__ import annotations

import pytest

from datamgr.errors import InvalidArgument, NotFound, ResourceExhausted, TooLarge
from datamgr.kv.transactions import Transactions


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def table(clock: Clock, **limits: int) -> Transactions[str]:
    args = {"max_per_app": 2, "max_entries": 4, "max_bytes": 100} | limits
    return Transactions(60.0, args["max_per_app"], args["max_entries"], args["max_bytes"], len, clock)


def test_a_transaction_belongs_to_its_app_and_store() -> None:
    txs = table(Clock())
    tx = txs.start("com.a", "com.a/s")
    assert len(tx.id) == 32 and txs.get("com.a", "com.a/s", tx.id) is tx
    with pytest.raises(NotFound, match="no open transaction"):
        txs.get("com.b", "com.a/s", tx.id)  # another app: as if it did not exist
    with pytest.raises(InvalidArgument, match="belongs to store s"):
        txs.get("com.a", "com.a/t", tx.id)
    with pytest.raises(NotFound):
        txs.get("com.a", "com.a/s", "nope")


def test_open_transactions_per_app_are_limited() -> None:
    txs = table(Clock())
    txs.start("com.a", "com.a/s")
    second = txs.start("com.a", "com.a/s")
    txs.start("com.b", "com.b/s")  # another app has its own allowance
    with pytest.raises(ResourceExhausted, match="2 open transactions"):
        txs.start("com.a", "com.a/s")
    txs.take("com.a", "com.a/s", second.id)
    txs.start("com.a", "com.a/s")


def test_stage_keeps_the_last_write_per_key_in_order() -> None:
    txs = table(Clock())
    tx = txs.start("a", "a/s")
    txs.stage(tx, [(b"k1", "v1"), (b"k2", "v2")], [])
    txs.stage(tx, [(b"k1", "again")], [b"k3"])
    txs.stage(tx, [], [b"k2"])
    assert list(tx.ops) == [b"k1", b"k3", b"k2"]
    assert tx.puts() == [(b"k1", "again")]
    assert tx.deletes() == [b"k3", b"k2"]
    assert tx.size == (2 + 5) + 2 + 2
    assert tx.lookup(b"k1") == (True, "again")
    assert tx.lookup(b"k2") == (True, None)
    assert tx.lookup(b"zz") == (False, None)


def test_a_stage_over_a_limit_changes_nothing() -> None:
    txs = table(Clock(), max_entries=3, max_bytes=20)
    tx = txs.start("a", "a/s")
    txs.stage(tx, [(b"k1", "v"), (b"k2", "v")], [])
    before = dict(tx.ops), tx.size
    with pytest.raises(TooLarge, match="at most 3 keys, this one 4"):
        txs.stage(tx, [(b"k3", "v"), (b"k4", "v")], [])
    with pytest.raises(TooLarge, match="at most 20 bytes"):
        txs.stage(tx, [(b"k3", "x" * 20)], [])
    assert (dict(tx.ops), tx.size) == before
    txs.stage(tx, [(b"k1", "x" * 14)], [])  # rewriting a key counts its new size only
    assert tx.size == 2 + 14 + 3


def test_take_ends_the_transaction() -> None:
    txs = table(Clock())
    tx = txs.start("a", "a/s")
    assert txs.take("a", "a/s", tx.id) is tx
    with pytest.raises(NotFound, match="committed, rolled back or never started"):
        txs.take("a", "a/s", tx.id)


def test_an_idle_transaction_is_rolled_back_and_says_so() -> None:
    clock = Clock()
    txs = table(clock)
    tx = txs.start("a", "a/s")
    busy = txs.start("a", "a/s")
    clock.now += 59
    txs.get("a", "a/s", busy.id)  # use keeps a transaction alive
    clock.now += 2
    with pytest.raises(NotFound, match="idle for more than 60 s"):
        txs.get("a", "a/s", tx.id)
    assert txs.get("a", "a/s", busy.id) is busy
    clock.now += 61
    assert txs.expire() == [busy]
    assert len(txs) == 0
    with pytest.raises(NotFound, match="idle"):
        txs.take("a", "a/s", busy.id)


def test_drop_store_rolls_back_its_transactions() -> None:
    txs = table(Clock(), max_per_app=5)
    a1, a2 = txs.start("a", "a/s"), txs.start("a", "a/t")
    txs.start("b", "a/s")  # (store ids are per app in practice; this checks the app filter)
    assert txs.drop_store("a/s", app="a") == 1
    assert txs.get("a", "a/t", a2.id) is a2
    with pytest.raises(NotFound):
        txs.get("a", "a/s", a1.id)
    assert txs.drop_store("a/s") == 1
    assert len(txs) == 1

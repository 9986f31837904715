"""The tombstone collector: which peers it waits for (every trusted device, and only those), what a
round collects, and the loop that runs rounds every interval."""

from __future__ import annotations

import asyncio
import time

from simnet import Replica, SimNet
from sync_helpers import S, put, run, with_store

from datamgr.device.trust import TrustedDevice, TrustStore
from datamgr.kv.storage import Value
from datamgr.sync.gc import TombstoneCollector


def _trust(r: Replica, *devices: str, level: int = 4) -> TrustStore:
    trust = TrustStore(r.storage.engine)
    for d in devices:
        trust.add(TrustedDevice(d, f"device {d}", f"fp-{d}", "-----BEGIN CERTIFICATE-----", level))
    return trust


def _tombstones(r: Replica) -> list[bytes]:
    return [c.key for c in r.storage.changes_since(S, 0, 100) if c.value is None]


def test_a_round_waits_for_every_trusted_device_and_no_other(net: SimNet) -> None:
    (a,) = with_store(net, "A")
    a.storage.create_store("com.example.notes", "quiet", "SINGLE_VERSION", 2)  # no tombstones at all
    put(a, a=1, b=2, c=3)
    a.storage.write(S, [], [b"a"])  # seq 4
    a.storage.write(S, [], [b"b"])  # seq 5
    trust = _trust(a, "C", "B")
    gc = TombstoneCollector(a.storage, a.db, trust, interval_s=60)
    assert list(gc.peers()) == ["B", "C"]
    a.storage.set_acked(S, "B", 5)
    a.storage.set_acked(S, "X", 0)  # a device that is not (or no longer) trusted

    assert run(gc.collect()) == {}  # C is trusted and never synced: it acked nothing
    a.storage.set_acked(S, "C", 4)
    assert run(gc.collect()) == {S: 1}  # a: both have it; X, untrusted and behind, is not waited for
    assert _tombstones(a) == [b"b"]
    assert run(gc.collect()) == {}

    trust.remove("C")  # unpaired: no longer waited for
    assert run(gc.collect()) == {S: 1}
    assert _tombstones(a) == []
    assert a.storage.write(S, [(b"d", Value.of(4))])[0].seq == 6  # a collected seq is never reused


def test_a_device_that_may_not_hold_the_store_is_waited_for_only_if_it_once_held_some(net: SimNet) -> None:
    (a,) = with_store(net, "A", label=2)  # S2: an SL1 device may hold S1 only
    put(a, a=1, b=2)
    a.storage.write(S, [], [b"a"])  # seq 3
    trust = _trust(a, "B")
    trust.add(TrustedDevice("LOW", "a watch", "fp-LOW", "-----BEGIN CERTIFICATE-----", 1))
    gc = TombstoneCollector(a.storage, a.db, trust, interval_s=60)
    a.storage.set_acked(S, "B", 3)
    assert run(gc.collect()) == {S: 1}  # LOW never got any of this store: nothing to wait for
    assert _tombstones(a) == []

    a.storage.write(S, [], [b"b"])  # seq 4
    a.storage.set_acked(S, "B", 4)
    a.storage.set_acked(S, "LOW", 2)  # it held some once (its level was higher then): it may need b's delete
    assert run(gc.collect()) == {}
    assert _tombstones(a) == [b"b"]


def test_with_no_trusted_device_every_tombstone_goes(net: SimNet) -> None:
    (a,) = with_store(net, "A")
    put(a, a=1)
    a.storage.write(S, [], [b"a"])
    a.storage.set_acked(S, "X", 0)  # an unpaired device's watermark stays, and holds nothing back
    gc = TombstoneCollector(a.storage, a.db, _trust(a), interval_s=60)
    assert list(gc.peers()) == [] and run(gc.collect()) == {S: 1}


def test_the_loop_collects_every_interval_until_closed(net: SimNet) -> None:
    (a,) = with_store(net, "A")
    put(a, a=1, b=2)
    a.storage.write(S, [], [b"a"])  # seq 3
    trust = _trust(a, "B")

    async def scenario() -> None:
        gc = TombstoneCollector(a.storage, a.db, trust, interval_s=0.05)
        gc.start()
        await asyncio.sleep(0.2)
        assert _tombstones(a) == [b"a"]  # B has not acked it
        await a.db.write(a.storage.set_acked, S, "B", 3)
        deadline = time.monotonic() + 5
        while _tombstones(a):
            assert time.monotonic() < deadline, "the loop did not collect the acked tombstone"
            await asyncio.sleep(0.02)
        await gc.close()
        await a.db.write(a.storage.write, S, [], [b"b"])  # seq 4
        await a.db.write(a.storage.set_acked, S, "B", 4)
        await asyncio.sleep(0.2)
        assert _tombstones(a) == [b"b"]  # closed: no more rounds

        never = TombstoneCollector(a.storage, a.db, trust, interval_s=0)
        never.start()
        await asyncio.sleep(0.1)
        assert _tombstones(a) == [b"b"]  # interval 0: collection is off
        await never.close()

    run(scenario())

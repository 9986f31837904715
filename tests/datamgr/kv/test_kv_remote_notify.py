"""Changes the sync engine applied reach REMOTE and ALL subscribers, not LOCAL ones: the servicer in
process (no sync peer needed), fed through `on_remote_changes` as the sync engine calls it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from datamgr.apps import AdminCredential, AppRegistry
from datamgr.caller import Identify
from datamgr.client import (
    AsyncKvStoreClient,
    ChangeNotification,
    KvEntry,
    KvStoreType,
    SecurityLevel,
    SubscribeType,
)
from datamgr.config import KvSettings
from datamgr.hlc import HLC
from datamgr.kv.notify import remote_changes
from datamgr.kv.service import KvService
from datamgr.kv.storage import Change, KvStorage, Value, VType
from datamgr.storage import Database, create_engine

PEER = "peer-device"


def test_remote_changes_group_by_key_space() -> None:
    v = Value(VType.INT, 1)
    changes = [
        Change("a/s", "p1", b"k1", v, 1, "p1", 1),
        Change("a/s", "p2", b"k2", None, 2, "p2", 2),
        Change("a/s", "p1", b"k3", v, 3, "p1", 3),
    ]
    got = remote_changes("a/s", "p1", changes)
    assert [(c.device, c.updated, c.deleted) for c in got] == [
        ("p1", ((b"k1", v), (b"k3", v)), ()),
        ("p2", (), ((b"k2", None),)),
    ]
    single = [Change("a/s", "", b"k", v, 1, "p3", 1)]  # SINGLE_VERSION: the origin names the device
    assert [c.device for c in remote_changes("a/s", "p1", single)] == ["p3"]


def test_remote_changes_reach_remote_and_all_subscribers(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db = Database(engine, 2)
    apps = AppRegistry(engine)
    _, token = apps.add("com.example.app")
    storage = KvStorage(engine, "this-device", HLC())
    identify = Identify(apps, AdminCredential(tmp_path / "admin.token"))
    service = KvService(KvSettings(), db, apps, storage, asyncio.get_running_loop(), identify)
    server = grpc.aio.server()
    service.add_to(server)
    address = f"unix:{tmp_path / 'kv.sock'}"
    server.add_insecure_port(address)
    await server.start()
    await service.start()
    try:
        async with AsyncKvStoreClient.connect(address, token) as client:
            store = await client.get_kv_store(
                "s", kind=KvStoreType.DEVICE_COLLABORATION, security_level=SecurityLevel.S1
            )
            remote = await store.on_data_change(SubscribeType.REMOTE)
            every = await store.on_data_change(SubscribeType.ALL)
            local = await store.on_data_change(SubscribeType.LOCAL)

            info = storage.get_store("com.example.app/s")
            assert info is not None
            change = Change(
                info.store_id, PEER, b"k", Value(VType.STRING, "from the peer"), HLC().now(), PEER, 1
            )
            applied = await db.write(storage.apply_remote, info.store_id, PEER, "peer-epoch", [change], 1)
            service.on_remote_changes(info.store_id, PEER, applied)
            await store.put("mine", 1)

            from_peer = ChangeNotification([], [KvEntry("k", "from the peer")], [], PEER)
            mine = ChangeNotification([KvEntry("mine", 1)], [], [], "this-device")
            assert await asyncio.wait_for(remote.next(), 10) == from_peer
            assert [await asyncio.wait_for(every.next(), 10) for _ in range(2)] == [from_peer, mine]
            assert await asyncio.wait_for(local.next(), 10) == mine  # the peer's change was skipped
            assert await store.get("k", device_id=PEER) == "from the peer"
            assert await store.get_entries(device_id=PEER) == [KvEntry("k", "from the peer")]
            for sub in (remote, every, local):
                sub.close()
    finally:
        await service.close()
        await server.stop(0)
        await asyncio.to_thread(db.close)

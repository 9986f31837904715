"""Revocation is immediate: after `apps revoke` or `apps remove`, the app's open streams end at once
(PERMISSION_DENIED, UNAUTHENTICATED), with no event coming, and nothing committed after the revoke
reaches them: DataShare changes and published data, KV changes, WatchDevices, an attached extension
provider and a lazy drag source."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from harness import CONTACTS, PEOPLE_URI, READ, WRITE, Daemon, contacts_manifest

from datamgr.apps import DISTRIBUTED_DATASYNC
from datamgr.client import KvStoreClient, PublishedItem, SecurityLevel
from datamgr.connection import metadata
from datamgr.errors import DatamgrError
from datamgr.v1 import datashare_pb2 as ds_pb
from datamgr.v1 import datashare_pb2_grpc as ds_grpc
from datamgr.v1 import devices_pb2 as dev_pb
from datamgr.v1 import devices_pb2_grpc as dev_grpc
from udmf.v1 import udmf_pb2 as udmf_pb
from udmf.v1 import udmf_pb2_grpc as udmf_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__INTERFACES": json.dumps(["127.0.0.1"])}
WEATHER = "com.example.weather"
TODAY = f"datashareproxy://{WEATHER}/today"
READ_WEATHER = "com.example.permission.READ_WEATHER"


class Stream:
    """A stream read on a thread: what it delivered, then the status it ended with."""

    def __init__(self, messages: Iterable[Any], first: bool = True) -> None:
        self._messages = iter(messages)
        if first:
            next(self._messages)  # subscribed / attached / the snapshot: the stream is live
        self.got: queue.Queue[Any] = queue.Queue()
        self.code = ""
        self.details = ""
        self.ended = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for msg in self._messages:
                self.got.put(msg)
            self.code = "OK"
        except grpc.RpcError as exc:
            self.code, self.details = exc.code().name, exc.details() or ""
        except DatamgrError as exc:
            self.code, self.details = exc.code, exc.message
        finally:
            self.ended.set()

    def next(self, timeout: float = 10.0) -> Any:
        return self.got.get(timeout=timeout)

    def end(self, timeout: float = 20.0) -> str:
        """The status code name once the stream ended; fails if it is still open after `timeout`."""
        assert self.ended.wait(timeout), "the stream is still open"
        return self.code

    def rest(self) -> list[Any]:
        out = []
        while not self.got.empty():
            out.append(self.got.get_nowait())
        return out


@dataclass
class Env:
    daemon: Daemon
    provider: str
    channel: grpc.Channel

    def admin(self) -> Any:
        return self.daemon.admin()

    def insert(self, row_id: int) -> None:
        with self.daemon.helper(self.provider) as h:
            h.insert(PEOPLE_URI, {"id": row_id, "name": f"row {row_id}"})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    daemon = Daemon(tmp_path_factory.mktemp("revocation") / "data", env=ENV).start()
    try:
        provider = daemon.add_app(CONTACTS)
        with daemon.helper(provider) as h:
            h.register_provider(contacts_manifest())
        with grpc.insecure_channel(daemon.address) as channel:
            yield Env(daemon, provider, channel)
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()


def subscribe(env: Env, token: str) -> tuple[Stream, Any]:
    call = ds_grpc.DataShareServiceStub(env.channel).Subscribe(
        ds_pb.SubscribeRequest(uri=PEOPLE_URI), metadata=metadata(token), timeout=120
    )
    return Stream(call), call


def revoke_or_remove(env: Env, bundle: str, permission: str, how: str) -> None:
    with env.admin() as admin:
        if how == "revoke":
            admin.revoke(bundle, [permission])
        else:
            admin.remove_app(bundle)


def ids(messages: list[Any]) -> list[int]:
    """The ids of the rows in ChangeInfo messages (the first column value, as a long)."""
    return [v.values["id"].int_value for m in messages for v in m.change.values]


@pytest.mark.parametrize("how", ["revoke", "remove"])
def test_a_datashare_subscription_ends_at_once_and_gets_nothing_committed_after(env: Env, how: str) -> None:
    bundle = f"com.example.reader.{how}"
    token = env.daemon.add_app(bundle, READ)
    stream, call = subscribe(env, token)
    try:
        env.insert(1000 if how == "revoke" else 2000)
        assert ids([stream.next()]) == [1000 if how == "revoke" else 2000]
        revoke_or_remove(env, bundle, READ, how)
        after = 1001 if how == "revoke" else 2001
        env.insert(after)  # committed after the revoke: must never reach the stream
        if how == "revoke":
            assert stream.end() == "PERMISSION_DENIED"
            assert READ in stream.details
        else:
            assert stream.end() == "UNAUTHENTICATED"
            assert "removed" in stream.details
        assert after not in ids(stream.rest())
    finally:
        call.cancel()


def test_a_revoke_ends_the_subscription_even_when_no_change_comes(env: Env) -> None:
    bundle = "com.example.reader.idle"
    token = env.daemon.add_app(bundle, READ, WRITE)
    stream, call = subscribe(env, token)
    try:
        with env.admin() as admin:
            admin.revoke(bundle, [WRITE])  # not what reading needs: the stream stays open
            admin.revoke(bundle, [READ])
        assert stream.end() == "PERMISSION_DENIED"
        assert stream.rest() == []
    finally:
        call.cancel()


def test_a_revoke_of_another_permission_leaves_the_subscription_open(env: Env) -> None:
    bundle = "com.example.reader.kept"
    token = env.daemon.add_app(bundle, READ, WRITE)
    stream, call = subscribe(env, token)
    try:
        with env.admin() as admin:
            admin.revoke(bundle, [WRITE])
        env.insert(3000)
        assert ids([stream.next()]) == [3000]
        assert not stream.ended.is_set()
    finally:
        call.cancel()


def test_a_published_data_subscription_ends_on_revoke(env: Env) -> None:
    weather = env.daemon.add_app(WEATHER)
    watch = env.daemon.add_app("com.example.watch", READ_WEATHER)
    with env.daemon.helper(weather) as h:
        h.register_provider({"bundle": WEATHER, "published_read_permission": READ_WEATHER})
        h.publish([PublishedItem(TODAY, "sunny", "1")], WEATHER, version=1)
    with env.daemon.helper(watch) as w:
        sub = w.subscribe_published_data([TODAY], "1")
        stream = Stream(sub, first=False)
        try:
            assert [i.data for i in stream.next().data] == ["sunny"]
            with env.admin() as admin:
                admin.revoke("com.example.watch", [READ_WEATHER])
            assert stream.end() == "PERMISSION_DENIED"  # at once: no publish is needed to notice
            with env.daemon.helper(weather) as h:
                h.publish([PublishedItem(TODAY, "rain", "1")], WEATHER, version=2)
            assert all(i.data != "rain" for change in stream.rest() for i in change.data)
        finally:
            sub.close()


def test_a_kv_subscription_ends_when_its_app_is_removed(env: Env) -> None:
    bundle = "com.example.notes"
    token = env.daemon.add_app(bundle)
    with KvStoreClient.connect(env.daemon.address, token) as kv:
        store = kv.get_kv_store("notes", security_level=SecurityLevel.S1)
        changes = store.on_data_change()
        stream = Stream(changes, first=False)
        try:
            store.put("a", "1")
            assert [e.key for e in stream.next().insert_entries] == ["a"]
            with env.admin() as admin:
                admin.remove_app(bundle)
            assert stream.end() == "UNAUTHENTICATED"
            assert "removed" in stream.details
        finally:
            changes.close()


@pytest.mark.parametrize("how", ["revoke", "remove"])
def test_watch_devices_ends_on_revoke_and_remove(env: Env, how: str) -> None:
    bundle = f"com.example.sync.{how}"
    token = env.daemon.add_app(bundle, DISTRIBUTED_DATASYNC)
    call = dev_grpc.DeviceServiceStub(env.channel).WatchDevices(
        dev_pb.WatchDevicesRequest(), metadata=metadata(token), timeout=120
    )
    stream = Stream(call)
    try:
        revoke_or_remove(env, bundle, DISTRIBUTED_DATASYNC, how)
        assert stream.end() == ("PERMISSION_DENIED" if how == "revoke" else "UNAUTHENTICATED")
    finally:
        call.cancel()


def test_an_attached_extension_provider_is_detached_when_its_app_is_removed(env: Env) -> None:
    bundle = "com.example.ext"
    token = env.daemon.add_app(bundle)
    outbox: queue.Queue[ds_pb.ProviderMessage | None] = queue.Queue()
    outbox.put(ds_pb.ProviderMessage(hello=ds_pb.ProviderHello()))
    call = ds_grpc.DataShareServiceStub(env.channel).AttachProvider(
        iter(outbox.get, None), metadata=metadata(token), timeout=120
    )
    stream = Stream(call)
    try:
        with env.admin() as admin:
            admin.remove_app(bundle)
        assert stream.end() == "UNAUTHENTICATED"
    finally:
        outbox.put(None)
        call.cancel()


def test_a_lazy_drag_source_ends_when_its_app_is_removed(env: Env) -> None:
    bundle = "com.example.dragger"
    token = env.daemon.add_app(bundle)
    start = udmf_pb.LazyDragStart(
        properties=udmf_pb.Properties(tag="lazy"),
        record_count=1,
        summary=udmf_pb.Summary(summary={"general.plain-text": 10}),
    )
    outbox: queue.Queue[udmf_pb.LazySourceMessage | None] = queue.Queue()
    outbox.put(udmf_pb.LazySourceMessage(start=start))
    call = udmf_grpc.UdmfServiceStub(env.channel).StartLazyDrag(
        iter(outbox.get, None), metadata=metadata(token), timeout=120
    )
    stream = Stream(call)  # the drag's key
    try:
        with env.admin() as admin:
            admin.remove_app(bundle)
        assert stream.end() == "UNAUTHENTICATED"
    finally:
        outbox.put(None)
        call.cancel()

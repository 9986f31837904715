"""Published data ("process data") end to end: a real daemon, real gRPC, the SDK and the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from harness import Daemon

from datamgr.client import DataShareHelper, OperationResult, PublishedDataChange, PublishedItem, Subscription
from datamgr.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted

WEATHER = "com.example.weather"
TODAY = f"datashareproxy://{WEATHER}/today"
WEEK = f"datashareproxy://{WEATHER}/week"
READ_WEATHER = "com.example.permission.READ_WEATHER"
VERSION_NOT_NEWER = 1045


@dataclass
class Env:
    """A daemon with the weather publisher, a permitted reader (watch) and an outsider (game)."""

    daemon: Daemon
    weather: str
    watch: str
    game: str

    def helper(self, token: str) -> DataShareHelper:
        return self.daemon.helper(token)


@pytest.fixture
def env(daemon: Daemon) -> Iterator[Env]:
    weather = daemon.add_app(WEATHER)
    watch = daemon.add_app("com.example.watch", READ_WEATHER)
    game = daemon.add_app("com.example.game")
    with daemon.helper(weather) as h:
        h.register_provider({"bundle": WEATHER, "published_read_permission": READ_WEATHER})
    yield Env(daemon, weather, watch, game)
    assert "Traceback" not in daemon.log()


def next_change(sub: Subscription[PublishedDataChange], timeout: float = 10.0) -> PublishedDataChange:
    """The subscription's next change; closes it and fails when none comes within `timeout`."""
    got: list[Any] = []

    def take() -> None:
        try:
            got.append(sub.next())
        except Exception as exc:
            got.append(exc)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(timeout)
    if not got:
        sub.close()
        pytest.fail(f"no published data change within {timeout} s")
    if isinstance(got[0], Exception):
        raise got[0]
    return got[0]


def test_publish_and_get_round_trip_text_and_bytes(env: Env) -> None:
    items = [
        PublishedItem(TODAY, "sunny, 21°C", "1"),
        PublishedItem(WEEK, bytes(range(256)) * 100, "1"),
        PublishedItem(TODAY, b"", "2"),
    ]
    with env.helper(env.weather) as h:
        assert h.publish(items, WEATHER) == [OperationResult(i.key, 0, "") for i in items]
        mine = h.get_published_data(WEATHER)
    with env.helper(env.watch) as h:
        theirs = h.get_published_data(WEATHER)
    expected = sorted(items, key=lambda i: (i.key, i.subscriber_id))
    assert mine == theirs == expected
    assert [type(i.data) for i in theirs] == [str, bytes, bytes]


def test_an_older_version_does_not_overwrite_a_newer_one(env: Env) -> None:
    with env.helper(env.weather) as h:
        assert h.publish([PublishedItem(TODAY, "v5")], WEATHER, version=5)[0].ok
        (older,) = h.publish([PublishedItem(TODAY, "v3")], WEATHER, version=3)
        assert (older.key, older.result) == (TODAY, VERSION_NOT_NEWER)
        assert older.message == "version 3 is older than stored version 5"
        assert h.get_published_data(WEATHER) == [PublishedItem(TODAY, "v5")]
        assert h.publish([PublishedItem(TODAY, "v5 again")], WEATHER, version=5)[0].ok
        assert h.publish([PublishedItem(TODAY, "unversioned")], WEATHER)[0].result == VERSION_NOT_NEWER
        assert h.get_published_data(WEATHER) == [PublishedItem(TODAY, "v5 again")]


def test_one_bad_item_does_not_stop_the_others(env: Env) -> None:
    items = [
        PublishedItem("datashareproxy://com.example.watch/steps", "not mine"),
        PublishedItem("weather-today", "not a uri"),
        PublishedItem(WEEK, "fine"),
    ]
    with env.helper(env.weather) as h:
        results = h.publish(items, WEATHER)
        assert [(r.key, r.result != 0) for r in results] == [(i.key, i.key != WEEK) for i in items]
        assert "publishes only its own" in results[0].message
        assert "expected datashareproxy://" in results[1].message
        assert h.get_published_data(WEATHER) == [PublishedItem(WEEK, "fine")]


def test_another_app_cannot_publish_for_you(env: Env) -> None:
    with env.helper(env.game) as h:
        with pytest.raises(PermissionDenied, match=r"game may not publish for com\.example\.weather"):
            h.publish([PublishedItem(TODAY, "hacked")], WEATHER)
        with pytest.raises(NotFound, match=r"data area of com\.example\.nobody does not exist"):
            h.publish([PublishedItem("datashareproxy://com.example.nobody/x", "?")], "com.example.nobody")
        with pytest.raises(InvalidArgument, match="invalid bundle name"):
            h.publish([], "not a bundle")
    with env.helper(env.weather) as h:
        assert h.get_published_data(WEATHER) == []
        with pytest.raises(InvalidArgument, match="at most 32 items, not 33"):
            h.publish([PublishedItem(f"{TODAY}{n}", "x") for n in range(33)], WEATHER)
        assert h.get_published_data(WEATHER) == []


def test_data_over_the_call_limit_is_refused(tmp_path: Any) -> None:
    daemon = Daemon(tmp_path / "data", env={"DATAMGR_DATASHARE__MAX_CALL_BYTES": "4096"}).start()
    try:
        token = daemon.add_app(WEATHER)
        with daemon.helper(token) as h:
            assert h.publish([PublishedItem(TODAY, "x" * 3000)], WEATHER)[0].ok
            with pytest.raises(ResourceExhausted, match="over the limit of 4096 bytes"):
                h.publish([PublishedItem(TODAY, "x" * 5000)], WEATHER)
            assert h.get_published_data(WEATHER) == [PublishedItem(TODAY, "x" * 3000)]
    finally:
        assert daemon.stop() == 0


def test_reading_needs_the_publishers_permission(env: Env) -> None:
    news = env.daemon.add_app("com.example.news")  # publishes without a manifest: provider-only
    with env.helper(news) as h:
        top = PublishedItem("datashareproxy://com.example.news/top", "headline")
        assert h.publish([top], "com.example.news")[0].ok
        assert len(h.get_published_data("com.example.news")) == 1
    with env.helper(env.weather) as h:
        h.publish([PublishedItem(TODAY, "sunny")], WEATHER)
    with env.helper(env.game) as h:
        with pytest.raises(PermissionDenied, match=f"lacks permission {READ_WEATHER}"):
            h.get_published_data(WEATHER)
        with pytest.raises(PermissionDenied, match=f"lacks permission {READ_WEATHER}"):
            h.subscribe_published_data([TODAY])
    with env.helper(env.watch) as h:
        assert h.get_published_data(WEATHER) == [PublishedItem(TODAY, "sunny")]
        with pytest.raises(PermissionDenied, match="provider-only"):
            h.get_published_data("com.example.news")
        with pytest.raises(NotFound, match=r"data area of com\.example\.nobody"):
            h.get_published_data("com.example.nobody")


def test_bad_uris_and_arguments_are_invalid(env: Env) -> None:
    with env.helper(env.watch) as h:
        for uris in (
            [],
            ["datashare:///com.example.weather/main/t"],
            ["datashareproxy://com.example.weather"],
        ):
            with pytest.raises(InvalidArgument):
                h.subscribe_published_data(uris)
        with pytest.raises(InvalidArgument, match="must name one publisher"):
            h.subscribe_published_data([TODAY, "datashareproxy://com.example.news/top"])
        with pytest.raises(InvalidArgument, match="subscriber id"):
            h.subscribe_published_data([TODAY], "x" * 129)
        with pytest.raises(InvalidArgument, match="invalid bundle name"):
            h.get_published_data("")


def test_subscriber_gets_the_stored_items_then_each_publish_in_order(env: Env) -> None:
    with env.helper(env.weather) as pub, env.helper(env.watch) as h:
        pub.publish([PublishedItem(TODAY, "before", "1"), PublishedItem(TODAY, "other id", "2")], WEATHER)
        with h.subscribe_published_data([TODAY, WEEK], "1") as sub:
            assert next_change(sub) == PublishedDataChange(WEATHER, [PublishedItem(TODAY, "before", "1")])

            def pair(n: int) -> list[PublishedItem]:
                return [PublishedItem(TODAY, f"t{n}", "1"), PublishedItem(WEEK, b"%d" % n, "1")]

            for n in range(20):
                pub.publish(pair(n), WEATHER)
            for n in range(20):
                assert next_change(sub) == PublishedDataChange(WEATHER, pair(n))
            # Not delivered: another subscriber id, another uri, a rejected version, a failed item.
            pub.publish([PublishedItem(TODAY, "for 2", "2")], WEATHER)
            pub.publish([PublishedItem(f"datashareproxy://{WEATHER}/month", "m", "1")], WEATHER)
            pub.publish([PublishedItem(WEEK, "old", "1")], WEATHER, version=-1)
            pub.publish([PublishedItem(TODAY, "last", "1"), PublishedItem("bad", "x", "1")], WEATHER)
            assert next_change(sub) == PublishedDataChange(WEATHER, [PublishedItem(TODAY, "last", "1")])


def test_a_publish_racing_the_subscription_arrives_once(env: Env) -> None:
    """Publishes that commit while a subscription starts are in its first snapshot or after it, never both."""
    stop = threading.Event()

    def publish_forever() -> None:
        with env.helper(env.weather) as pub:
            n = 0
            while not stop.is_set():
                n += 1
                pub.publish([PublishedItem(TODAY, str(n))], WEATHER, version=n)

    publisher = threading.Thread(target=publish_forever, daemon=True)
    publisher.start()
    try:
        with env.helper(env.watch) as h:
            for _ in range(5):
                with h.subscribe_published_data([TODAY]) as sub:
                    seen = [int(next_change(sub).data[0].data) for _ in range(10)]
                assert seen == sorted(set(seen)), f"a change arrived twice or out of order: {seen}"
    finally:
        stop.set()
        publisher.join(10)


def test_revoking_the_permission_ends_the_subscription(env: Env) -> None:
    with (
        env.helper(env.weather) as pub,
        env.helper(env.watch) as h,
        h.subscribe_published_data([TODAY]) as sub,
    ):
        pub.publish([PublishedItem(TODAY, "1")], WEATHER)
        assert next_change(sub).data == [PublishedItem(TODAY, "1")]
        with env.daemon.admin() as admin:
            admin.revoke("com.example.watch", [READ_WEATHER])
        pub.publish([PublishedItem(TODAY, "2")], WEATHER)
        with pytest.raises(PermissionDenied, match=f"lacks permission {READ_WEATHER}"):
            next_change(sub)


def test_removing_the_app_deletes_its_published_data(env: Env) -> None:
    with env.helper(env.weather) as h:
        h.publish([PublishedItem(TODAY, "sunny")], WEATHER, version=9)
    with env.daemon.admin() as admin:
        admin.remove_app(WEATHER)
    token = env.daemon.add_app(WEATHER)
    with env.helper(token) as h:
        assert h.get_published_data(WEATHER) == []
        assert h.publish([PublishedItem(TODAY, "fresh")], WEATHER, version=1)[0].ok


def test_subscription_ends_cleanly_when_the_daemon_stops(env: Env) -> None:
    with env.helper(env.watch) as h:
        sub = h.subscribe_published_data([TODAY])
        ended: list[list[PublishedDataChange]] = []
        thread = threading.Thread(target=lambda: ended.append(list(sub)), daemon=True)
        thread.start()
        assert env.daemon.stop() == 0
        thread.join(10)
        assert ended == [[]]


def test_async_helper_publishes_reads_and_subscribes(env: Env) -> None:
    async def scenario() -> None:
        async with env.daemon.async_helper(env.weather) as pub, env.daemon.async_helper(env.watch) as h:
            assert (await pub.publish([PublishedItem(TODAY, b"\x01", "s")], WEATHER, 2))[0].ok
            (older,) = await pub.publish([PublishedItem(TODAY, "v1", "s")], WEATHER, 1)
            assert older.result == VERSION_NOT_NEWER
            assert await h.get_published_data(WEATHER) == [PublishedItem(TODAY, b"\x01", "s")]
            sub = await h.subscribe_published_data([TODAY], "s")
            try:
                first = await asyncio.wait_for(sub.next(), 10)
                assert first == PublishedDataChange(WEATHER, [PublishedItem(TODAY, b"\x01", "s")])
                await pub.publish([PublishedItem(TODAY, "a", "s")], WEATHER, 2)
                await pub.publish([PublishedItem(TODAY, "b", "s")], WEATHER, 3)
                got = [await asyncio.wait_for(sub.next(), 10) for _ in range(2)]
                assert [c.data[0].data for c in got] == ["a", "b"]
            finally:
                sub.close()
            async with env.daemon.async_helper(env.game) as game:
                with pytest.raises(PermissionDenied):
                    await game.get_published_data(WEATHER)
                with pytest.raises(PermissionDenied):
                    await game.publish([PublishedItem(TODAY, "x")], WEATHER)

    asyncio.run(scenario())


def _cli(env: Env, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "datamgr", "share", *args, "--token", token, "--address", env.daemon.address]
    return subprocess.run(cmd, env=env.daemon.env(), capture_output=True, text=True, timeout=60, check=False)


def test_cli_publish_and_published(env: Env) -> None:
    ok = _cli(env, env.weather, "publish", WEATHER, TODAY, "sunny", "--version", "2", "--subscriber-id", "7")
    assert ok.returncode == 0, ok.stderr
    assert f"published {TODAY}" in ok.stdout
    blob = base64.b64encode(b"\x00\xfe").decode()
    assert _cli(env, env.weather, "publish", WEATHER, WEEK, blob, "--blob").returncode == 0

    older = _cli(env, env.weather, "publish", WEATHER, TODAY, "rain", "--version=1", "--subscriber-id=7")
    assert older.returncode == 1
    assert "1045: version 1 is older than stored version 2" in older.stderr
    denied = _cli(env, env.game, "publish", WEATHER, TODAY, "hacked")
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    bad_blob = _cli(env, env.weather, "publish", WEATHER, WEEK, "not base64!", "--blob")
    assert bad_blob.returncode == 1
    assert "--blob needs DATA in base64" in bad_blob.stderr

    listed = _cli(env, env.watch, "published", WEATHER, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"key": TODAY, "subscriber_id": "7", "data": "sunny"},
        {"key": WEEK, "subscriber_id": "", "data": {"$base64": blob}},
    ]
    table = _cli(env, env.watch, "published", WEATHER)
    assert table.returncode == 0, table.stderr
    assert "sunny" in table.stdout
    assert "2 items" in table.stdout
    assert _cli(env, env.game, "published", WEATHER).returncode == 1


def test_cli_subscribe_published_prints_json_lines(env: Env) -> None:
    with env.helper(env.weather) as pub:
        pub.publish([PublishedItem(TODAY, "stored")], WEATHER)
        cmd = [
            sys.executable,
            "-m",
            "datamgr",
            "share",
            "subscribe-published",
            TODAY,
            "--count",
            "2",
            "--token",
            env.watch,
            "--address",
            env.daemon.address,
        ]
        pipe = subprocess.PIPE
        proc = subprocess.Popen(cmd, env=env.daemon.env(), stdout=pipe, stderr=pipe, text=True)
        try:
            assert proc.stderr is not None
            assert proc.stderr.readline().startswith(f"subscribed to {TODAY}")
            pub.publish([PublishedItem(TODAY, b"new")], WEATHER)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [
        {"bundle": WEATHER, "data": [{"key": TODAY, "subscriber_id": "", "data": "stored"}]},
        {"bundle": WEATHER, "data": [{"key": TODAY, "subscriber_id": "", "data": {"$base64": "bmV3"}}]},
    ]

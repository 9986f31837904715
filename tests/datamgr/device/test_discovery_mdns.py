"""Discovery over real mDNS on 127.0.0.1, in one process: what a daemon cannot easily be made to do
(change its port, meet a peer that sends bad TXT data). Loopback is shared with whatever else runs on
this machine (other test runs, daemons): device ids carry our pid, and other devices are ignored."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from datamgr.device.advert import SERVICE_TYPE, Advert
from datamgr.device.discovery import Discovery, DiscoveryConfig
from datamgr.device.peer_table import DeviceEvent, DeviceWatch, EventKind

LOOPBACK = ("127.0.0.1",)
pytestmark = pytest.mark.timeout(60)
PID = os.getpid()


def discovery(device_id: str, port: int = 0, ttl: float = 30.0) -> Discovery:
    return Discovery(DiscoveryConfig(LOOPBACK, ttl), Advert(device_id, device_id, 2), port)


async def start(d: Discovery) -> Discovery:
    await d.async_start()
    d.async_advertise()
    return d


async def next_event(watch: DeviceWatch, match: Callable[[DeviceEvent], bool], timeout: float) -> DeviceEvent:
    async def first() -> DeviceEvent:
        async for event in watch:
            if match(event):
                return event
        raise AssertionError("the watch ended")

    return await asyncio.wait_for(first(), timeout)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_port_and_capability_changes_arrive_as_updated() -> None:
    async def main() -> None:
        a_id, b_id = f"mdns-a-{PID}", f"mdns-b-{PID}"
        a, b = discovery(a_id), discovery(b_id, port=7000)
        await start(a)
        watch = a.events.watch()
        await start(b)
        try:
            online = await next_event(watch, lambda e: e.peer.device_id == b_id, 10)
            assert online.kind is EventKind.ONLINE and online.peer.port == 7000
            assert online.peer.addresses == LOOPBACK
            await b.async_update(port=7001, capabilities=["ai=smollm2-135m"])
            updated = await next_event(watch, lambda e: e.peer.device_id == b_id, 10)
            assert updated.kind is EventKind.UPDATED
            assert (updated.peer.port, updated.peer.advert.capabilities) == (7001, ("ai=smollm2-135m",))
            listed = [p.device_id for p in a.table.peers()]
            assert b_id in listed and a_id not in listed  # never itself
        finally:
            await b.async_close()
            await a.async_close()

    run(main)


def test_bad_adverts_are_ignored_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        a = discovery(f"mdns-c-{PID}")
        await start(a)
        watch = a.events.watch()
        rogue = AsyncZeroconf(interfaces=list(LOOPBACK))
        no_level, mismatch, bad_bits = (f"{label}-{PID}" for label in ("no-level", "mismatch", "bad-bits"))
        bad = [
            (no_level, {"id": no_level, "pv": "1"}),
            (mismatch, {"id": f"someone-else-{PID}", "pv": "1", "sl": "3"}),
            (bad_bits, {"id": bad_bits, "pv": "1", "sl": "3", "name": "\x07bell", "caps": "ok,NOT OK"}),
        ]
        ours = {no_level, f"someone-else-{PID}", bad_bits}
        try:
            for label, props in bad:
                info = ServiceInfo(
                    SERVICE_TYPE,
                    f"{label}.{SERVICE_TYPE}",
                    port=1,
                    properties=props,
                    server=f"{label}.local.",
                    parsed_addresses=["127.0.0.1"],
                )
                await rogue.async_register_service(info)
            event = await next_event(watch, lambda e: e.peer.device_id in ours, 10)
            # only the advert with dropped optional values is a device, with what was valid in it
            assert (event.kind, event.peer.device_id) == (EventKind.ONLINE, bad_bits)
            assert (event.peer.advert.name, event.peer.advert.capabilities) == ("", ("ok",))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sum("mDNS advert" in m for m in caplog.messages) < 4:
                await asyncio.sleep(0.05)
            assert [p.device_id for p in a.table.peers() if p.device_id in ours] == [bad_bits]
        finally:
            await rogue.async_close()
            await a.async_close()
        logged = [m for m in caplog.messages if "mDNS advert" in m]
        assert any(no_level in m and "sl" in m for m in logged)
        assert any(mismatch in m and "does not match" in m for m in logged)
        assert any(bad_bits in m and "name" in m for m in logged)
        assert any(bad_bits in m and "NOT OK" in m for m in logged)

    with caplog.at_level(logging.WARNING, logger="datamgr.discovery"):
        run(main)


def test_a_peer_that_stops_answering_goes_offline_after_the_ttl() -> None:
    """The peer's mDNS goes away without a goodbye (as a killed daemon's would)."""

    async def main() -> None:
        b_id = f"mdns-e-{PID}"
        a, b = discovery(f"mdns-d-{PID}", ttl=2.0), discovery(b_id, ttl=2.0)
        await start(a)
        watch = a.events.watch()
        await start(b)
        try:
            await next_event(watch, lambda e: e.peer.device_id == b_id and e.kind is EventKind.ONLINE, 10)
            await asyncio.sleep(3)  # beyond the TTL: kept online by the refresh queries
            peer = a.table.get(b_id)
            assert peer is not None and peer.online
            assert b._aiozc is not None
            b.events.close()
            for task in (b._sweeper, b._registering):
                assert task is not None
                task.cancel()
            await b._aiozc.zeroconf._async_close()  # no goodbye
            b._aiozc = None
            started = time.monotonic()
            event = await next_event(watch, lambda e: e.peer.device_id == b_id, 10)
            assert (event.kind, event.peer.device_id) == (EventKind.OFFLINE, b_id)
            assert time.monotonic() - started < 2.0 + 1.0  # within the TTL of its last answer
        finally:
            await b.async_close()
            await a.async_close()

    run(main)

"""Probing and announcing over real mDNS on 127.0.0.1, in one process: probes keep RFC 6762 §8.1's pace,
a name another responder holds is never advertised, and nothing names a port before `async_advertise`
(which the daemon calls once its servers listen)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any

import pytest
from test_discovery_mdns import next_event, run
from zeroconf import DNSOutgoing, DNSPointer, DNSService, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from datamgr.device.advert import SERVICE_TYPE, Advert, instance_name
from datamgr.device.discovery import Discovery, DiscoveryConfig
from datamgr.device.peer_table import EventKind

LOOPBACK = ("127.0.0.1",)
pytestmark = pytest.mark.timeout(60)


def unique(label: str) -> str:
    """A device id no other test run on this machine's loopback uses at the same time."""
    return f"probe-{os.getpid()}-{label}"


def discovery(device_id: str, port: int = 0) -> Discovery:
    return Discovery(DiscoveryConfig(LOOPBACK, 30.0), Advert(device_id, device_id, 2), port)


def record_sent(d: Discovery) -> list[tuple[float, DNSOutgoing]]:
    """Everything `d`'s zeroconf sends from now on, with the time: call it straight after async_start."""
    assert d._aiozc is not None
    zc = d._aiozc.zeroconf
    sent: list[tuple[float, DNSOutgoing]] = []
    send = zc.async_send

    def recording(out: DNSOutgoing, *args: Any, **kwargs: Any) -> None:
        sent.append((time.monotonic(), out))
        send(out, *args, **kwargs)

    zc.async_send = recording  # type: ignore[method-assign]
    return sent


def is_probe(out: DNSOutgoing, name: str) -> bool:
    return out.is_query() and any(isinstance(r, DNSPointer) and r.alias == name for r in out.authorities)


def answered_records(out: DNSOutgoing, name: str) -> list[Any]:
    """The records about `name` that `out` answers with (not a probe's proposal, nor a query's known
    answers)."""
    if out.is_query():
        return []
    records = [r for r, _ in out.answers] + list(out.additionals)
    return [r for r in records if r.name == name or (isinstance(r, DNSPointer) and r.alias == name)]


def test_probes_keep_rfc_6762_pace_and_no_port_is_named_before_advertising() -> None:
    async def main() -> None:
        b_id = unique("b")
        name = instance_name(b_id)
        a, b = discovery(unique("a")), discovery(b_id)  # b has no port yet
        await a.async_start()
        watch = a.events.watch()
        await b.async_start()
        sent = record_sent(b)
        try:
            assert b._probing is not None and await b._probing  # the name is free
            probed = time.monotonic()
            probes = [t for t, out in sent if is_probe(out, name)]
            assert len(probes) == 3
            assert all(later - earlier >= 0.245 for earlier, later in itertools.pairwise(probes))
            assert probed - probes[-1] >= 0.245  # it waited for answers to the last probe too
            await asyncio.sleep(0.5)
            assert not [r for _, out in sent for r in answered_records(out, name)]  # probed, not announced
            assert a.table.get(b_id) is None and not b.advertising

            await b.async_update(port=7000, capabilities=["datashare"])  # as the daemon does once serving
            b.async_advertise()
            event = await next_event(watch, lambda e: e.peer.device_id == b_id, 10)
            assert (event.kind, event.peer.port, event.peer.advert.capabilities) == (
                EventKind.ONLINE,
                7000,
                ("datashare",),
            )
            named = [r for _, out in sent for r in answered_records(out, name)]
            assert {r.port for r in named if isinstance(r, DNSService)} == {7000}  # the only port it named
        finally:
            await b.async_close()
            await a.async_close()

    run(main)


def test_a_name_another_responder_holds_is_not_advertised(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        device_id = unique("taken")
        holder = AsyncZeroconf(interfaces=list(LOOPBACK))
        info = ServiceInfo(
            SERVICE_TYPE,
            instance_name(device_id),
            port=1,
            properties={"id": device_id, "pv": "1", "sl": "2"},
            server=f"{device_id}-holder.local.",
            parsed_addresses=list(LOOPBACK),
        )
        await holder.async_register_service(info)
        d = discovery(device_id, port=7000)
        await d.async_start()
        sent = record_sent(d)
        d.async_advertise()
        try:
            assert d._probing is not None and not await d._probing
            assert d._registering is not None
            await d._registering
            assert not d.advertising
            assert not [r for _, out in sent for r in answered_records(out, instance_name(device_id))]
        finally:
            await d.async_close()
            await holder.async_close()

    with caplog.at_level(logging.ERROR, logger="datamgr.discovery"):
        run(main)
    assert any("another device advertises our device id" in m for m in caplog.messages)


def test_a_holder_heard_among_other_responders_on_this_host(caplog: pytest.LogCaptureFixture) -> None:
    """The holder's announcements are over, so it answers a probe with the unicast-response bit (QU) by
    unicast to port 5353 only (it multicast its record lately), and the kernel hands that to one of the
    host's responders sharing the port, seldom the prober (RFC 6762 §15.1): probes ask for multicast
    answers (QM), which every responder here receives."""

    async def main() -> None:
        device_id = unique("announced")
        holder = AsyncZeroconf(interfaces=list(LOOPBACK))
        bystanders = [AsyncZeroconf(interfaces=list(LOOPBACK)) for _ in range(3)]  # other daemons here
        info = ServiceInfo(
            SERVICE_TYPE,
            instance_name(device_id),
            port=1,
            properties={"id": device_id, "pv": "1", "sl": "2"},
            server=f"{device_id}-holder.local.",
            parsed_addresses=list(LOOPBACK),
        )
        await (await holder.async_register_service(info))  # its announcements are over
        d = discovery(device_id, port=7000)
        await d.async_start()
        sent = record_sent(d)
        d.async_advertise()
        try:
            assert d._probing is not None and not await d._probing
            probes = [out for _, out in sent if is_probe(out, instance_name(device_id))]
            assert probes and not [q for out in probes for q in out.questions if q.unique]  # no QU
            assert d._registering is not None
            await d._registering
            assert not d.advertising
        finally:
            await d.async_close()
            for zc in (holder, *bystanders):
                await zc.async_close()

    with caplog.at_level(logging.ERROR, logger="datamgr.discovery"):
        run(main)
    assert any("another device advertises our device id" in m for m in caplog.messages)

"""Discovery: this device advertised over mDNS (`_datamgr._tcp.local.`) and the peers that do the same.

The mDNS shell around `PeerTable`, on the daemon's event loop (python-zeroconf's AsyncZeroconf; its
`async_` methods run on the loop). Zeroconf only ever uses the configured interface addresses
(loopback by default), never its "all interfaces" default. Three inputs drive the table:

- the browser: a new service is resolved (ONLINE), a changed one re-resolved (UPDATED), a goodbye or
  an expired PTR record makes it OFFLINE;
- every SRV/TXT record of a peer that arrives, whoever asked for it, keeps the peer online;
- a sweep: peers not heard of for `offline_after_s` go OFFLINE (a killed daemon says no goodbye), and
  peers near that age are asked for their records first.

Our records carry `offline_after_s` as their TTL, so other mDNS caches age them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from zeroconf import (
    DNSOutgoing,
    DNSQuestion,
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from datamgr.device.advert import (
    MAX_ADDRESSES,
    SERVICE_TYPE,
    Advert,
    BadAdvert,
    decode_txt,
    encode_txt,
    instance_name,
)
from datamgr.device.peer_table import DeviceEvent, DeviceEvents, EventKind, PeerTable

log = logging.getLogger("datamgr.discovery")

# DNS constants (RFC 1035)
_TYPE_PTR = 12
_TYPE_TXT = 16
_TYPE_SRV = 33
_CLASS_IN = 1
_FLAGS_QUERY = 0

_PROBES = 3  # RFC 6762 §8.1
_PROBE_INTERVAL_S = 0.25
_PROBE_DELAY_S = 0.25  # at most, before the first probe
_RESOLVE_TIMEOUT_MS = 3000
_MAX_RESOLVING = 64  # concurrent resolutions; more new names at once wait for the browser to retry
_NOTES_REMEMBERED = 256  # bad adverts already logged, so a chatty bad peer logs once


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    interfaces: tuple[str, ...]
    offline_after_s: float
    max_peers: int = 256


class Discovery(RecordUpdateListener):
    """Advertises `local` and keeps `table` up to date; `events` feeds its changes to watchers."""

    def __init__(
        self,
        config: DiscoveryConfig,
        local: Advert,
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        encode_txt(local)  # a bad id, name or fingerprint fails here, at start, not on the network
        self.config = config
        self.local = local
        self.port = port
        self.table = PeerTable(local.device_id, config.offline_after_s, config.max_peers)
        self.events = DeviceEvents(self.table)
        self.clock = clock
        self._own_name = instance_name(local.device_id).lower()
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: ServiceInfo | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._probing: asyncio.Task[bool] | None = None
        self._registering: asyncio.Task[None] | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._heard: set[str] = set()
        self._logged: OrderedDict[tuple[str, str], None] = OrderedDict()

    @property
    def running(self) -> bool:
        return self._aiozc is not None

    @property
    def advertising(self) -> bool:
        return self._aiozc is not None and self._info is not None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses we advertise: the configured interfaces."""
        return self.config.interfaces

    async def async_start(self) -> None:
        """Opens mDNS on the configured interfaces, browses for peers and starts probing that our name
        is free (RFC 6762 §8.1, 0.75-1 s), so that `async_advertise` can announce at once: the daemon
        starts this before it imports most of itself (datamgr.launch)."""
        self._aiozc = AsyncZeroconf(interfaces=list(self.config.interfaces))
        zc = self._aiozc.zeroconf
        zc.async_add_listener(self, None)
        self._browser = AsyncServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_service_state_change])
        self._sweeper = asyncio.create_task(self._sweep(), name="discovery-sweep")
        self._probing = asyncio.create_task(self._async_probe(), name="discovery-probe")

    def async_advertise(self) -> None:
        """Advertises this device (in the background once probing is done): call it once the servers
        whose port it advertises listen."""
        if self._aiozc is not None and self._registering is None:
            self._registering = asyncio.create_task(self._async_register(), name="discovery-register")

    async def _async_probe(self) -> bool:
        """Probes that our name is free at RFC 6762 §8.1's pace, 0.75-1 s: a random 0-250 ms, then three
        probes 250 ms apart, and no conflicting answer by 250 ms after the third. (python-zeroconf's
        `async_check_service` asks the same question, as QU, but spaces its probes 500 ms: about 1.2 s.)"""
        assert self._aiozc is not None
        zc = self._aiozc.zeroconf
        await zc.async_wait_for_start()
        info = self._service_info()
        await asyncio.sleep(random.uniform(0, _PROBE_DELAY_S))  # spreads devices started at once
        for _ in range(_PROBES):
            zc.async_send(_probe(info))
            if await _conflict_within(zc, info, _PROBE_INTERVAL_S):
                log.error(
                    "another device advertises our device id %s: not advertising (are two daemons using "
                    "copies of one data directory?)",
                    self.local.device_id,
                )
                return False
        return True

    async def _async_register(self) -> None:
        assert self._aiozc is not None and self._probing is not None
        if not await self._probing:
            return
        advertised = (self.local, self.port)
        info = self._service_info()
        # probed already: register without probing again
        await self._aiozc.async_register_service(info, cooperating_responders=True)
        self._info = info
        if (self.local, self.port) != advertised:  # async_update() ran meanwhile
            self._info = self._service_info()
            await self._aiozc.async_update_service(self._info)
        log.info(
            "advertising %s (%s) on %s, peer port %d",
            self.local.device_id,
            self.local.name,
            ", ".join(self.config.interfaces),
            self.port,
        )

    async def async_update(
        self,
        *,
        port: int | None = None,
        capabilities: list[str] | None = None,
    ) -> None:
        """Changes what we advertise (the peer port once the peer server listens, the capabilities)."""
        local = self.local if capabilities is None else replace(self.local, capabilities=tuple(capabilities))
        encode_txt(local)
        self.local = local
        if port is not None:
            self.port = port
        if self._aiozc is not None and self._info is not None:
            self._info = self._service_info()
            await self._aiozc.async_update_service(self._info)

    async def async_close(self) -> None:
        """Says goodbye (peers see us OFFLINE at once), closes mDNS and ends every watch."""
        self.events.close()
        for task in (self._probing, self._registering, self._sweeper, *self._resolving.values()):
            if task is not None:
                task.cancel()
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        if self._browser is not None:
            await self._browser.async_cancel()
        aiozc.zeroconf.async_remove_listener(self)
        if self._info is not None:
            with contextlib.suppress(Exception):  # goodbyes are best effort; closing must go on
                await asyncio.wait_for(await aiozc.async_unregister_service(self._info), 2.0)
        await aiozc.async_close()

    def _service_info(self) -> ServiceInfo:
        txt, left_out = encode_txt(self.local)
        if left_out:
            log.warning("capabilities not advertised (too many or too long): %s", ", ".join(left_out))
        name = instance_name(self.local.device_id)
        ttl = max(1, round(self.config.offline_after_s))
        return ServiceInfo(
            SERVICE_TYPE,
            name,
            port=self.port,
            properties=txt,
            server=f"{self.local.device_id[:63]}.local.",
            parsed_addresses=list(self.config.interfaces),
            host_ttl=ttl,
            other_ttl=ttl,
        )

    # zeroconf callbacks, on the loop

    def _on_service_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if name.lower() == self._own_name:
            return
        if state_change is ServiceStateChange.Removed:
            self._publish(self.table.removed(name, self.clock()), "goodbye")
        else:
            self._resolve(name)

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if record.type not in (_TYPE_SRV, _TYPE_TXT) or record.ttl <= 1 or record.is_expired(now):
                continue  # a goodbye (TTL 0, kept 1 s) says nothing about being alive
            name = record.name.lower()
            if name.endswith("." + SERVICE_TYPE) and name != self._own_name:
                self._heard.add(name)

    def async_update_records_complete(self) -> None:
        heard, self._heard = self._heard, set()
        now = self.clock()
        for name in heard:
            if not self.table.heard(name, now):
                self._resolve(name)  # unknown, or back after being offline (its PTR may still be cached)

    # resolving and sweeping

    def _resolve(self, name: str) -> None:
        key = name.lower()
        if key in self._resolving or len(self._resolving) >= _MAX_RESOLVING or self._aiozc is None:
            return
        task = asyncio.create_task(self._async_resolve(name), name=f"discovery-resolve {name[:40]}")
        self._resolving[key] = task
        task.add_done_callback(lambda _: self._resolving.pop(key, None))

    async def _async_resolve(self, name: str) -> None:
        assert self._aiozc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._aiozc.zeroconf, _RESOLVE_TIMEOUT_MS):
            log.debug("%s did not answer", name)
            return
        try:
            advert, notes = decode_txt(info.properties)
        except BadAdvert as exc:
            self._note(name, f"ignored: {exc}")
            return
        if instance_name(advert.device_id).lower() != name.lower():
            self._note(name, f"ignored: its id {advert.device_id} does not match its service name")
            return
        for note in notes:
            self._note(name, note)
        addresses = tuple(_valid_addresses(info.parsed_addresses(IPVersion.All)))
        port = info.port or 0
        self._publish(self.table.seen(name, advert, addresses, port, self.clock()), "resolved")

    async def _sweep(self) -> None:
        tick = min(1.0, self.config.offline_after_s / 20)
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            self._publish(self.table.expire(now), f"not heard of for {self.config.offline_after_s:.0f} s")
            due = self.table.due_queries(now)
            if due and self._aiozc is not None:
                out = DNSOutgoing(_FLAGS_QUERY)
                for name in due:
                    out.add_question(DNSQuestion(name, _TYPE_SRV, _CLASS_IN))
                    out.add_question(DNSQuestion(name, _TYPE_TXT, _CLASS_IN))
                self._aiozc.zeroconf.async_send(out)

    def _publish(self, events: list[DeviceEvent], why: str) -> None:
        for event in events:
            peer = event.peer
            if event.kind is EventKind.OFFLINE:
                log.info("device %s (%s) offline: %s", peer.device_id, peer.advert.name, why)
            else:
                where = ", ".join(peer.addresses) or "no address"
                log.info(
                    "device %s (%s) %s at %s port %d",
                    peer.device_id,
                    peer.advert.name,
                    event.kind.value,
                    where,
                    peer.port,
                )
        self.events.publish(events)

    def _note(self, name: str, note: str) -> None:
        key = (name.lower(), note)
        if key in self._logged:
            return
        self._logged[key] = None
        if len(self._logged) > _NOTES_REMEMBERED:
            self._logged.popitem(last=False)
        log.warning("mDNS advert %r: %s", name[:80], note)


def _probe(info: ServiceInfo) -> DNSOutgoing:
    """A probe for our name: the PTR question of our service type with our PTR record as the proposed
    answer. A QM question, not QU (python-zeroconf's `generate_service_query`): a defender answers a QU
    probe by unicast to port 5353 if it multicast its record lately (a quarter of its TTL), and with
    several responders on one host (daemons on loopback) the kernel delivers that unicast to one of
    their sockets only, seldom the prober's (RFC 6762 §15.1). A QM probe is answered by multicast at
    once, which every responder receives."""
    out = DNSOutgoing(_FLAGS_QUERY)
    out.add_question(DNSQuestion(info.type, _TYPE_PTR, _CLASS_IN))
    out.add_authorative_answer(info.dns_pointer())
    return out


async def _conflict_within(zc: Zeroconf, info: ServiceInfo, seconds: float) -> bool:
    """Whether, within `seconds`, another responder answers for our name (its PTR record reaches the
    cache: an answer to our probe, or to anyone's question). Any cache update wakes the wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not zc.cache.current_entry_with_name_and_alias(info.type, info.name):
        left = deadline - loop.time()
        if left <= 0:
            return False
        await zc.async_wait(left * 1000)
    return True


def _valid_addresses(addresses: list[str]) -> list[str]:
    valid: list[str] = []
    for text in addresses:
        try:
            ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if text not in valid:
            valid.append(text)
    return valid[:MAX_ADDRESSES]

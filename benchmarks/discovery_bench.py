"""Discovery: the time from a daemon starting to a peer daemon listing it, side by side with plain
python-zeroconf registering a service to a browser in one process (the floor mDNS sets: probing).

Run: .venv/bin/python benchmarks/discovery_bench.py [--runs 5] [--ai]

- ours: daemon A (tests/integration/harness.Daemon, AI off unless --ai, discovery on 127.0.0.1) watches
  its devices (WatchDevices); then daemon B is spawned with a fresh data directory (a new device id) and
  timed from the spawn to B's ONLINE event at A, and from B answering its health check to that event. B
  stops (SIGTERM) between runs and A sees it go offline first. B starts probing its name before it
  imports most of itself (datamgr.launch) and announces once its servers listen.
- floor: AsyncZeroconf registering a service on 127.0.0.1 (probing included, RFC 6762 §8) to the Added
  callback of an AsyncServiceBrowser in another AsyncZeroconf, in this process; python-zeroconf spaces
  its three probes 500 ms (about 1.2 s in all).
- ours in process: the same with the daemon's `Discovery` on both sides (probing at RFC 6762 §8.1's
  pace, 0.75-1 s, then resolving the announced records): the mDNS part of a daemon's start alone.
- imports: a fresh interpreter importing what a start needs before it probes (datamgr.cli,
  datamgr.launch), and the whole daemon (datamgr.cli, datamgr.daemon; the rest imports while it probes).

Medians of --runs. The target: a started daemon is listed by its peers within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from _machine import machine  # noqa: E402
from harness import Daemon  # noqa: E402
from zeroconf import ServiceInfo, ServiceStateChange, Zeroconf  # noqa: E402
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf  # noqa: E402

from datamgr.client import DeviceClient  # noqa: E402
from datamgr.device.advert import Advert  # noqa: E402
from datamgr.device.discovery import Discovery, DiscoveryConfig  # noqa: E402
from datamgr.device.peer_table import DeviceEvent, EventKind  # noqa: E402

ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__INTERFACES": '["127.0.0.1"]'}
LOOPBACK = ("127.0.0.1",)
ONLINE, OFFLINE = 1, 2


def watch_events(observer: Daemon, events: queue.Queue[tuple[float, int, str]]) -> DeviceClient:
    """Puts (arrival time, event type, device id) of every event at `observer` on `events`."""
    client = DeviceClient(observer.address, token_path=observer.data_dir / "admin.token")
    stream = client.watch()
    next(stream)  # the snapshot: watching from here on

    def run() -> None:
        for message in stream:
            if message.HasField("event"):
                events.put((time.monotonic(), message.event.type, message.event.device.device_id))

    threading.Thread(target=run, daemon=True).start()
    return client


def arrival(events: queue.Queue[tuple[float, int, str]], kind: int, device_id: str) -> float:
    """When the event `kind` about `device_id` arrived (others', e.g. other daemons on loopback, skipped)."""
    deadline = time.monotonic() + 30
    while True:
        arrived, got, device = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if (got, device) == (kind, device_id):
            return arrived


def device_id_of(d: Daemon) -> str:
    with DeviceClient(d.address, token_path=d.data_dir / "admin.token") as c:
        return c.local_device().device_id


def ours(runs: int, tmp: Path, ai: bool) -> tuple[list[float], list[float]]:
    observer = Daemon(tmp / "observer", env=ENV).start()
    events: queue.Queue[tuple[float, int, str]] = queue.Queue()
    client = watch_events(observer, events)
    from_spawn, from_ready = [], []
    env = {**ENV, "DATAMGR_AI__ENABLED": str(ai).lower()}
    try:
        for run in range(runs):
            peer = Daemon(tmp / f"peer-{run}", env=env)
            spawned = time.monotonic()
            peer.start(wait=False)
            peer.wait_healthy()
            ready = time.monotonic()
            device_id = device_id_of(peer)
            arrived = arrival(events, ONLINE, device_id)
            from_spawn.append(arrived - spawned)
            from_ready.append(arrived - ready)
            peer.stop()
            arrival(events, OFFLINE, device_id)
    finally:
        client.close()
        observer.stop()
    return from_spawn, from_ready


def _on_added(
    zeroconf: Zeroconf,
    service_type: str,
    name: str,
    state_change: ServiceStateChange,
    want: str,
    added: asyncio.Event,
) -> None:
    if state_change is ServiceStateChange.Added and name == want:
        added.set()


async def floor(runs: int) -> list[float]:
    times = []
    browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"])
    for run in range(runs):
        name = f"bench-{os.getpid()}-{run}._bench._tcp.local."
        added = asyncio.Event()
        handler = functools.partial(_on_added, want=name, added=added)
        browser = AsyncServiceBrowser(browser_zc.zeroconf, "_bench._tcp.local.", handlers=[handler])
        registrar = AsyncZeroconf(interfaces=["127.0.0.1"])
        info = ServiceInfo("_bench._tcp.local.", name, port=1, parsed_addresses=["127.0.0.1"])
        started = time.monotonic()
        await registrar.async_register_service(info)
        await asyncio.wait_for(added.wait(), 30)
        times.append(time.monotonic() - started)
        await browser.async_cancel()
        await registrar.async_close()
    await browser_zc.async_close()
    return times


async def _event(events: AsyncIterator[DeviceEvent], kind: EventKind, device_id: str) -> None:
    async for event in events:
        if (event.kind, event.peer.device_id) == (kind, device_id):
            return


async def ours_in_process(runs: int) -> list[float]:
    """Discovery.async_start + async_advertise of a new device to its ONLINE event at another Discovery."""
    times = []
    observer = Discovery(DiscoveryConfig(LOOPBACK, 30.0), Advert("bench-observer", "observer", 3))
    await observer.async_start()
    events = aiter(observer.events.watch())
    try:
        for run in range(runs):
            device_id = f"bench-{os.getpid()}-{run}"
            peer = Discovery(DiscoveryConfig(LOOPBACK, 30.0), Advert(device_id, "peer", 3), port=1)
            started = time.monotonic()
            await peer.async_start()
            peer.async_advertise()
            await asyncio.wait_for(_event(events, EventKind.ONLINE, device_id), 30)
            times.append(time.monotonic() - started)
            await peer.async_close()
            await asyncio.wait_for(_event(events, EventKind.OFFLINE, device_id), 30)
    finally:
        await observer.async_close()
    return times


def import_time(runs: int, modules: str) -> list[float]:
    """Seconds a fresh interpreter takes to import `modules`."""
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    return [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ai", action="store_true", help="Daemon B serves AI (loads the built-in model).")
    args = ap.parse_args()
    print(f"machine: {machine()}, python {platform.python_version()}")
    base = asyncio.run(floor(args.runs))
    mdns = asyncio.run(ours_in_process(args.runs))
    with tempfile.TemporaryDirectory(prefix="discovery-bench-") as tmp:
        from_spawn, from_ready = ours(args.runs, Path(tmp), args.ai)
    early = statistics.median(import_time(args.runs, "datamgr.cli, datamgr.launch"))
    imports = statistics.median(import_time(args.runs, "datamgr.cli, datamgr.daemon"))
    med_base, med_mdns, med_spawn, med_ready = (
        statistics.median(x) for x in (base, mdns, from_spawn, from_ready)
    )
    ai = "on" if args.ai else "off"
    print(f"floor: zeroconf register -> browser Added, in process   median {med_base:.3f} s")
    print(f"ours:  Discovery advertise -> peer ONLINE, in process   median {med_mdns:.3f} s")
    print(f"ours:  daemon healthy -> listed by the peer daemon      median {med_ready:.3f} s (AI {ai})")
    print(f"ours:  daemon spawned -> listed by the peer daemon      median {med_spawn:.3f} s (target <= 2 s)")
    print(f"imports: what a start needs before it probes            median {early:.3f} s")
    print(f"imports: the whole daemon (the rest while it probes)    median {imports:.3f} s")
    print(f"ratio: ours (from spawn) / floor                        {med_spawn / med_base:.2f}")
    print("runs (spawn -> listed):", ", ".join(f"{t:.3f}" for t in from_spawn))


if __name__ == "__main__":
    main()

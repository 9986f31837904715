"""Discovery: the time from a daemon starting to a peer daemon listing it, side by side with plain
python-zeroconf registering a service to a browser in one process (the floor mDNS sets: probing).

Run: .venv/bin/python benchmarks/discovery_bench.py [--runs 5]

- ours: daemon A (tests/integration/harness.Daemon, AI off, discovery on 127.0.0.1) watches its devices
  (WatchDevices); then daemon B is spawned with a fresh data directory (a new device id) and timed from
  the spawn to B's ONLINE event at A, and from B answering its health check to that event. B stops
  (SIGTERM) between runs and A sees it go offline first.
- floor: AsyncZeroconf registering a service on 127.0.0.1 (probing included, RFC 6762 §8) to the Added
  callback of an AsyncServiceBrowser in another AsyncZeroconf, in this process.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from _machine import machine  # noqa: E402
from harness import Daemon  # noqa: E402
from zeroconf import ServiceInfo, ServiceStateChange, Zeroconf  # noqa: E402
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf  # noqa: E402

from datamgr.client import DeviceClient  # noqa: E402

ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__INTERFACES": '["127.0.0.1"]'}
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


def ours(runs: int, tmp: Path) -> tuple[list[float], list[float]]:
    observer = Daemon(tmp / "observer", env=ENV).start()
    events: queue.Queue[tuple[float, int, str]] = queue.Queue()
    client = watch_events(observer, events)
    from_spawn, from_ready = [], []
    try:
        for run in range(runs):
            peer = Daemon(tmp / f"peer-{run}", env=ENV)
            spawned = time.monotonic()
            peer.start(wait=False)
            peer.wait_healthy()
            ready = time.monotonic()
            arrived, kind, _ = events.get(timeout=30)
            assert kind == ONLINE, kind
            from_spawn.append(arrived - spawned)
            from_ready.append(arrived - ready)
            peer.stop()
            assert events.get(timeout=30)[1] == OFFLINE
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


def import_time(runs: int) -> list[float]:
    """Seconds a fresh interpreter takes to import the daemon: the part of a start before any mDNS."""
    code = (
        "import time; t = time.perf_counter(); import datamgr.cli, datamgr.daemon; "
        "print(time.perf_counter() - t)"
    )
    return [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {machine()}, python {platform.python_version()}")
    base = asyncio.run(floor(args.runs))
    with tempfile.TemporaryDirectory(prefix="discovery-bench-") as tmp:
        from_spawn, from_ready = ours(args.runs, Path(tmp))
    imports = statistics.median(import_time(args.runs))
    med_base, med_spawn, med_ready = (statistics.median(x) for x in (base, from_spawn, from_ready))
    print(f"floor: zeroconf register -> browser Added, in process   median {med_base:.3f} s")
    print(f"ours:  daemon healthy -> listed by the peer daemon      median {med_ready:.3f} s")
    print(f"ours:  daemon spawned -> listed by the peer daemon      median {med_spawn:.3f} s (target <= 2 s)")
    print(f"of which: importing the daemon's Python modules         median {imports:.3f} s")
    print(f"ratio: ours (from healthy) / floor                      {med_ready / med_base:.2f}")
    print("runs (spawn -> listed):", ", ".join(f"{t:.3f}" for t in from_spawn))


if __name__ == "__main__":
    main()

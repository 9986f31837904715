"""The daemon's start: what runs before the composition root (`datamgr.daemon`) is even imported.

`serve(settings)` takes the data directory's lock, loads the device identity and starts discovery, whose
probing that our mDNS name is free (RFC 6762 §8.1, up to a second) then runs while the rest of the
daemon imports in a thread (grpc, SQLAlchemy, every service, the AI engine if enabled: most of a second)
and its servers start. The advert is announced once they listen, so it never names a port that does not
serve yet. This module imports only what that takes: settings, identity (cryptography) and discovery
(zeroconf).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
from pathlib import Path
from typing import IO

from datamgr.config import Settings
from datamgr.device.advert import Advert
from datamgr.device.discovery import Discovery, DiscoveryConfig
from datamgr.device.identity import load_identity
from datamgr.errors import DaemonLocked

log = logging.getLogger("datamgr.daemon")


class DirectoryLock:
    """An exclusive lock on the data directory, so that two daemons never share one database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        f = open(self.path, "a+")  # noqa: SIM115 - held for the daemon's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            f.close()
            raise DaemonLocked(
                f"another datamgr daemon (pid {pid}) is already using {self.path.parent}; "
                "stop it first or choose another data directory (DATAMGR_DATA_DIR)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", force=True)


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Runs the daemon until `stop` is set or SIGTERM/SIGINT arrives."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = DirectoryLock(settings.lock_path)
    lock.acquire()
    try:
        identity = load_identity(settings.data_dir)  # made at first start, before any server listens
        discovery = _discovery(settings, identity.device_id, identity.fingerprint)
        try:
            if settings.discovery.enabled:
                await _start_discovery(discovery)  # browsing, and probing that our name is free
            await asyncio.to_thread(_import_daemon, settings.ai.enabled)  # the loop probes meanwhile
            from datamgr.daemon import run

            await run(settings, stop or asyncio.Event(), identity, discovery)
        finally:
            await discovery.async_close()  # at once if the daemon did not get as far as serving
    finally:
        lock.release()


def _import_daemon(ai: bool) -> None:
    """Imports the daemon (and the AI service it will start): off the event loop, which runs discovery's
    probes meanwhile. Nothing the daemon imports may need the main thread at import time (a signal
    handler, the main thread's event loop)."""
    importlib.import_module("datamgr.daemon")
    if ai:
        with contextlib.suppress(ImportError):  # llama-cpp-python is optional: the daemon says so
            importlib.import_module("aicap.service")


def _discovery(settings: Settings, device_id: str, fingerprint: str) -> Discovery:
    """Discovery for this device, which advertises its id and certificate fingerprint."""
    d = settings.discovery
    local = Advert(device_id, d.device_name, d.security_level, fingerprint)
    return Discovery(DiscoveryConfig(tuple(d.interfaces), d.offline_after_s, d.max_peers), local)


async def _start_discovery(discovery: Discovery) -> None:
    """Starts browsing and probing; a failure (no usable interface) leaves the daemon serving."""
    try:
        await discovery.async_start()
    except OSError as exc:
        log.error("device discovery disabled: %s (check discovery.interfaces)", exc)
        await discovery.async_close()

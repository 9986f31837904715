"""A daemon's start (datamgr.launch probes while the rest of the daemon imports): the first advert a peer
sees already names the port that serves, and a device id another daemon holds (a copied data directory)
is never advertised a second time."""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon

from datamgr.client import DeviceClient

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

ONLINE = 1
ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__INTERFACES": json.dumps(["127.0.0.1"])}


def client(d: Daemon) -> DeviceClient:
    return DeviceClient(d.address, token_path=d.data_dir / "admin.token")


class Events:
    """Every WatchDevices event at a daemon, in a thread, as (type, device message)."""

    def __init__(self, d: Daemon) -> None:
        self._client = client(d)
        stream = self._client.watch(timeout=110)
        next(stream)  # the snapshot
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue()

        def run() -> None:
            for message in stream:
                if message.HasField("event"):
                    self._queue.put((message.event.type, message.event.device))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def about(self, device_id: str, timeout: float) -> tuple[int, Any] | None:
        """The next event about `device_id` within `timeout` (others' skipped), or None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, device = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if device.device_id == device_id:
                return kind, device
        return None

    def close(self) -> None:
        self._client.close()
        self._thread.join(5)


@pytest.fixture
def observer(tmp_path: Path) -> Iterator[tuple[Daemon, Events]]:
    d = Daemon(tmp_path / "observer", env=ENV).start()
    events = Events(d)
    try:
        yield d, events
    finally:
        events.close()
        d.stop()


def test_the_first_advert_names_the_port_that_serves(tmp_path: Path, observer: tuple[Daemon, Events]) -> None:
    _, events = observer
    b = Daemon(tmp_path / "b", env=ENV).start()
    try:
        with client(b) as c:
            b_id = c.local_device().device_id
        first = events.about(b_id, 10)
        assert first is not None
        kind, device = first
        assert (kind, device.port, list(device.capabilities)) == (
            ONLINE,
            b.endpoint()["peer_port"],
            ["datashare", "udmf"],
        )
        assert events.about(b_id, 1.0) is None  # complete at once: no UPDATED with the port after it
    finally:
        b.stop()


def test_a_copied_data_directory_is_not_advertised_twice(
    tmp_path: Path, observer: tuple[Daemon, Events]
) -> None:
    _, events = observer
    b = Daemon(tmp_path / "b", env=ENV).start()
    copy = Daemon(tmp_path / "copy", env=ENV)
    try:
        with client(b) as c:
            b_id = c.local_device().device_id
        first = events.about(b_id, 10)
        assert first is not None and first[0] == ONLINE
        (tmp_path / "copy").mkdir(mode=0o700)
        shutil.copytree(tmp_path / "b" / "device", tmp_path / "copy" / "device")  # the same identity
        copy.start()
        deadline = time.monotonic() + 10
        while "another device advertises our device id" not in copy.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "another device advertises our device id" in copy.log()
        with client(copy) as c:
            local = c.local_device()
        assert (local.device_id, local.online) == (b_id, False)  # serving, not advertising
        assert events.about(b_id, 1.5) is None  # the observer still sees b alone, as it was
    finally:
        copy.stop()
        b.stop()

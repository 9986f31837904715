"""Disk as a tenant resource (issue 10, point 1): one app cannot fill the daemon's disk for the others.

The daemon's data directory is a small tmpfs the test mounts itself (tests run as root; without the
right to mount they are skipped). One app floods DATA_HUB until it is refused with RESOURCE_EXHAUSTED;
then the other apps' writes are refused the same way (never INTERNAL), while deletes, admin calls and a
restart still work, even once the filesystem is filled to the last byte. Per-app quotas are checked
on an ordinary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon, contacts_manifest

from datamgr.client import DataSharePredicates, KvStoreClient
from datamgr.client.kv import SecurityLevel
from udmf import UdmfClient, UnifiedData, UnifiedRecord

MIB = 1024 * 1024
APP = "com.example.filler"
OTHER = "com.example.contacts"
PEOPLE = f"datashare:///{OTHER}/main/people"
BASE_ENV = {"DATAMGR_AI__ENABLED": "false", "DATAMGR_DISCOVERY__ENABLED": "false"}


@contextlib.contextmanager
def tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def code_of(fn: Callable[[], Any]) -> str:
    """The status code name a call ends with ("OK" if it succeeds)."""
    try:
        fn()
    except Exception as exc:
        code = getattr(exc, "code", None)
        assert isinstance(code, str), f"{type(exc).__name__}: {exc}"
        return code
    return "OK"


def blob(size: int, seed: int = 0) -> UnifiedData:
    return UnifiedData(UnifiedRecord("general.png", bytes([seed % 251]) * size))


def flood(udmf: UdmfClient, limit: int = 400) -> tuple[list[str], Exception]:
    """DATA_HUB data of 1 MiB each until the daemon refuses; the keys stored and the refusal."""
    keys: list[str] = []
    for i in range(limit):
        try:
            keys.append(udmf.insert_data(blob(MIB, i)))
        except Exception as exc:
            return keys, exc
    raise AssertionError(f"{limit} MiB of DATA_HUB data were all accepted")


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    run = [sys.executable, "-m", "datamgr", *args]
    return subprocess.run(run, env=daemon.env(), capture_output=True, text=True, timeout=60, check=False)


def clean_log(daemon: Daemon) -> None:
    log = daemon.log()
    assert "Traceback" not in log, log[-4000:]
    assert "bug in" not in log and "internal error" not in log, log[-4000:]


class Apps:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.filler = daemon.add_app(APP)
        self.other = daemon.add_app(OTHER)
        with daemon.helper(self.other) as h:
            h.register_provider(contacts_manifest())
        with KvStoreClient.connect(daemon.address, self.other) as kv:
            kv.get_kv_store("notes", security_level=SecurityLevel.S1)  # created while there is room

    def udmf(self, token: str) -> UdmfClient:
        return UdmfClient.connect(self.daemon.address, token)

    def other_writes(self, size: int) -> dict[str, str]:
        """The status of each kind of write the other app makes, of about `size` bytes."""
        d = self.daemon
        with KvStoreClient.connect(d.address, self.other) as kv:
            store = kv.get_kv_store("notes", security_level=SecurityLevel.S1)
            kv_code = code_of(lambda: store.put("k", b"v" * size))
        with self.udmf(self.other) as u:
            udmf_code = code_of(lambda: u.insert_data(blob(size)))
        rows = [{"name": f"p{i}", "photo": b"p" * (size // 4)} for i in range(4)]
        with d.helper(self.other) as h:
            ds_code = code_of(lambda: h.batch_insert(PEOPLE, rows))
        return {"kv": kv_code, "udmf": udmf_code, "datashare": ds_code}


def fill_to_the_brim(path: Path) -> Path:
    """A ballast file taking every byte left on the filesystem."""
    ballast = path / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (MIB, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    st = os.statvfs(path)
    assert st.f_bavail * st.f_frsize == 0
    return ballast


def test_a_flood_meets_the_free_space_floor_and_the_daemon_keeps_working(tmp_path: Path) -> None:
    env = {
        **BASE_ENV,
        "DATAMGR_STORAGE__MIN_FREE_BYTES": str(12 * MIB),
        "DATAMGR_STORAGE__APP_QUOTA_BYTES": str(1 << 40),
    }
    with tmpfs(tmp_path / "data", 64) as data:
        d = Daemon(data, env=env).start()
        try:
            apps = Apps(d)
            assert apps.other_writes(1024) == {"kv": "OK", "udmf": "OK", "datashare": "OK"}
            with apps.udmf(apps.filler) as filler:
                keys, refusal = flood(filler)
                assert getattr(refusal, "code", None) == "RESOURCE_EXHAUSTED", refusal
                assert "storage.min_free_bytes" in str(refusal)
                assert len(keys) >= 10  # the floor, not something else, stopped it

                # another app: every write that would cross the floor is refused, none is a bug
                assert apps.other_writes(2 * MIB) == {
                    "kv": "RESOURCE_EXHAUSTED",
                    "udmf": "RESOURCE_EXHAUSTED",
                    "datashare": "RESOURCE_EXHAUSTED",
                }
                assert set(apps.other_writes(100).values()) <= {"OK", "RESOURCE_EXHAUSTED"}

                # the device owner still administers; the filler deletes; usage is shown
                with d.admin() as admin:
                    admin.add_app("com.example.late")
                    usage = {a.bundle: a.usage for a in admin.list_apps()}
                assert usage[APP].udmf_bytes >= len(keys) * MIB
                assert usage[APP].quota_bytes == 1 << 40
                for key in keys[:8]:
                    assert len(filler.delete_data(key)) == 1
            time.sleep(0.5)  # the floor looks at the disk again (every 0.25 s)
            assert apps.other_writes(2 * MIB) == {"kv": "OK", "udmf": "OK", "datashare": "OK"}

            # a restart on the nearly full disk
            assert d.stop() == 0
            d.start()
            with apps.udmf(apps.filler) as filler:
                assert filler.delete_data(keys[8])
            clean_log(d)
        finally:
            d.stop()


def test_a_disk_full_to_the_last_byte_gives_resource_exhausted_never_internal(tmp_path: Path) -> None:
    env = {
        **BASE_ENV,
        "DATAMGR_STORAGE__MIN_FREE_BYTES": "0",  # no floor: the filesystem itself runs out
        "DATAMGR_UDMF__SWEEP_INTERVAL_S": "0.5",
        "DATAMGR_UDMF__ENTRY_TTL_S": "3600",
    }
    with tmpfs(tmp_path / "data", 48) as data:
        d = Daemon(data, env=env).start()
        try:
            apps = Apps(d)
            with apps.udmf(apps.filler) as filler:
                keys, refusal = flood(filler)
                assert getattr(refusal, "code", None) == "RESOURCE_EXHAUSTED", refusal
                ballast = fill_to_the_brim(data)
                time.sleep(0.5)
                codes = apps.other_writes(64 * 1024)
                assert set(codes.values()) == {"RESOURCE_EXHAUSTED"}, codes
                with d.admin() as admin:
                    for i in range(20):  # until SQLite needs a page the disk does not have
                        assert code_of(lambda i=i: admin.add_app(f"com.example.a{i}")) in (
                            "OK",
                            "RESOURCE_EXHAUSTED",
                        )
                assert code_of(lambda: filler.delete_data(keys[0])) in ("OK", "RESOURCE_EXHAUSTED")
                time.sleep(1.5)  # the expiry sweeper runs on the full disk (and survives)
            assert d.stop() == 0
            d.start()  # a restart on a disk with no byte left
            ballast.unlink()
            time.sleep(0.5)
            assert apps.other_writes(1024) == {"kv": "OK", "udmf": "OK", "datashare": "OK"}
            clean_log(d)
        finally:
            d.stop()


def test_one_app_over_its_quota_is_refused_and_the_others_are_not(tmp_path: Path) -> None:
    env = {**BASE_ENV, "DATAMGR_STORAGE__APP_QUOTA_BYTES": str(4 * MIB)}
    d = Daemon(tmp_path / "data", env=env).start()
    try:
        apps = Apps(d)
        with apps.udmf(apps.filler) as filler:
            keys, refusal = flood(filler)
            assert getattr(refusal, "code", None) == "RESOURCE_EXHAUSTED"
            assert "storage.app_quota_bytes" in str(refusal) and APP in str(refusal)
            assert len(keys) == 3  # 3 MiB and their rows fit in 4 MiB, a fourth does not
            # the same quota covers the app's KV values and the rows of the tables it provides
            with KvStoreClient.connect(d.address, apps.filler) as kv:
                store = kv.get_kv_store("notes", security_level=SecurityLevel.S1)
                with pytest.raises(Exception) as exc:
                    store.put("big", b"x" * 2 * MIB)
                assert getattr(exc.value, "code", None) == "RESOURCE_EXHAUSTED"
                assert "storage.app_quota_bytes" in str(exc.value)
                store.put("small", b"x" * 1000)  # under the quota still
                store.delete("small")
            filler.delete_data(keys[0])  # a delete makes room again
            filler.insert_data(blob(MIB))
        # the other app is not touched by the filler's quota
        assert apps.other_writes(MIB) == {"kv": "OK", "udmf": "OK", "datashare": "OK"}
        # DataShare: the provider's rows count; an update that grows is refused, one that shrinks passes
        with d.helper(apps.other) as h:
            with pytest.raises(Exception) as exc:
                h.batch_insert(PEOPLE, [{"name": f"q{i}", "photo": b"q" * 800_000} for i in range(3)])
            assert getattr(exc.value, "code", None) == "RESOURCE_EXHAUSTED"

            everyone = DataSharePredicates()
            with pytest.raises(Exception) as exc:
                h.update(PEOPLE, everyone, {"photo": b"z" * 800_000})
            assert getattr(exc.value, "code", None) == "RESOURCE_EXHAUSTED"
            assert h.update(PEOPLE, everyone, {"photo": b"small"}) > 0
        with d.admin() as admin:
            usage = {a.bundle: a.usage for a in admin.list_apps()}
        assert 3 * MIB < usage[APP].total_bytes <= 4 * MIB
        assert usage[OTHER].datashare_bytes > 0 and usage[OTHER].kv_bytes > 0
        # `datamgr apps list` shows it too
        listed = cli(d, "apps", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        shown = {a["bundle"]: a["usage"] for a in json.loads(listed.stdout)}
        assert shown[APP]["total_bytes"] == usage[APP].total_bytes
        assert shown[APP]["quota_bytes"] == 4 * MIB
        table = cli(d, "apps", "list")
        assert table.returncode == 0 and "/ 4.0 MiB" in table.stdout and "udmf 3.0 MiB" in table.stdout
        # counts survive a kill -9: they are measured again from the database
        before = usage[APP].total_bytes
        d.kill9()
        d.start()
        with d.admin() as admin:
            again = {a.bundle: a.usage for a in admin.list_apps()}
        assert again[APP].total_bytes == before
        clean_log(d)
    finally:
        d.stop()

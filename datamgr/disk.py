"""The disk under the daemon's data: a free-space floor writes may not cross, and "disk full" errors.

`DiskFloor` keeps `storage.min_free_bytes` free on the data directory's filesystem, so that deletes
(SQLite needs space to delete), admin calls and a restart still work when apps have filled the rest.
It asks the filesystem (statvfs) at most every `interval_s` and counts the bytes it let through since,
so a flood cannot overshoot between two looks. `disk_full` recognises running out of space anywhere
(SQLite's "database or disk is full", PostgreSQL's DiskFull, ENOSPC) so it becomes RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from datamgr.errors import ResourceExhausted

MIB = 1024 * 1024
FLOOR_SETTING = "storage.min_free_bytes"
FULL_MESSAGE = (
    "the disk holding the daemon's data is full: nothing was stored ("
    + FLOOR_SETTING
    + " keeps room for deletes; free space on the device)"
)


def mib(n: int) -> str:
    """`n` bytes for a message: 12.3 MiB."""
    return f"{n / MIB:.1f} MiB"


class DiskFloor:
    """Whether a write of `grow` bytes keeps at least `min_free` bytes free on `path`'s filesystem.
    Safe to call from any thread (the writer thread and the event loop both ask)."""

    def __init__(
        self,
        path: Path,
        min_free: int,
        interval_s: float = 0.25,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.min_free = min_free
        self._interval = interval_s
        self._statvfs = statvfs
        self._clock = clock
        self._lock = threading.Lock()
        self._free = 0
        self._since = 0  # bytes let through since `_free` was measured
        self._at: float | None = None

    def free(self) -> int:
        """Bytes an unprivileged writer may still use, as of the last look minus what went through since."""
        with self._lock:
            return self._free_locked()

    def _free_locked(self) -> int:
        now = self._clock()
        if self._at is None or now - self._at >= self._interval:
            st = self._statvfs(self.path)
            self._free, self._since, self._at = st.f_bavail * st.f_frsize, 0, now
        return self._free - self._since

    def refusal(self, grow: int) -> str | None:
        """Why a write adding `grow` bytes may not run (None: it may, and its bytes count as used
        until the next look). A write that does not grow is never refused."""
        if grow <= 0:
            return None
        with self._lock:
            free = self._free_locked()
            if free - grow < self.min_free:
                return (
                    f"the disk holding the daemon's data has {mib(max(free, 0))} free and this write "
                    f"needs {mib(grow)}; writes stop at {FLOOR_SETTING} ({mib(self.min_free)}) so that "
                    "deletes still work"
                )
            self._since += grow
        return None

    def forget(self) -> None:
        """Look at the filesystem again on the next call (e.g. after a delete freed files)."""
        with self._lock:
            self._at = None


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the disk or the database is out of space."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "database or disk is full" in text or type(e).__name__ == "DiskFull":
            return True
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return False


def as_resource_exhausted(exc: BaseException) -> BaseException:
    """`exc`, or ResourceExhausted when it is the disk running out of space."""
    if isinstance(exc, Exception) and not isinstance(exc, ResourceExhausted) and disk_full(exc):
        return ResourceExhausted(FULL_MESSAGE)
    return exc

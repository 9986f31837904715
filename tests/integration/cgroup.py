"""A weak device and a strong one on this machine, for tests and benchmarks that pair a slow daemon with
a fast one: cgroup v1 cpu groups, one limited by `cpu.cfs_quota_us` to a share of one core, either
weighted by `cpu.shares` against the other processes here (a busy machine then slows neither).
`cpu_cgroup()` makes a group (and removes it, with every process moved out), `start_in()` starts a
daemon inside one: this process joins the group for the fork, then goes back, so only the daemon (and
what it forks) stays in it."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

from harness import Daemon

CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
_made = itertools.count()


def group_of(pid: int | str = "self") -> Path:
    """The cpu group a process is in (this one's: where it goes back to, and where groups are made)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return CPU_CGROUP / path.lstrip("/")
    return CPU_CGROUP


def unavailable() -> str | None:
    """Why a cpu cgroup cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "cpu cgroups need root"
    if not (CPU_CGROUP / "cgroup.procs").exists() or not (CPU_CGROUP / "cpu.cfs_quota_us").exists():
        return f"no cgroup v1 cpu hierarchy at {CPU_CGROUP}"
    probe = group_of() / f"datamgr-probe-{os.getpid()}-{next(_made)}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return f"cannot make a cpu cgroup: {exc}"
    return None


@contextlib.contextmanager
def cpu_cgroup(quota: float | None = None, shares: int | None = None) -> Iterator[Path]:
    """A cpu cgroup limited to `quota` of one core (None: not limited) and weighted `shares` against
    the processes beside it (None: 1024, as each of them); on leaving, every process still in it is
    moved back to this process's group and the group is removed (raises if it cannot be)."""
    home = group_of()
    group = home / f"datamgr-test-{os.getpid()}-{next(_made)}"
    group.mkdir()
    try:
        if quota is not None:
            period = int((group / "cpu.cfs_period_us").read_text())
            (group / "cpu.cfs_quota_us").write_text(str(int(period * quota)))
        if shares is not None:
            (group / "cpu.shares").write_text(str(shares))
        yield group
    finally:
        for _ in range(50):  # a process forking as it is moved can leave a child behind: again
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):  # it exited meanwhile
                    (home / "cgroup.procs").write_text(pid)
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        else:
            group.rmdir()


def start_in(group: Path | None, daemon: Daemon, timeout: float = 300.0) -> Daemon:
    """Starts `daemon` inside `group` (None: where this process is) and waits until its AI service is
    SERVING (its model loaded and, with ai.offload or ai.serve_peers, its speed measured)."""
    if group is not None:
        home = group_of()
        (group / "cgroup.procs").write_text(str(os.getpid()))
        try:
            daemon.start(wait=False)
        finally:
            (home / "cgroup.procs").write_text(str(os.getpid()))
    else:
        daemon.start(wait=False)
    daemon.wait_healthy(timeout, service="aicap.v1.AiService")
    return daemon

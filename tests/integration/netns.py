"""Two network namespaces joined by a veth pair, for tests and benchmarks that need two hosts and a
network that can be cut: `VethPair` creates them, `partition()` cuts the link, `heal()` restores it,
`close()` removes both namespaces (and with them the pair) and checks that nothing is left.

Two ways to cut, both seen working on a minimal kernel without netem or packet filters:

- "drop": a token bucket of one byte (`tc qdisc ... tbf burst 1`) on both ends' egress, so every
  packet is silently lost while both links stay up: a peer out of radio range, nothing tells either
  side.
- "down": one end's link set down: that side's routes go, so it gets "network unreachable" at once,
  and the other end has no carrier (its packets go nowhere).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

Cut = Literal["drop", "down"]
_made = itertools.count()


class NetnsUnavailable(RuntimeError):
    """This machine cannot make namespaces or veth pairs here (not root, no iproute2, ...)."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def _tc(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", netns, "tc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


@dataclass(frozen=True, slots=True)
class End:
    netns: str
    dev: str
    address: str


class VethPair:
    """Namespaces `a` and `b`, each holding one end of a veth pair with an address in a /24."""

    def __init__(self, prefix: str = "dmph") -> None:
        if reason := unavailable():
            raise NetnsUnavailable(reason)
        tag = f"{os.getpid() % 100_000}{next(_made)}"[-6:]
        subnet = f"10.232.{(os.getpid() + int(tag)) % 250}"
        self.a = End(f"{prefix}-{tag}-a", f"{prefix}{tag}a", f"{subnet}.1")
        self.b = End(f"{prefix}-{tag}-b", f"{prefix}{tag}b", f"{subnet}.2")
        self.cut: Cut | None = None
        self._made: list[str] = []
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        a, b = self.a, self.b
        for end in (a, b):
            proc = _ip("netns", "add", end.netns)
            if proc.returncode != 0:
                raise NetnsUnavailable(f"cannot create network namespaces: {proc.stderr.strip()}")
            self._made.append(end.netns)
        steps = [
            f"link add {a.dev} netns {a.netns} type veth peer {b.dev} netns {b.netns}",
            *(f"-n {e.netns} addr add {e.address}/24 dev {e.dev}" for e in (a, b)),
            *(f"-n {e.netns} link set {e.dev} up" for e in (a, b)),
            *(f"-n {e.netns} link set lo up" for e in (a, b)),
        ]
        for step in steps:
            proc = _ip(*step.split())
            if proc.returncode != 0:
                raise NetnsUnavailable(f"cannot set up the veth pair (ip {step}): {proc.stderr.strip()}")

    def partition(self, how: Cut = "drop") -> None:
        """Cuts the link between the namespaces (see the module docstring for `how`)."""
        assert self.cut is None, "already partitioned"
        if how == "drop":
            for end in (self.a, self.b):
                proc = _tc(end.netns, "qdisc", "add", "dev", end.dev, "root", "tbf",
                           "rate", "1kbit", "burst", "1", "latency", "1ms")  # fmt: skip
                if proc.returncode != 0:
                    raise NetnsUnavailable(f"cannot drop packets with tc tbf: {proc.stderr.strip()}")
        else:
            proc = _ip("-n", self.a.netns, "link", "set", self.a.dev, "down")
            if proc.returncode != 0:
                raise NetnsUnavailable(f"cannot set the link down: {proc.stderr.strip()}")
        self.cut = how

    def heal(self) -> None:
        """Restores the link cut by `partition`."""
        if self.cut == "drop":
            for end in (self.a, self.b):
                _tc(end.netns, "qdisc", "del", "dev", end.dev, "root")
        elif self.cut == "down":
            _ip("-n", self.a.netns, "link", "set", self.a.dev, "up")
        self.cut = None

    def close(self) -> None:
        """Removes both namespaces (the veth pair goes with them); raises if any is left."""
        for netns in self._made:
            _ip("netns", "del", netns)
        left = _ip("netns", "list").stdout
        made, self._made = self._made, []
        stuck = [n for n in made if n in left]
        if stuck:
            raise RuntimeError(f"network namespaces left behind: {', '.join(stuck)}")

    def __enter__(self) -> VethPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Retries of automatic syncs that failed on the network: what is still owed to each (store, peer)
and when to try again. Pure logic: the scheduler passes the time (`now`, monotonic seconds) in.

A partition cuts a peer off while discovery still lists it online (it goes offline only after
`discovery.offline_after_s`); the push of a write made meanwhile fails. Without a retry it would
wait for the next write to that store or for the peer's next ONLINE, which a short partition never
causes. So a sync that failed with UNAVAILABLE or DEADLINE_EXCEEDED is tried again after `first_s`,
doubling up to `max_s`, until one succeeds or `give_up_s` of failures have passed (then the next
write or ONLINE starts again). Other errors (options that differ, a peer that refuses) need a change
elsewhere and are not retried. A try while the peer channel is between connection attempts fails at
once, so trying often costs little, and the first try after the link is back goes through.
"""

from __future__ import annotations

from dataclasses import dataclass

from datamgr.kv.sync_api import SyncCode, SyncMode, SyncStatus

_TRANSIENT = ("UNAVAILABLE:", "DEADLINE_EXCEEDED:")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_s: float = 0.25
    max_s: float = 0.5
    give_up_s: float = 120.0


def transient(status: SyncStatus) -> bool:
    """A failure the network caused (the session's message starts with the error's code)."""
    return status.code in (SyncCode.ERROR, SyncCode.PARTIAL) and status.message.startswith(_TRANSIENT)


def _union(a: SyncMode, b: SyncMode) -> SyncMode:
    return a if a == b else SyncMode.PUSH_PULL


@dataclass(slots=True)
class _Owed:
    mode: SyncMode
    since: float  # the first failure of this run
    delay: float  # before the next try


class Retries:
    """Owed syncs by (store_id, peer)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._owed: dict[tuple[str, str], _Owed] = {}

    def failed(self, store_id: str, peer: str, mode: SyncMode, now: float) -> float | None:
        """A `mode` sync failed on the network: seconds until the next try, or None (given up)."""
        key = (store_id, peer)
        owed = self._owed.get(key)
        if owed is None:
            self._owed[key] = _Owed(mode, now, self.policy.first_s)
            return self.policy.first_s
        if now - owed.since >= self.policy.give_up_s:
            del self._owed[key]
            return None
        owed.mode = _union(owed.mode, mode)
        owed.delay = min(self.policy.max_s, owed.delay * 2)
        return owed.delay

    def owed(self, store_id: str, peer: str) -> SyncMode | None:
        """The sync to try now for (store_id, peer), None if nothing is owed."""
        owed = self._owed.get((store_id, peer))
        return owed.mode if owed is not None else None

    def settled(self, store_id: str, peer: str, mode: SyncMode = SyncMode.PUSH_PULL) -> None:
        """A `mode` sync went through (or cannot be helped by trying again): it is owed no more. The
        default: nothing is owed (the peer went offline; its next ONLINE catches up)."""
        key = (store_id, peer)
        owed = self._owed.get(key)
        if owed is None:
            return
        if mode in (owed.mode, SyncMode.PUSH_PULL):
            del self._owed[key]
        elif owed.mode is SyncMode.PUSH_PULL:
            owed.mode = SyncMode.PULL_ONLY if mode is SyncMode.PUSH_ONLY else SyncMode.PUSH_ONLY

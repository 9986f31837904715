"""A hybrid logical clock (Kulkarni et al. 2014): wall-clock milliseconds plus a logical counter.

A timestamp is one int64: `physical_ms << 16 | logical`, so comparing the ints compares
(physical, logical). Every value the clock issues is greater than every value it issued or received
before (`now`, `update`), and it stays close to the wall clock: the physical part is the highest wall
time seen anywhere, the counter orders events within one millisecond. When the counter would overflow
it carries into the physical part (the packed value just grows by one), so the clock never stalls.

Restarts: the owner seeds the clock with the highest timestamp it stored (`observe`), OpenHarmony's
rule in `TimeHelper::Initialize` — a node never issues a stamp below data it already holds, even after
the wall clock was set back.

Remote timestamps more than `max_skew_ms` ahead of the local wall clock are refused with `ClockSkew`
and leave the clock unchanged (CockroachDB's `UpdateAndCheckMaxOffset`): one peer with a wrong clock
must not drag every replica's timestamps into the future.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from datamgr.errors import ClockSkew, InvalidArgument

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_HLC = (1 << 63) - 1
DEFAULT_MAX_SKEW_MS = 60_000


def pack(physical_ms: int, logical: int) -> int:
    """The int64 of (physical, logical); order of the ints = order of the pairs."""
    if not 0 <= logical <= LOGICAL_MASK:
        raise InvalidArgument(f"HLC logical counter {logical} is outside 0..{LOGICAL_MASK}")
    if not 0 <= physical_ms <= MAX_HLC >> LOGICAL_BITS:
        raise InvalidArgument(f"HLC physical time {physical_ms} ms is outside the int64 range")
    return physical_ms << LOGICAL_BITS | logical


def unpack(ts: int) -> tuple[int, int]:
    """(physical_ms, logical) of a packed timestamp."""
    return ts >> LOGICAL_BITS, ts & LOGICAL_MASK


def check_timestamp(ts: object) -> int:
    """`ts` if it is a valid packed HLC value (a non-negative int64), else InvalidArgument."""
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= MAX_HLC:
        raise InvalidArgument(f"invalid HLC timestamp {ts!r}: expected an int in 0..2^63-1")
    return ts


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HLC:
    """One device's clock. Thread-safe: the writer thread stamps, any thread may read `last`.

    `wall` returns the wall clock in ms (injectable for tests); `last` seeds the clock (see `observe`).
    """

    def __init__(
        self, wall: Callable[[], int] = wall_ms, max_skew_ms: int = DEFAULT_MAX_SKEW_MS, last: int = 0
    ) -> None:
        if max_skew_ms < 0:
            raise InvalidArgument(f"max_skew_ms must be >= 0, not {max_skew_ms}")
        self._wall = wall
        self.max_skew_ms = max_skew_ms
        self._last = check_timestamp(last)
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        """The highest timestamp issued or observed so far."""
        return self._last

    def _tick(self, floor: int) -> int:
        # Kulkarni's send/receive rules on packed values: the new stamp is max(floor, now) where
        # `floor` already holds every value seen; a floor at or past the wall clock gets one more tick.
        wall = pack(self._wall(), 0)
        stamp = floor + 1 if floor >= wall else wall
        if stamp > MAX_HLC:  # 2^47 ms is ~4400 years away; reaching it means a corrupt stamp
            raise InvalidArgument("HLC overflow: a stored or remote timestamp is at the int64 limit")
        self._last = stamp
        return stamp

    def now(self) -> int:
        """A new timestamp, greater than every one issued or received before."""
        with self._lock:
            return self._tick(self._last)

    def check(self, remote: int) -> None:
        """ClockSkew if `remote` is too far ahead of the wall clock to be trusted; changes nothing."""
        check_timestamp(remote)
        physical, _ = unpack(remote)
        wall = self._wall()
        if physical - wall > self.max_skew_ms:
            raise ClockSkew(
                f"a peer's clock is {physical - wall} ms ahead of this device's, more than the "
                f"{self.max_skew_ms} ms allowed: fix the clocks (NTP) and sync again"
            )

    def update(self, remote: int) -> int:
        """Merges a received timestamp and returns a new one greater than both it and `last`.

        ClockSkew (clock unchanged) if `remote` is more than `max_skew_ms` ahead of the wall clock."""
        with self._lock:
            self.check(remote)
            return self._tick(max(self._last, remote))

    def observe(self, stored: int) -> None:
        """Raises the floor to a timestamp this device already holds (no skew check: it is ours)."""
        check_timestamp(stored)
        with self._lock:
            self._last = max(self._last, stored)

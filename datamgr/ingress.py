"""Per-app ingress pacing: one app's request bytes cannot take the daemon's CPU (issue 10).

Receiving, decoding and refusing a request costs the event loop in proportion to its bytes, whether it
is accepted or not (a 500,000-character prompt refused as too long, a 1 MiB put refused past the quota).
`IngressPacer` keeps a token bucket of request bytes per app: every decoded request is charged to the
running call's tenant (`datamgr.tenant`, set when the gate knows the caller); an app in debt has its
next requests wait in the gate (`datamgr.gate`) before they are read, until the debt is paid at
`app_ingress_bytes_per_s`. The burst is one maximal message, so a single largest batch always passes.
The daemon's own work and the admin (tenant "") are never paced. Pacing is work-conserving: an app's
debt makes it wait only while another app has sent requests within `contention_s` (an app alone on the
daemon takes all it can: a 100 MB UDMF put alone runs at full speed). Pure logic with an injectable clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from datamgr import tenant

SETTING = "app_ingress_bytes_per_s"


class IngressPacer:
    """A token bucket of request bytes per app: `charge` spends, `delay` says how long to wait."""

    __slots__ = ("_burst", "_clock", "_contention_s", "_levels", "_rate", "_recent")

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        contention_s: float = 1.0,
    ) -> None:
        assert rate > 0 and burst > 0
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        self._contention_s = contention_s
        self._levels: dict[str, tuple[float, float]] = {}  # app -> (bytes available, as of when)
        # the two apps that sent requests last, most recent first, and when: the latest other app of
        # any app is in one of them
        self._recent: list[tuple[str, float]] = [("", -1e18), ("", -1e18)]

    @property
    def rate(self) -> float:
        return self._rate

    def _level(self, app: str, now: float) -> float:
        entry = self._levels.get(app)
        if entry is None:
            return self._burst
        level, then = entry
        return min(self._burst, level + (now - then) * self._rate)

    def charge(self, app: str, nbytes: int) -> None:
        """`app` sent `nbytes` of request: its bucket goes down by that much, into debt if need be."""
        now = self._clock()
        level = self._level(app, now) - nbytes
        if level < 0 and not self._contended(app, now):
            level = 0.0  # alone on the daemon: what it takes then is no debt later
        self._levels[app] = (level, now)
        recent = self._recent
        if recent[0][0] != app:
            recent[1] = recent[0]
        recent[0] = (app, now)

    def _contended(self, app: str, now: float) -> bool:
        """Whether another app has sent requests within `contention_s`."""
        other, when = self._recent[0] if self._recent[0][0] != app else self._recent[1]
        return bool(other) and now - when <= self._contention_s

    def charge_current(self, nbytes: int) -> None:
        """`charge` to the running call's tenant; nothing for the daemon's own calls and the admin's."""
        app = tenant.current()
        if app:
            self.charge(app, nbytes)

    def delay(self, app: str) -> float:
        """Seconds `app`'s next request must wait before it is read: 0 unless the app is in debt while
        another app has sent requests within `contention_s`."""
        entry = self._levels.get(app)
        if entry is None:
            return 0.0
        now = self._clock()
        level = entry[0] + (now - entry[1]) * self._rate
        if level >= 0:
            return 0.0
        if not self._contended(app, now):
            return 0.0  # nobody else to protect: work-conserving
        return -level / self._rate

    def forget(self, app: str) -> None:
        """Drops `app`'s bucket (the app was removed)."""
        self._levels.pop(app, None)
        self._recent = [r if r[0] != app else ("", -1e18) for r in self._recent]

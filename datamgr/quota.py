"""Per-app storage quotas: how many bytes each app's data takes, and whether a write may add more.

Usage is counted per (bundle, kind): "datashare" (the rows of the tables the app provides: in
OpenHarmony the data is the provider's), "kv" (keys and values of the app's KV stores) and "udmf" (the
data the app wrote, blobs included). Each row or entry also counts `ROW_OVERHEAD` bytes, so a flood
of empty rows is not free. A count is measured from the database the first time it is needed (and
again after `forget`), then kept by the exact deltas the writes report from inside their transactions
on the database writer thread: so it follows what is committed, and a restart (or kill -9) simply
measures again. A write that grows an app past `storage.app_quota_bytes`, or the disk below the floor
(`datamgr.disk`), is refused with RESOURCE_EXHAUSTED naming the setting; deletes and writes that
shrink always pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from datamgr.disk import DiskFloor, mib
from datamgr.errors import ResourceExhausted

KINDS = ("datashare", "kv", "udmf")
ROW_OVERHEAD = 32  # bytes counted per row or entry besides its values (keys, record header)
QUOTA_SETTING = "storage.app_quota_bytes"

Measure = Callable[[sa.Connection, str], int]
"""The bytes of one kind of `bundle`'s data, counted in the database on `conn`."""


@dataclass(frozen=True, slots=True)
class StorageLimits:
    """The plain values quotas run with (the daemon's `storage` settings)."""

    app_quota_bytes: int
    min_free_bytes: int


def over_quota(bundle: str, used: dict[str, int], grow: int, quota: int) -> str | None:
    """Why `bundle`, using `used` bytes per kind, may not add `grow` bytes under `quota` (None: it may)."""
    total = sum(used.values())
    if grow <= 0 or total + grow <= quota:
        return None
    parts = ", ".join(f"{k} {mib(n)}" for k, n in used.items() if n)
    return (
        f"{bundle} stores {mib(total)}{f' ({parts})' if parts else ''} and this write adds {mib(grow)}: "
        f"over {QUOTA_SETTING} ({mib(quota)}); delete some of its data first"
    )


class Quotas:
    """The usage ledger of every app. `refusal`, `add` and measuring run on the database writer thread
    (one at a time, in commit order); `usage` and `room` only read, from any thread."""

    def __init__(self, limits: StorageLimits, floor: DiskFloor) -> None:
        self.limits = limits
        self.floor = floor
        self._used: dict[tuple[str, str], int] = {}
        self._measures: dict[str, Measure] = {}

    def measure_with(self, kind: str, measure: Measure) -> None:
        assert kind in KINDS
        self._measures[kind] = measure

    def ledger(self, kind: str, floor_at_commit: bool = True) -> Ledger:
        """The view a store of `kind` uses (`floor_at_commit` False: the floor was checked before the
        write's bytes reached the disk, as UDMF does while blobs stream in)."""
        assert kind in KINDS
        return Ledger(self, kind, floor_at_commit)

    def _known(self, conn: sa.Connection, bundle: str) -> dict[str, int]:
        used = {}
        for kind in KINDS:
            n = self._used.get((bundle, kind))
            if n is None:
                measure = self._measures.get(kind)
                n = 0 if measure is None else measure(conn, bundle)
                self._used[bundle, kind] = n
            used[kind] = n
        return used

    def refusal(
        self, conn: sa.Connection, bundle: str, kind: str, grow: int, floor: bool = True
    ) -> str | None:
        """Why `bundle` may not add `grow` bytes of `kind` now (None: it may). Measures the counts
        it does not know on `conn`, inside the caller's transaction, before the write ran."""
        if grow <= 0:
            return None
        refused = over_quota(bundle, self._known(conn, bundle), grow, self.limits.app_quota_bytes)
        if refused is None and floor:
            refused = self.floor.refusal(grow)
        return refused

    def room(self, bundle: str, total: int, new: int) -> str | None:
        """`refusal` from what is known, without the database, while data is still arriving: may
        `bundle` add `total` bytes, `new` of which are about to reach the disk."""
        used = {k: self._used.get((bundle, k), 0) for k in KINDS}
        refused = over_quota(bundle, used, total, self.limits.app_quota_bytes)
        return refused or self.floor.refusal(new)

    def add(self, bundle: str, kind: str, delta: int) -> None:
        """A committed write changed `bundle`'s `kind` by `delta` bytes (an unknown count stays
        unknown: its next measurement includes the write)."""
        if delta and (key := (bundle, kind)) in self._used:
            self._used[key] = max(0, self._used[key] + delta)
        if delta < 0:
            self.floor.forget()

    def forget(self, bundle: str, kind: str | None = None) -> None:
        """Measure `bundle`'s data (of `kind`, or all) again when next needed: something changed it
        by an amount nobody counted (sync, a dropped store or app)."""
        for k in KINDS if kind is None else (kind,):
            self._used.pop((bundle, k), None)
        self.floor.forget()

    def usage(self, bundle: str) -> dict[str, int | None]:
        """Bytes per kind as known (None: not measured since the start)."""
        return {k: self._used.get((bundle, k)) for k in KINDS}

    def measure(self, engine: sa.Engine, bundles: Iterable[str]) -> None:
        """Measures the counts of `bundles` not known yet (on the writer thread)."""
        with engine.connect() as conn:
            for bundle in bundles:
                self._known(conn, bundle)


@dataclass(frozen=True, slots=True)
class Ledger:
    """One kind's view of the quotas: what a store calls from inside its write transactions."""

    quotas: Quotas
    kind: str
    floor_at_commit: bool = True

    def refusal(self, conn: sa.Connection, bundle: str, grow: int) -> str | None:
        return self.quotas.refusal(conn, bundle, self.kind, grow, self.floor_at_commit)

    def admit(self, conn: sa.Connection, bundle: str, grow: int) -> None:
        """Raises ResourceExhausted if `bundle` may not add `grow` bytes."""
        if grow > 0 and (refused := self.refusal(conn, bundle, grow)) is not None:
            raise ResourceExhausted(refused)

    def room(self, bundle: str, total: int, new: int) -> str | None:
        return self.quotas.room(bundle, total, new)

    def add(self, bundle: str, delta: int) -> None:
        self.quotas.add(bundle, self.kind, delta)

    def forget(self, bundle: str) -> None:
        self.quotas.forget(bundle, self.kind)

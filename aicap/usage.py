"""Per-app daily token quotas: a long-window limit beside the concurrency limits (aicap.limits), as ML
Kit's PER_APP_BATTERY_USE_QUOTA_EXCEEDED ("a long-duration, e.g. per-day, quota for the calling app").

Every prompt token an app sends (each request's whole prompt, cached or not, as OpenAI counts) and
every token generated for it counts, over the daemon's local calendar day: the count starts again at
local midnight. With `ai.tokens_per_day_per_app` set, a request of an app whose count reached it is
refused at once with RESOURCE_EXHAUSTED saying when it resets (`QuotaExceeded.retry_after_s`: the HTTP
API's `retry-after`); one that started under the quota runs to its end. The counts live in the
daemon's database (`aicap_token_usage`, one row per app), written at most once a second behind the
requests, so a restart keeps them; a kill -9 loses at most the last second's tokens. Event-loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from aicap.errors import ResourceExhausted

log = logging.getLogger("aicap.usage")
SETTING = "ai.tokens_per_day_per_app"

metadata = sa.MetaData()
usage_table = sa.Table(
    "aicap_token_usage",
    metadata,
    sa.Column("app", sa.String(255), primary_key=True),
    sa.Column("day", sa.String(10), nullable=False),  # the local date the count is of, YYYY-MM-DD
    sa.Column("tokens", sa.BigInteger, nullable=False),
)


class QuotaExceeded(ResourceExhausted):
    """The app used its daily token quota; `retry_after_s` is the time left until it resets."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def day_of(t: float) -> tuple[str, float]:
    """The local calendar day of the time `t` (YYYY-MM-DD) and the time its next day begins."""
    d = datetime.datetime.fromtimestamp(t).date()
    nxt = datetime.datetime.combine(d + datetime.timedelta(days=1), datetime.time.min)
    return d.isoformat(), nxt.timestamp()


def iso(t: float) -> str:
    """`t` as local time in ISO 8601, with its UTC offset."""
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


class UsageStore:
    """The counts in the daemon's database (plain SQLAlchemy Core, run on its writer thread)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        metadata.create_all(engine)

    def load(self, day: str) -> dict[str, int]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(usage_table).where(usage_table.c.day == day)).all()
        return {r.app: r.tokens for r in rows}

    def save(self, day: str, counts: dict[str, int]) -> None:
        t = usage_table
        with self._engine.begin() as conn:
            for app, tokens in counts.items():
                done = conn.execute(sa.update(t).where(t.c.app == app).values(day=day, tokens=tokens))
                if not done.rowcount:
                    conn.execute(sa.insert(t).values(app=app, day=day, tokens=tokens))


class TokenQuota:
    def __init__(
        self,
        limit: int,
        store: UsageStore,
        run_db: Callable[..., Awaitable[Any]],
        clock: Callable[[], float] = time.time,
        flush_s: float = 1.0,
    ) -> None:
        """`limit`: tokens per app and day (0: none, counted all the same for the owner's stats)."""
        self.limit = limit
        self._store, self._run_db, self._clock, self._flush_s = store, run_db, clock, flush_s
        self._day, self._resets = day_of(clock())
        self._used: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Reads today's counts (those of an earlier day start at 0)."""
        self._used = await self._run_db(self._store.load, self._day)

    async def close(self) -> None:
        """Writes what is not written yet."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        await self.flush()

    def used(self, app: str) -> int:
        self._roll()
        return self._used.get(app, 0)

    def apps(self) -> list[str]:
        self._roll()
        return sorted(self._used)

    @property
    def resets_at(self) -> float:
        self._roll()
        return self._resets

    def check(self, app: str) -> None:
        """QuotaExceeded if `app` has used its tokens for today."""
        if self.limit and self.used(app) >= self.limit:
            left = max(1, int(self._resets - self._clock()) + 1)
            raise QuotaExceeded(
                f"daily token quota of {self.limit} tokens used: app {app} had {self._used[app]} prompt and "
                f"completion tokens today ({SETTING}); it resets at {iso(self._resets)}",
                left,
            )

    def add(self, app: str, tokens: int) -> None:
        """Counts `tokens` for `app`; they are written within `flush_s`."""
        if tokens <= 0:
            return
        self._roll()
        self._used[app] = self._used.get(app, 0) + tokens
        self._dirty.add(app)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def flush(self) -> None:
        if not self._dirty:
            return
        counts = {app: self._used.get(app, 0) for app in self._dirty}
        self._dirty.clear()
        try:
            await self._run_db(self._store.save, self._day, counts)
        except Exception:
            log.exception("cannot write the apps' token counts; trying again")
            self._dirty.update(counts)

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_s)
        await self.flush()

    def _roll(self) -> None:
        """A new day: every count starts at 0 (the rows are overwritten as apps use tokens)."""
        if self._clock() >= self._resets:
            self._day, self._resets = day_of(self._clock())
            self._used.clear()
            self._dirty.clear()

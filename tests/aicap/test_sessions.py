"""Sessions', pinned contexts' and the daily quota's pure logic: ownership, one turn at a time, bounds,
idle expiry, prompt continuation, the day's count and its reset, persistence through the store."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aicap.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from aicap.prompts import continued
from aicap.sessions import Pinned, PinnedContexts, Sessions
from aicap.usage import QuotaExceeded, TokenQuota, UsageStore, day_of


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_sessions_belong_to_their_app_and_run_one_turn_at_a_time() -> None:
    sessions = Sessions(max_per_app=2, idle_s=60)
    s = sessions.create("com.a", "m", "Be brief.")
    assert sessions.get("com.a", s.id) is s
    with pytest.raises(NotFound):
        sessions.get("com.b", s.id)  # another app's id is as unknown as a made-up one
    sessions.begin("com.a", s.id)
    with pytest.raises(FailedPrecondition, match="responding"):
        sessions.begin("com.a", s.id)
    first = s.turn
    sessions.end(s, first)
    sessions.begin("com.a", s.id)
    sessions.end(s, first)  # a late end of the earlier turn leaves the running one alone
    assert s.responding
    sessions.end(s, s.turn)
    assert not s.responding


def test_session_bounds_and_idle_expiry() -> None:
    clock = Clock()
    sessions = Sessions(max_per_app=2, idle_s=60, clock=clock)
    a, b = sessions.create("com.a", "m", ""), sessions.create("com.a", "m", "")
    with pytest.raises(ResourceExhausted, match=r"ai\.max_sessions_per_app"):
        sessions.create("com.a", "m", "")
    assert sessions.create("com.b", "m", "")  # per app
    clock.t += 30
    sessions.get("com.a", a.id)  # used: its idle time starts again
    sessions.begin("com.a", b.id)  # responding: never expires
    clock.t += 45
    gone = sessions.expired()
    assert [s.app for s in gone] == ["com.b"] and gone[0].closed
    clock.t += 100
    assert sessions.expired() == [a]
    assert sessions.count("com.a") == 1 and sessions.apps() == ["com.a"]
    sessions.end(b, b.turn)
    assert sessions.close("com.a", b.id) is b and sessions.apps() == []


def test_messages_and_commit() -> None:
    s = Sessions(2, 60).create("com.a", "m", "Be brief.")
    turn = [{"role": "user", "content": "Hi"}]
    assert s.messages(turn) == [{"role": "system", "content": "Be brief."}, *turn]
    s.commit(turn, "Hello!", [1, 2, 3], "<p>Hello!")
    assert s.transcript == [*turn, {"role": "assistant", "content": "Hello!"}]
    assert (s.kv_tokens, s.kv_text) == ([1, 2, 3], "<p>Hello!")
    assert s.chars() == len("Be brief.") + 2 + 6


def test_pinned_contexts_bounds_and_ownership() -> None:
    pinned = PinnedContexts(max_per_app=1, max_chars=10)
    for name, text, error in [
        ("", "x", InvalidArgument),
        ("bad name", "x", InvalidArgument),
        ("-lead", "x", InvalidArgument),
        ("n" * 65, "x", InvalidArgument),
        ("ok", "", InvalidArgument),
        ("ok", "x" * 11, InvalidArgument),
    ]:
        with pytest.raises(error):
            pinned.check("com.a", name, text)
    p = Pinned("com.a", "desk", "m", "text", [1, 2], "<s>text")
    pinned.check("com.a", "desk", "text")
    assert pinned.put(p) is None
    pinned.check("com.a", "desk", "again")  # re-pinning a name is not a new one
    with pytest.raises(ResourceExhausted, match=r"ai\.max_pinned_per_app"):
        pinned.check("com.a", "other", "x")
    with pytest.raises(NotFound):
        pinned.get("com.b", "desk")
    assert pinned.get_or_none("com.b", "desk") is None
    assert pinned.remove("com.a", "desk") is p and pinned.count("com.a") == 0
    with pytest.raises(NotFound):
        pinned.remove("com.a", "desk")


def test_continued_keeps_the_prefix_tokens_when_the_text_agrees() -> None:
    def tokenize(text: str) -> list[int]:
        return [ord(c) for c in text]

    assert continued(([7, 8], "ab"), "abcd", tokenize) == [7, 8, ord("c"), ord("d")]
    assert continued(([7, 8], "ab"), "ab", tokenize) == [7, 8]
    assert continued(([7, 8], "ab"), "xbcd", tokenize) == tokenize("xbcd")  # the template rewrote it
    assert continued(([], ""), "ab", tokenize) == tokenize("ab")
    assert continued(None, "ab", tokenize) == tokenize("ab")


async def _run_db(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _quota(tmp_path: Path, clock: Clock, limit: int = 100) -> TokenQuota:
    store = UsageStore(sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    return TokenQuota(limit, store, _run_db, clock, flush_s=0.0)


def test_the_quota_counts_refuses_and_resets_at_local_midnight(tmp_path: Path) -> None:
    midnight = datetime.datetime(2026, 3, 1).timestamp()
    clock = Clock(midnight - 10)

    async def scenario() -> None:
        quota = _quota(tmp_path, clock)
        await quota.start()
        quota.check("com.a")
        quota.add("com.a", 60)
        quota.add("com.a", 39)
        quota.check("com.a")  # 99 of 100
        quota.add("com.a", 5)  # a running request may pass it
        with pytest.raises(QuotaExceeded) as info:
            quota.check("com.a")
        assert isinstance(info.value, ResourceExhausted)
        assert "daily token quota of 100 tokens used" in info.value.message
        assert "resets at 2026-03-01T00:00:00" in info.value.message
        assert info.value.retry_after_s == 11
        quota.check("com.b")  # per app
        clock.t = midnight + 1  # a new day
        quota.check("com.a")
        assert quota.used("com.a") == 0 and quota.apps() == []
        await quota.close()

    asyncio.run(scenario())


def test_the_counts_survive_a_restart_of_the_same_day_only(tmp_path: Path) -> None:
    clock = Clock(datetime.datetime(2026, 3, 1, 12).timestamp())

    async def write() -> None:
        quota = _quota(tmp_path, clock)
        await quota.start()
        quota.add("com.a", 150)
        quota.add("com.b", 7)
        await quota.close()

    async def read() -> TokenQuota:
        quota = _quota(tmp_path, clock)
        await quota.start()
        return quota

    asyncio.run(write())
    again = asyncio.run(read())
    assert (again.used("com.a"), again.used("com.b")) == (150, 7)
    with pytest.raises(QuotaExceeded):
        again.check("com.a")
    clock.t += 86_400  # the next day: yesterday's rows do not count
    assert asyncio.run(read()).used("com.a") == 0


def test_a_zero_limit_counts_without_refusing(tmp_path: Path) -> None:
    async def scenario() -> None:
        quota = _quota(tmp_path, Clock(), limit=0)
        await quota.start()
        quota.add("com.a", 10**9)
        quota.check("com.a")
        assert quota.used("com.a") == 10**9
        await quota.close()

    asyncio.run(scenario())


def test_day_of_is_the_local_date_and_the_next_midnight() -> None:
    t = datetime.datetime(2026, 12, 31, 23, 59).timestamp()
    day, nxt = day_of(t)
    assert day == "2026-12-31" and nxt == datetime.datetime(2027, 1, 1).timestamp()

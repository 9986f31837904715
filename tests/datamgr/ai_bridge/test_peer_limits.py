"""datamgr.ai_bridge.limits: per-device concurrency and tokens per minute for generations served."""

from __future__ import annotations

import pytest

from datamgr.ai_bridge.limits import DeviceLimits
from datamgr.ai_bridge.servicer import serves
from datamgr.errors import ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_generations_of_one_device_are_bounded_and_others_unaffected() -> None:
    limits = DeviceLimits(2, 10_000)
    with limits.admit("a", "alpha", 10), limits.admit("a", "alpha", 10):
        third = limits.admit("a", "alpha", 10)
        with pytest.raises(ResourceExhausted, match=r"ai\.peer_max_concurrent"), third:
            pass
        with limits.admit("b", "bravo", 10):
            assert limits.running("b") == 1
        assert limits.running("a") == 2
    assert limits.running("a") == 0
    with limits.admit("a", "alpha", 10):
        pass


def test_tokens_per_minute_count_prompts_and_generated_tokens_and_expire() -> None:
    clock = Clock()
    limits = DeviceLimits(8, 100, clock)
    with limits.admit("a", "alpha", 60):
        limits.charge("a", 30)
    assert limits.used("a") == 90
    over = limits.admit("a", "alpha", 20)
    with pytest.raises(ResourceExhausted, match=r"ai\.peer_tokens_per_minute"), over:
        pass
    assert limits.used("a") == 90  # a refused prompt costs nothing
    clock.now = 61.0
    assert limits.used("a") == 0
    with limits.admit("a", "alpha", 100):
        pass


def test_serve_peers_off_paired_or_a_list() -> None:
    assert not serves("off", "x")
    assert serves("paired", "x")
    assert serves(["x"], "x") and not serves(["y"], "x")


def test_the_recent_rate_is_over_about_the_last_window() -> None:
    from datamgr.ai_bridge.servicer import RecentRate

    rate = RecentRate(window_s=5.0)
    assert rate.observe(0, now=100.0) == 0.0
    assert rate.observe(50, now=101.0) == 50.0
    assert rate.observe(100, now=102.0) == 50.0
    # later readings drop the old ones, keeping a base at least a window back
    assert rate.observe(100, now=110.0) == pytest.approx(0.0)
    assert rate.observe(300, now=111.0) == pytest.approx(200 / 9)  # the base is the reading at 102
    assert rate.observe(400, now=118.0) == pytest.approx(100 / 7)  # ... and now the one at 111

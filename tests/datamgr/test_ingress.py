"""The per-app ingress bucket (datamgr.ingress) with a fake clock: exact debts and waits."""

from __future__ import annotations

import pytest

from datamgr import tenant
from datamgr.ingress import IngressPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pacer(rate: float = 1000.0, burst: float = 500.0) -> tuple[IngressPacer, Clock]:
    """A pacer on which another app is always active (contended), so that debts make apps wait."""
    clock = Clock()
    p = IngressPacer(rate, burst, clock, contention_s=1e9)
    p.charge("com.other", 0)
    return p, clock


def test_an_unknown_app_is_not_delayed() -> None:
    p, _ = pacer()
    assert p.delay("com.a") == 0.0


def test_one_burst_passes_at_once_and_the_next_bytes_go_into_debt() -> None:
    p, _ = pacer()
    p.charge("com.a", 500)
    assert p.delay("com.a") == 0.0
    p.charge("com.a", 250)
    assert p.delay("com.a") == pytest.approx(0.25)


def test_a_single_message_larger_than_the_burst_passes_but_leaves_debt() -> None:
    p, _ = pacer()
    assert p.delay("com.a") == 0.0
    p.charge("com.a", 2500)
    assert p.delay("com.a") == pytest.approx(2.0)


def test_debt_is_paid_at_the_rate() -> None:
    p, clock = pacer()
    p.charge("com.a", 1500)  # 1000 bytes of debt: 1 s
    clock.now += 0.4
    assert p.delay("com.a") == pytest.approx(0.6)
    clock.now += 0.6
    assert p.delay("com.a") == 0.0


def test_refill_stops_at_the_burst() -> None:
    p, clock = pacer()
    p.charge("com.a", 100)
    clock.now += 3600  # an hour idle earns no more than the burst
    p.charge("com.a", 700)
    assert p.delay("com.a") == pytest.approx(0.2)


def test_charges_accumulate_while_in_debt() -> None:
    p, clock = pacer()
    for _ in range(10):
        p.charge("com.a", 150)
    assert p.delay("com.a") == pytest.approx(1.0)  # 1500 - 500 burst
    clock.now += 0.5
    p.charge("com.a", 100)
    assert p.delay("com.a") == pytest.approx(0.6)


def test_apps_have_buckets_of_their_own() -> None:
    p, _ = pacer()
    p.charge("com.hostile", 10_500)
    assert p.delay("com.hostile") == pytest.approx(10.0)
    assert p.delay("com.good") == 0.0
    p.charge("com.good", 400)
    assert p.delay("com.good") == 0.0


def test_forget_drops_the_debt() -> None:
    p, _ = pacer()
    p.charge("com.a", 5000)
    p.forget("com.a")
    assert p.delay("com.a") == 0.0
    p.forget("com.never")


def test_charge_current_charges_the_running_tenant_and_never_the_daemon() -> None:
    p, _ = pacer()
    p.charge_current(10_000)  # the daemon's own work, or the admin: tenant ""
    assert p.delay(tenant.DAEMON) == 0.0
    token = tenant._TENANT.set("com.a")
    try:
        p.charge_current(1500)
    finally:
        tenant._TENANT.reset(token)
    assert p.delay("com.a") == pytest.approx(1.0)


def test_an_app_alone_is_never_delayed_and_owes_nothing_for_it() -> None:
    clock = Clock()
    p = IngressPacer(1000.0, 500.0, clock, contention_s=1.0)
    p.charge("com.a", 5000)  # nobody else sends: work-conserving
    assert p.delay("com.a") == 0.0
    p.charge("com.b", 10)  # another app arrives
    assert p.delay("com.a") == 0.0  # what com.a took alone is no debt
    p.charge("com.a", 1500)  # contended now: 0 - 1500
    assert p.delay("com.a") == pytest.approx(1.5)


def test_debt_stops_counting_once_the_other_app_is_quiet() -> None:
    clock = Clock()
    p = IngressPacer(1000.0, 500.0, clock, contention_s=1.0)
    p.charge("com.b", 10)
    p.charge("com.a", 5500)
    assert p.delay("com.a") == pytest.approx(5.0)
    clock.now += 1.5  # com.b silent for longer than contention_s
    assert p.delay("com.a") == 0.0
    p.forget("com.b")
    p.charge("com.a", 1)
    assert p.delay("com.a") == 0.0

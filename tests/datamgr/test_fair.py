"""The writer's fair order (datamgr._fair): exact orders, no threads, no clocks."""

from __future__ import annotations

import pytest

from datamgr._fair import FairQueue


def run(q: FairQueue[str], cost: dict[str, float], steps: int | None = None) -> list[str]:
    """Pops (and charges each job `cost[tenant]`) until empty or `steps` jobs ran: the jobs in order."""
    order = []
    while q and (steps is None or len(order) < steps):
        tenant, job = q.pop()
        q.charge(tenant, cost.get(tenant, 1.0))
        order.append(job)
    return order


def test_one_tenant_is_fifo() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(5):
        q.push("a", f"a{i}")
    assert len(q) == 5
    assert run(q, {}) == ["a0", "a1", "a2", "a3", "a4"]
    assert not q


def test_equal_costs_alternate_in_the_order_tenants_arrived() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(3):
        q.push("a", f"a{i}")
    for i in range(3):
        q.push("b", f"b{i}")
    assert run(q, {}) == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_a_flood_does_not_hold_back_a_late_single_job() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(64):
        q.push("flood", f"f{i}")
    assert run(q, {}, steps=3) == ["f0", "f1", "f2"]
    q.push("other", "o0")
    assert run(q, {}, steps=2) == ["o0", "f3"]


def test_long_jobs_yield_to_short_ones_in_proportion() -> None:
    """A tenant whose jobs take 10x longer gets a turn after about ten of the other's."""
    q: FairQueue[str] = FairQueue()
    for i in range(4):
        q.push("slow", f"s{i}")
    for i in range(30):
        q.push("fast", f"f{i}")
    order = run(q, {"slow": 10.0, "fast": 1.0}, steps=25)
    first, second = [f"f{i}" for i in range(10)], [f"f{i}" for i in range(10, 20)]
    assert order == ["s0", *first, "s1", *second, "s2", "f20", "f21"]


def test_idle_time_banks_no_credit() -> None:
    """After others used the writer while it was idle, a tenant starts level with them, not ahead."""
    q: FairQueue[str] = FairQueue()
    for i in range(10):
        q.push("busy", f"b{i}")
    assert run(q, {}, steps=5) == ["b0", "b1", "b2", "b3", "b4"]
    for i in range(3):
        q.push("late", f"l{i}")
    assert q.vtime("late") == q.vtime("busy") - 1.0  # the floor: busy's time when it last started
    assert run(q, {}) == ["l0", "b5", "l1", "b6", "l2", "b7", "b8", "b9"]


def test_credit_is_not_banked_while_the_writer_is_idle_either() -> None:
    """The floor never goes back: a tenant idle since the start does not outrank one that worked."""
    q: FairQueue[str] = FairQueue()
    for i in range(100):
        q.push("worker", f"w{i}")
    run(q, {})
    assert not q
    for i in range(5):
        q.push("newcomer", f"n{i}")
    q.push("worker", "w100")
    # the newcomer starts where the worker last started (99), one job ahead of it, not 100 ahead
    assert run(q, {}) == ["n0", "n1", "w100", "n2", "n3", "n4"]


def test_a_tenant_that_pushes_while_its_job_runs_keeps_its_order() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("a", "a0")
    q.push("b", "b0")
    tenant, job = q.pop()
    assert (tenant, job) == ("a", "a0")
    q.push("a", "a1")  # pushed while a0 runs (not charged yet)
    q.charge("a", 1.0)
    assert run(q, {}) == ["b0", "a1"]


def test_many_tenants_are_remembered_only_while_ahead() -> None:
    q: FairQueue[int] = FairQueue()
    for i in range(1000):
        q.push(f"t{i}", i)
        tenant, _ = q.pop()
        q.charge(tenant, 0.0)
    assert len(q._vtime) < 20


def test_pop_from_empty() -> None:
    with pytest.raises(IndexError):
        FairQueue().pop()

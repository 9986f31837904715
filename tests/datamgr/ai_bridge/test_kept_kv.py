"""datamgr.ai_bridge.kept_kv: paired devices' swapped-out KV states kept here, bounded per device,
scoped to the device that kept them, forgotten after their TTL."""

from __future__ import annotations

import pytest

from datamgr.ai_bridge.kept_kv import MIN_CHARGE, KeptKv
from datamgr.errors import NotFound, ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keep(kept: KeptKv, device: str, *chunks: bytes) -> str:
    with kept.intake(device, device.upper()) as intake:
        for c in chunks:
            intake.add(c)
        return intake.commit()


def test_a_state_comes_back_as_it_was_sent_once() -> None:
    kept = KeptKv(1 << 20, 60)
    handle = keep(kept, "a", b"head", b"x" * 1000, b"y")
    assert len(handle) >= 24 and kept.count("a") == 1
    assert kept.used("a") == MIN_CHARGE + 1005
    assert kept.take("a", handle) == [b"head", b"x" * 1000, b"y"]
    assert kept.used("a") == 0 and kept.count() == 0
    with pytest.raises(NotFound):
        kept.take("a", handle)


def test_a_device_cannot_reach_another_devices_state() -> None:
    kept = KeptKv(1 << 20, 60)
    handle = keep(kept, "a", b"secret")
    for call in (kept.take, kept.drop):
        with pytest.raises(NotFound):
            call("b", handle)
    assert kept.take("a", handle) == [b"secret"]  # untouched by b's attempts
    assert keep(kept, "a", b"1") != keep(kept, "a", b"1")  # handles are never reused


def test_each_device_is_bounded_by_peer_swap_bytes_and_a_refused_state_costs_nothing() -> None:
    kept = KeptKv(3 * MIN_CHARGE, 60)
    first = keep(kept, "a", b"x" * MIN_CHARGE)
    assert kept.free("a") == MIN_CHARGE and kept.free("b") == 3 * MIN_CHARGE
    with pytest.raises(ResourceExhausted, match=r"ai\.peer_swap_bytes"):
        keep(kept, "a", b"y" * 100, b"z" * MIN_CHARGE)  # refused part way: what it charged is released
    assert kept.used("a") == 2 * MIN_CHARGE and kept.count("a") == 1
    keep(kept, "b", b"w" * 2 * MIN_CHARGE)  # another device has its own budget
    kept.drop("a", first)
    assert kept.used("a") == 0


def test_tiny_states_are_charged_at_least_min_charge() -> None:
    kept = KeptKv(10 * (MIN_CHARGE + 1), 60)
    for _ in range(10):
        keep(kept, "a", b"1")
    with pytest.raises(ResourceExhausted):
        keep(kept, "a", b"1")


def test_states_past_their_ttl_are_forgotten() -> None:
    clock = Clock()
    kept = KeptKv(1 << 20, 60, clock)
    old = keep(kept, "a", b"old")
    clock.now = 30
    new = keep(kept, "a", b"new")
    clock.now = 61
    assert kept.sweep() == 1
    with pytest.raises(NotFound):
        kept.take("a", old)
    assert kept.take("a", new) == [b"new"]
    assert kept.used("a") == 0

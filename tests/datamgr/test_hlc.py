"""The hybrid logical clock: packing, monotonicity, causality, bounded skew, restart seeding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamgr.errors import ClockSkew, FailedPrecondition, InvalidArgument
from datamgr.hlc import HLC, LOGICAL_MASK, MAX_HLC, pack, unpack

T0 = 1_800_000_000_000  # ms
physical = st.integers(0, MAX_HLC >> 16)
logical = st.integers(0, LOGICAL_MASK)


class Wall:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@given(physical, logical, physical, logical)
def test_packing_orders_like_the_pairs(p1: int, l1: int, p2: int, l2: int) -> None:
    a, b = pack(p1, l1), pack(p2, l2)
    assert unpack(a) == (p1, l1)
    assert (a < b) == ((p1, l1) < (p2, l2))
    assert (a == b) == ((p1, l1) == (p2, l2))
    assert 0 <= a <= MAX_HLC


# A step: ("now", wall change) or ("update", wall change, remote offset from wall in ms, remote logical).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("now"), st.integers(-5_000, 5_000)),
        st.tuples(st.just("update"), st.integers(-5_000, 5_000), st.integers(-90_000, 59_000), logical),
    ),
    max_size=60,
)


@given(steps)
def test_monotonic_and_causal_under_any_wall_clock(ops: list[tuple[object, ...]]) -> None:
    wall = Wall()
    clock = HLC(wall)
    last = clock.now()
    for op in ops:
        wall.ms = max(0, wall.ms + int(op[1]))  # type: ignore[call-overload]
        if op[0] == "now":
            ts = clock.now()
        else:
            remote = pack(max(0, wall.ms + int(op[2])), int(op[3]))  # type: ignore[call-overload]
            ts = clock.update(remote)
            assert ts > remote  # causality: whatever follows a receive is after what was received
        assert ts > last  # strictly monotonic, even when the wall clock goes back
        assert unpack(ts)[0] >= wall.ms  # never behind the wall clock
        last = ts
        assert clock.last == ts


def test_counter_orders_events_within_one_millisecond_and_carries_over() -> None:
    clock = HLC(Wall(), last=pack(T0, LOGICAL_MASK - 1))
    assert clock.now() == pack(T0, LOGICAL_MASK)
    assert clock.now() == pack(T0 + 1, 0)  # the counter carries into the physical part


def test_wall_clock_ahead_resets_the_counter() -> None:
    wall = Wall()
    clock = HLC(wall)
    assert clock.now() == pack(T0, 0)
    assert clock.now() == pack(T0, 1)
    wall.ms += 3
    assert clock.now() == pack(T0 + 3, 0)


def test_update_follows_kulkarnis_receive_rule() -> None:
    wall = Wall()
    clock = HLC(wall)
    clock.now()  # (T0, 0)
    assert clock.update(pack(T0 + 10, 7)) == pack(T0 + 10, 8)  # remote ahead: its counter + 1
    assert clock.update(pack(T0 + 10, 3)) == pack(T0 + 10, 9)  # same ms, ours higher: ours + 1
    assert clock.update(pack(T0 - 50, 99)) == pack(T0 + 10, 10)  # remote behind: ours + 1
    wall.ms = T0 + 20
    assert clock.update(pack(T0 + 15, 0)) == pack(T0 + 20, 0)  # wall ahead of both


def test_far_future_remote_is_refused_and_changes_nothing() -> None:
    clock = HLC(Wall(), max_skew_ms=60_000)
    before = clock.now()
    with pytest.raises(ClockSkew, match="ahead") as err:
        clock.update(pack(T0 + 60_001, 0))
    assert isinstance(err.value, FailedPrecondition) and err.value.code == "FAILED_PRECONDITION"
    assert clock.last == before
    assert clock.update(pack(T0 + 60_000, 0)) == pack(T0 + 60_000, 1)  # exactly the bound is fine


def test_check_alone_never_moves_the_clock() -> None:
    clock = HLC(Wall(), max_skew_ms=0)
    clock.check(pack(T0, 5))
    with pytest.raises(ClockSkew):
        clock.check(pack(T0 + 1, 0))
    assert clock.last == 0


def test_restart_seeded_from_the_highest_stored_stamp_survives_a_clock_set_back() -> None:
    stored = pack(T0, 42)
    clock = HLC(Wall(T0 - 3_600_000))  # the wall clock was set back an hour while we were down
    clock.observe(stored)
    clock.observe(pack(T0 - 1, 0))  # observing something older changes nothing
    assert clock.now() == pack(T0, 43)


@pytest.mark.parametrize("bad", [-1, MAX_HLC + 1, 1.5, "1", True, None])
def test_invalid_remote_timestamps_are_invalid_arguments(bad: object) -> None:
    clock = HLC(Wall())
    with pytest.raises(InvalidArgument):
        clock.update(bad)  # type: ignore[arg-type]
    assert clock.last == 0


def test_pack_range_checks() -> None:
    with pytest.raises(InvalidArgument):
        pack(0, LOGICAL_MASK + 1)
    with pytest.raises(InvalidArgument):
        pack(-1, 0)
    with pytest.raises(InvalidArgument):
        HLC(Wall(), max_skew_ms=-1)

"""The channel rules for CROSS_DEVICE data across devices: remote rows are read here by the local rules
but are read-only; the holder decides from its own record alone what leaves it (CROSS_DEVICE DATA_HUB
and DRAG data, never OWN_PROCESS) and that a paired device's fetch of a drag consumes it."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from udmf import access
from udmf.access import Runtime, ShareOptions, Visibility
from udmf.keys import Intention, new_key

WRITER = "com.example.source"
OTHER = "com.example.target"
CASES = [
    Runtime(str(new_key(i, WRITER)), i, WRITER, v, s, g)
    for i, v, s, g in itertools.product(
        Intention, Visibility, ShareOptions, ({}, {OTHER: False}, {OTHER: True})
    )
]


@pytest.mark.parametrize(
    "rt",
    CASES,
    ids=lambda rt: f"{rt.intention.name}-{rt.visibility.name}-{rt.share_options.name}-{dict(rt.grants)}",
)
def test_a_remote_row_reads_like_a_local_one_but_is_read_only(rt: Runtime) -> None:
    remote = dataclasses.replace(rt, origin="a" * 32)
    for caller in (WRITER, OTHER):
        assert access.may_read_by_key(remote, caller) == access.may_read_by_key(rt, caller)
        assert access.may_query(remote, caller) == access.may_query(rt, caller)
        assert access.may_read_summary(remote, caller) == access.may_read_summary(rt, caller)
        assert access.consumed_after_read(remote, caller) == access.consumed_after_read(rt, caller)
        assert not access.may_update(remote, caller) and not access.may_delete(remote, caller)
    assert not access.may_serve_peer(remote)  # only the holder serves its data


@pytest.mark.parametrize(
    "rt",
    CASES,
    ids=lambda rt: f"{rt.intention.name}-{rt.visibility.name}-{rt.share_options.name}-{dict(rt.grants)}",
)
def test_only_cross_device_public_data_and_drags_leave_the_device(rt: Runtime) -> None:
    expected = (
        rt.share_options is ShareOptions.CROSS_DEVICE
        and rt.visibility is Visibility.ALL  # OWN_PROCESS: not even for a peer that claims the writer
        and rt.intention in (Intention.DATA_HUB, Intention.DRAG)  # no record here names a remote reader
    )
    assert access.leaves_device(rt) == expected
    assert access.may_serve_peer(rt) == expected


@pytest.mark.parametrize("intention", list(Intention))
def test_a_paired_devices_fetch_of_a_drag_always_consumes_it(intention: Intention) -> None:
    for grants in ({}, {OTHER: True}):  # a "keep" grant here counts for local readers only
        rt = Runtime(
            str(new_key(intention, WRITER)),
            intention,
            WRITER,
            share_options=ShareOptions.CROSS_DEVICE,
            grants=grants,
        )
        assert access.consumed_by_peer(rt) == (intention is not Intention.DATA_HUB)

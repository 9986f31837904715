"""The channel rules for CROSS_DEVICE data across devices: remote rows are read here by the local rules
but are read-only; the holder serves its own CROSS_DEVICE data to a paired device's reader and
consumes it as a local read would."""

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
        assert not access.may_serve_peer(remote, caller)  # only the holder serves its data


@pytest.mark.parametrize(
    "rt",
    CASES,
    ids=lambda rt: f"{rt.intention.name}-{rt.visibility.name}-{rt.share_options.name}-{dict(rt.grants)}",
)
def test_the_holder_serves_only_its_cross_device_data(rt: Runtime) -> None:
    for reader in (WRITER, OTHER):
        expected = rt.share_options is ShareOptions.CROSS_DEVICE and (
            rt.intention is not Intention.DATA_HUB  # granted on the paired device
            or rt.visibility is Visibility.ALL
            or reader == WRITER
        )
        assert access.may_serve_peer(rt, reader) == expected


@pytest.mark.parametrize("intention", list(Intention))
def test_a_paired_devices_read_consumes_as_a_local_one(intention: Intention) -> None:
    rt = Runtime(str(new_key(intention, WRITER)), intention, WRITER, share_options=ShareOptions.CROSS_DEVICE)
    consumes = intention is not Intention.DATA_HUB
    assert access.consumed_by_peer(rt, keep=False) == consumes
    assert access.consumed_by_peer(rt, keep=True) is False
    granted = dataclasses.replace(rt, grants={OTHER: False})
    assert access.consumed_after_read(granted, OTHER) == consumes

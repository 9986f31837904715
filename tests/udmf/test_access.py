"""OpenHarmony's UDMF access rules, over every intention x caller x visibility x share options x grant."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import pytest

from udmf import access
from udmf.access import Runtime, ShareOptions, Visibility
from udmf.config import MANAGE_UDMF_ACCESS
from udmf.errors import InvalidArgument
from udmf.keys import Intention, new_key

WRITER = "com.example.source"
OTHER = "com.example.target"
SYSTEM_CHANNELS = (Intention.SYSTEM_SHARE, Intention.PICKER, Intention.MENU)
GRANTS: tuple[Mapping[str, bool], ...] = (
    {},
    {OTHER: False},
    {OTHER: True},
    {WRITER: False},
    {WRITER: True},
    {WRITER: False, OTHER: True},
)


def _cases() -> Iterator[tuple[Runtime, str]]:
    for intention, visibility, share, grants, caller in itertools.product(
        Intention, Visibility, ShareOptions, GRANTS, (WRITER, OTHER)
    ):
        key = str(new_key(intention, WRITER))
        yield Runtime(key, intention, WRITER, visibility, share, grants), caller


CASES = list(_cases())


def _id(case: tuple[Runtime, str]) -> str:
    rt, caller = case
    who = "writer" if caller == WRITER else "other"
    return f"{rt.intention.name}-{rt.visibility.name}-{rt.share_options.name}-{dict(rt.grants)}-{who}"


# The expected answers as truth tables over the facts that matter, written out per channel:
# (caller is the writer, caller is granted, data is IN_APP, data is OWN_PROCESS) -> may read by key.
READ_DATA_HUB = {
    # the writer always; others unless hidden (OWN_PROCESS) or kept in the app (IN_APP); grants ignored
    (True, False, False, False): True,
    (True, False, True, False): True,
    (True, False, False, True): True,
    (True, False, True, True): True,
    (False, False, False, False): True,
    (False, False, True, False): False,
    (False, False, False, True): False,
    (False, False, True, True): False,
}
READ_DRAG = {
    # only a granted app, the writer included only when granted (a drag inside one app); IN_APP: the writer
    (True, False, False, False): False,
    (True, False, True, False): False,
    (True, True, False, False): True,
    (True, True, True, False): True,
    (False, False, False, False): False,
    (False, False, True, False): False,
    (False, True, False, False): True,
    (False, True, True, False): False,
}
READ_SYSTEM = {
    # a granted app or the writer (implicit privilege); IN_APP: the writer only
    (True, False, False, False): True,
    (True, False, True, False): True,
    (True, True, False, False): True,
    (True, True, True, False): True,
    (False, False, False, False): False,
    (False, False, True, False): False,
    (False, True, False, False): True,
    (False, True, True, False): False,
}


def _facts(rt: Runtime, caller: str, with_grant: bool) -> tuple[bool, bool, bool, bool]:
    granted = caller in rt.grants if with_grant else False
    own = rt.visibility is Visibility.OWN_PROCESS if rt.intention is Intention.DATA_HUB else False
    return caller == rt.writer, granted, rt.share_options is ShareOptions.IN_APP, own


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_may_read_by_key(case: tuple[Runtime, str]) -> None:
    rt, caller = case
    if rt.intention is Intention.DATA_HUB:
        expected = READ_DATA_HUB[_facts(rt, caller, with_grant=False)]
    elif rt.intention is Intention.DRAG:
        expected = READ_DRAG[_facts(rt, caller, with_grant=True)]
    else:
        expected = READ_SYSTEM[_facts(rt, caller, with_grant=True)]
    assert access.may_read_by_key(rt, caller) is expected


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_may_query(case: tuple[Runtime, str]) -> None:
    rt, caller = case
    if rt.intention is not Intention.DATA_HUB:
        expected = False  # QueryData sees DATA_HUB only
    else:
        expected = READ_DATA_HUB[_facts(rt, caller, with_grant=False)]
    assert access.may_query(rt, caller) is expected


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_only_the_writer_updates_and_deletes_data_hub_data(case: tuple[Runtime, str]) -> None:
    rt, caller = case
    expected = rt.intention is Intention.DATA_HUB and caller == WRITER
    assert access.may_update(rt, caller) is expected
    assert access.may_delete(rt, caller) is expected


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_consumed_after_read(case: tuple[Runtime, str]) -> None:
    rt, caller = case
    kept = rt.grants.get(caller) is True
    expected = rt.intention is not Intention.DATA_HUB and not kept
    assert access.consumed_after_read(rt, caller) is expected


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_summary_is_for_readers_and_the_writer(case: tuple[Runtime, str]) -> None:
    rt, caller = case
    assert access.may_read_summary(rt, caller) is (caller == WRITER or access.may_read_by_key(rt, caller))


def test_the_tables_cover_every_case() -> None:
    seen = {"hub": set(), "drag": set(), "system": set()}
    for rt, caller in CASES:
        if rt.intention is Intention.DATA_HUB:
            seen["hub"].add(_facts(rt, caller, with_grant=False))
        elif rt.intention is Intention.DRAG:
            seen["drag"].add(_facts(rt, caller, with_grant=True))
        else:
            seen["system"].add(_facts(rt, caller, with_grant=True))
    assert seen["hub"] == set(READ_DATA_HUB)
    assert seen["drag"] == set(READ_DRAG)
    assert seen["system"] == set(READ_SYSTEM)
    assert len(CASES) == 5 * 2 * 3 * len(GRANTS) * 2


def test_drag_is_read_once_by_the_target_only() -> None:
    rt = Runtime(str(new_key(Intention.DRAG, WRITER)), Intention.DRAG, WRITER, grants={OTHER: False})
    assert access.may_read_by_key(rt, OTHER)
    assert not access.may_read_by_key(rt, WRITER)
    assert not access.may_read_by_key(rt, "com.example.third")
    assert access.consumed_after_read(rt, OTHER)


@pytest.mark.parametrize(
    ("is_admin", "permissions", "expected"),
    [
        (True, frozenset(), True),
        (False, frozenset({MANAGE_UDMF_ACCESS}), True),
        (True, frozenset({MANAGE_UDMF_ACCESS}), True),
        (False, frozenset(), False),
        (False, frozenset({"ohos.permission.USE_AI", "ohos.permission.MANAGE_UDMF_APP_SHARE_OPTION"}), False),
    ],
)
def test_may_grant(is_admin: bool, permissions: frozenset[str], expected: bool) -> None:
    assert access.may_grant(is_admin, permissions) is expected


def test_grants_are_for_channels_that_need_them() -> None:
    for intention in Intention:
        rt = Runtime(str(new_key(intention, WRITER)), intention, WRITER)
        if intention is Intention.DATA_HUB:
            with pytest.raises(InvalidArgument, match="without a grant"):
                access.check_grantable(rt)
        else:
            access.check_grantable(rt)


def test_insert_intention() -> None:
    with pytest.raises(InvalidArgument, match="SetDragData"):
        access.check_insert_intention(Intention.DRAG)
    with pytest.raises(InvalidArgument, match=r"needs options.intention"):
        access.check_insert_intention(None)
    for intention in (Intention.DATA_HUB, *SYSTEM_CHANNELS):
        assert access.check_insert_intention(intention) is intention


def test_drag_intention() -> None:
    access.check_drag_intention(None)
    access.check_drag_intention(Intention.DRAG)
    for intention in (Intention.DATA_HUB, *SYSTEM_CHANNELS):
        with pytest.raises(InvalidArgument, match="InsertData"):
            access.check_drag_intention(intention)


@pytest.mark.parametrize("op", ["QueryData", "DeleteData"])
def test_channel_ops(op: str) -> None:
    hub = new_key(Intention.DATA_HUB, WRITER)
    assert access.check_channel_op(hub, None, op) is Intention.DATA_HUB
    assert access.check_channel_op(None, Intention.DATA_HUB, op) is Intention.DATA_HUB
    assert access.check_channel_op(hub, Intention.DATA_HUB, op) is Intention.DATA_HUB
    with pytest.raises(InvalidArgument, match="needs a key or an intention"):
        access.check_channel_op(None, None, op)
    with pytest.raises(InvalidArgument, match="but the intention given is PICKER"):
        access.check_channel_op(hub, Intention.PICKER, op)
    with pytest.raises(InvalidArgument, match="does not work on DRAG"):
        access.check_channel_op(None, Intention.DRAG, op)
    with pytest.raises(InvalidArgument, match="does not work on DRAG"):
        access.check_channel_op(new_key(Intention.DRAG, WRITER), None, op)
    for intention in SYSTEM_CHANNELS:
        with pytest.raises(InvalidArgument, match="DATA_HUB only"):
            access.check_channel_op(None, intention, op)
        with pytest.raises(InvalidArgument, match="DATA_HUB only"):
            access.check_channel_op(new_key(intention, WRITER), intention, op)


def test_update_target() -> None:
    hub = new_key(Intention.DATA_HUB, WRITER)
    assert access.check_update_target(hub, None) == hub
    assert access.check_update_target(hub, Intention.DATA_HUB) == hub
    with pytest.raises(InvalidArgument, match=r"needs options.key"):
        access.check_update_target(None, Intention.DATA_HUB)
    with pytest.raises(InvalidArgument, match="but the intention given"):
        access.check_update_target(hub, Intention.MENU)
    for intention in (Intention.DRAG, *SYSTEM_CHANNELS):
        with pytest.raises(InvalidArgument, match="DATA_HUB keys only"):
            access.check_update_target(new_key(intention, WRITER), None)

"""The permission policy, table-tested over every mode x permission setting x allow list x caller x op.

The expected outcome comes from the rules as OpenHarmony states them (the two tables below), never from
the code under test; a denial must also give the reason that applies, checked in the order the rules
are read: the permission setting first, then the caller's grants, then the allow-list.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamgr.datashare.manifest import NO_PERMISSION, REJECT
from datamgr.datashare.policy import Op, check_extension, check_silent
from datamgr.errors import PermissionDenied

PROVIDER = "com.example.contacts"
CONSUMER = "com.example.dialer"
OTHER = "com.example.game"
P = "ohos.permission.READ_CONTACTS"  # the permission a provider names
Q = "ohos.permission.CAMERA"  # some other permission
WHAT = "datashare:///com.example.contacts/main/people"


@dataclass(frozen=True)
class Caller:
    bundle: str
    granted: frozenset[str]

    def __str__(self) -> str:
        return f"{self.bundle.rsplit('.', 1)[1]}{sorted(self.granted)}"


CALLERS = [
    Caller(PROVIDER, frozenset()),
    Caller(PROVIDER, frozenset({P})),
    Caller(CONSUMER, frozenset()),
    Caller(CONSUMER, frozenset({P})),
    Caller(CONSUMER, frozenset({Q})),
    Caller(CONSUMER, frozenset({P, Q})),
    # holding a permission *named* like a special value opens nothing
    Caller(CONSUMER, frozenset({REJECT, NO_PERMISSION})),
    Caller(OTHER, frozenset({P})),
]
PERMISSIONS: list[str | None] = [None, NO_PERMISSION, REJECT, P]
ALLOW_LISTS: list[tuple[str, ...] | None] = [
    None,
    (),
    (CONSUMER,),
    (OTHER,),
    (PROVIDER,),
    (CONSUMER, OTHER),
]
OPS: list[Op] = ["read", "write"]

# Silent access: which consumers (any caller but the provider) a permission setting admits,
# before the allow-list; the reason a consumer it does not admit is given.
SILENT = {
    None: (lambda granted: False, "provider-only"),  # unset: only the provider
    NO_PERMISSION: (lambda granted: True, None),  # every app
    REJECT: (lambda granted: False, "rejects"),  # no other app
    P: (lambda granted: P in granted, f"lacks permission {P}"),  # apps granted P
}
# Extension mode: the same, with no allow-list; unset means open.
EXTENSION = {
    None: (lambda granted: True, None),
    NO_PERMISSION: (lambda granted: True, None),
    REJECT: (lambda granted: False, f"lacks permission {REJECT}"),
    P: (lambda granted: P in granted, f"lacks permission {P}"),
}


def silent_denial(caller: Caller, permission: str | None, allow_list: Collection[str] | None) -> str | None:
    """None when the caller may; else the words the denial must contain."""
    if caller.bundle == PROVIDER:
        return None  # the provider always reaches its own data
    admits, reason = SILENT[permission]
    if not admits(caller.granted):
        return reason
    if allow_list is not None and caller.bundle not in allow_list:
        return "allow-list"
    return None


def extension_denial(caller: Caller, permission: str | None) -> str | None:
    if caller.bundle == PROVIDER:
        return None
    admits, reason = EXTENSION[permission]
    return None if admits(caller.granted) else reason


SILENT_CASES = list(itertools.product(CALLERS, PERMISSIONS, ALLOW_LISTS, OPS))
EXTENSION_CASES = list(itertools.product(CALLERS, PERMISSIONS, OPS))


def test_the_tables_cover_every_permission_setting_and_both_outcomes() -> None:
    assert set(SILENT) == set(EXTENSION) == set(PERMISSIONS)
    silent = {silent_denial(c, p, a) is None for c, p, a, _ in SILENT_CASES}
    extension = {extension_denial(c, p) is None for c, p, _ in EXTENSION_CASES}
    assert silent == extension == {True, False}
    assert len(SILENT_CASES) == 8 * 4 * 6 * 2


@pytest.mark.parametrize(("caller", "permission", "allow_list", "op"), SILENT_CASES, ids=str)
def test_silent_access(
    caller: Caller, permission: str | None, allow_list: tuple[str, ...] | None, op: Op
) -> None:
    denial = silent_denial(caller, permission, allow_list)
    if denial is None:
        check_silent(caller.bundle, caller.granted, PROVIDER, permission, allow_list, op, WHAT)
        return
    with pytest.raises(PermissionDenied) as exc:
        check_silent(caller.bundle, caller.granted, PROVIDER, permission, allow_list, op, WHAT)
    assert denial in str(exc.value)
    assert WHAT in str(exc.value)
    assert exc.value.code == "PERMISSION_DENIED"


@pytest.mark.parametrize(("caller", "permission", "op"), EXTENSION_CASES, ids=str)
def test_extension_mode(caller: Caller, permission: str | None, op: Op) -> None:
    denial = extension_denial(caller, permission)
    if denial is None:
        check_extension(caller.bundle, caller.granted, PROVIDER, permission, op, WHAT)
        return
    with pytest.raises(PermissionDenied) as exc:
        check_extension(caller.bundle, caller.granted, PROVIDER, permission, op, WHAT)
    assert denial in str(exc.value)
    assert f"needed to {op} {WHAT}" in str(exc.value)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    ("permission", "reason"),
    [(None, f"sets no {{op}} permission, so only {PROVIDER} may {{op}}"), (REJECT, "rejects {op} access")],
)
def test_a_closed_silent_table_names_the_operation(permission: str | None, reason: str, op: Op) -> None:
    with pytest.raises(PermissionDenied, match=reason.format(op=op)):
        check_silent(CONSUMER, {P}, PROVIDER, permission, None, op, WHAT)


def test_the_granted_permissions_and_allow_list_may_be_any_collection() -> None:
    """The servicer passes a frozenset of grants and the manifest's list; the policy only asks `in`."""
    for granted in ([P], (P,), {P}, frozenset({P})):
        check_silent(CONSUMER, granted, PROVIDER, P, [CONSUMER], "read", WHAT)
        check_extension(CONSUMER, granted, PROVIDER, P, "read", WHAT)
    with pytest.raises(PermissionDenied):
        check_silent(CONSUMER, [P], PROVIDER, P, [OTHER], "read", WHAT)


# ---- properties over arbitrary names (including ones equal to the special values) ----

names = st.sampled_from([PROVIDER, CONSUMER, OTHER, P, Q, NO_PERMISSION, REJECT]) | st.text(max_size=8)
permissions = st.none() | names
grants = st.frozensets(names, max_size=4)
allow_lists = st.none() | st.lists(names, max_size=4)
ops = st.sampled_from(OPS)


def silent_allows(
    caller: str, granted: Collection[str], permission: str | None, allow: list[str] | None, op: Op
) -> bool:
    try:
        check_silent(caller, granted, PROVIDER, permission, allow, op, WHAT)
    except PermissionDenied:
        return False
    return True


def extension_allows(caller: str, granted: Collection[str], permission: str | None, op: Op) -> bool:
    try:
        check_extension(caller, granted, PROVIDER, permission, op, WHAT)
    except PermissionDenied:
        return False
    return True


@given(granted=grants, permission=permissions, allow=allow_lists, op=ops)
def test_the_provider_always_reaches_its_own_data(
    granted: frozenset[str], permission: str | None, allow: list[str] | None, op: Op
) -> None:
    assert silent_allows(PROVIDER, granted, permission, allow, op)
    assert extension_allows(PROVIDER, granted, permission, op)


@given(caller=names, granted=grants, more=grants, permission=permissions, allow=allow_lists, op=ops)
def test_more_grants_and_a_wider_allow_list_never_deny_what_was_allowed(
    caller: str,
    granted: frozenset[str],
    more: frozenset[str],
    permission: str | None,
    allow: list[str] | None,
    op: Op,
) -> None:
    if silent_allows(caller, granted, permission, allow, op):
        assert silent_allows(caller, granted | more, permission, allow, op)
        assert silent_allows(caller, granted, permission, None, op)  # no allow-list admits everyone
        if allow is not None:
            assert silent_allows(caller, granted, permission, [*allow, OTHER], op)
    if extension_allows(caller, granted, permission, op):
        assert extension_allows(caller, granted | more, permission, op)


@given(caller=names, granted=grants, permission=permissions, allow=allow_lists, op=ops)
def test_extension_mode_is_never_stricter_than_silent_access_and_the_op_decides_nothing(
    caller: str, granted: frozenset[str], permission: str | None, allow: list[str] | None, op: Op
) -> None:
    """Silent access only narrows extension mode (unset closes, the allow-list filters); the op names
    the operation in the message but the caller already chose which permission applies."""
    silent = silent_allows(caller, granted, permission, allow, op)
    if silent:
        assert extension_allows(caller, granted, permission, op)
    other: Op = "write" if op == "read" else "read"
    assert silent == silent_allows(caller, granted, permission, allow, other)
    assert extension_allows(caller, granted, permission, op) == extension_allows(
        caller, granted, permission, other
    )

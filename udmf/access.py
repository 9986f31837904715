"""Who may do what with UDMF data: OpenHarmony's channel rules as pure functions (no I/O).

The rules (`udmf_service_impl.cpp`, `reference/openharmony.md` §2.2-2.4):

* DATA_HUB is public: any app queries it and reads any key, unless the writer hid the data
  (visibility OWN_PROCESS) or kept it in its app (share options IN_APP). Only the writer updates or
  deletes; a delete over the channel skips others' data. Reads never consume it.
* DRAG data is written by the drag source (SetDragData, never InsertData) and read by key only by the
  app the system granted (the drop target) — not even by its writer — once: the read consumes it.
* SYSTEM_SHARE, PICKER and MENU data is read by key by a granted app or by its writer (who holds an
  implicit privilege), and consumed by the read.
* A grant may say "keep" (OpenHarmony's readAndKeep): that app's read does not consume the data.
* IN_APP data never reaches another app, whatever grant it holds.
* Grants come from the system role: the admin token or an app holding MANAGE_UDMF_ACCESS.
* CROSS_DEVICE data synced from another device (`origin`, its device id) is read here by the same
  rules and the grants given here, but it is read-only: only its device updates or deletes it.

Across devices, a paired device is trusted to be paired, never to say which of its apps reads: the
device holding the data decides from its own records alone (`leaves_device`, `may_serve_peer`,
`consumed_by_peer`), and the bundle a peer names as its reader changes nothing:

* Only DATA_HUB and DRAG data whose share option is CROSS_DEVICE and whose visibility is ALL leaves
  the device (descriptor or fetch). IN_APP, CROSS_APP and OWN_PROCESS data never does: a peer that
  claims to read for the writer gets NOT_FOUND, as for data that does not exist.
* DATA_HUB data is public, so any paired device may read it; a read never consumes it.
* DRAG data goes to whoever fetches it first and that fetch always consumes it (a "keep" asked for by
  the peer is ignored): the drop target there was granted by that device's system role, which this
  device cannot check, but read-once bounds what a lying peer gets to what a local target would get.
* SYSTEM_SHARE, PICKER and MENU data is read by a reader the grant names. No record this device holds
  can say that a bundle on another device is that reader, so this data never leaves the device,
  whatever the peer claims (it would need grants that name a device, given here).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from udmf.config import MANAGE_UDMF_ACCESS
from udmf.errors import InvalidArgument
from udmf.keys import Intention, Key


class Visibility(enum.Enum):
    ALL = "all"
    OWN_PROCESS = "own_process"


class ShareOptions(enum.Enum):
    IN_APP = "in_app"
    CROSS_APP = "cross_app"
    CROSS_DEVICE = "cross_device"


_LEAVING = frozenset({Intention.DATA_HUB, Intention.DRAG})  # the channels whose data crosses devices


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the rules read of stored data (OpenHarmony's `Runtime` record)."""

    key: str
    intention: Intention
    writer: str
    visibility: Visibility = Visibility.ALL
    share_options: ShareOptions = ShareOptions.CROSS_APP
    grants: Mapping[str, bool] = field(default_factory=dict)  # bundle -> keep after reading
    origin: str = ""  # the device holding the data (CROSS_DEVICE data synced here); "" this one


def _visible(rt: Runtime, caller: str) -> bool:
    if caller == rt.writer:
        return True
    return rt.visibility is Visibility.ALL and rt.share_options is not ShareOptions.IN_APP


def may_query(rt: Runtime, caller: str) -> bool:
    """Whether `caller` sees the data in a QueryData (DATA_HUB only)."""
    return rt.intention is Intention.DATA_HUB and _visible(rt, caller)


def may_update(rt: Runtime, caller: str) -> bool:
    """Whether `caller` may replace the data: DATA_HUB data of this device, by its writer."""
    return rt.intention is Intention.DATA_HUB and caller == rt.writer and not rt.origin


def may_delete(rt: Runtime, caller: str) -> bool:
    """Whether a DeleteData of `caller` deletes the data (others' data is skipped, not refused)."""
    return rt.intention is Intention.DATA_HUB and caller == rt.writer and not rt.origin


def may_read_by_key(rt: Runtime, caller: str) -> bool:
    """Whether `caller` may GetData the key."""
    if rt.intention is Intention.DATA_HUB:
        return may_query(rt, caller)
    if rt.share_options is ShareOptions.IN_APP and caller != rt.writer:
        return False
    if rt.intention is Intention.DRAG:
        return caller in rt.grants
    return caller in rt.grants or caller == rt.writer


def may_read_summary(rt: Runtime, caller: str) -> bool:
    """Whether `caller` may see the types and sizes: any reader, and the writer of its own data."""
    return may_read_by_key(rt, caller) or caller == rt.writer


def consumed_after_read(rt: Runtime, caller: str) -> bool:
    """Whether a whole read by `caller` deletes the data: every channel but DATA_HUB, unless kept."""
    return rt.intention is not Intention.DATA_HUB and not rt.grants.get(caller, False)


def leaves_device(rt: Runtime) -> bool:
    """Whether this device's data may reach paired devices at all (its descriptor, a remote read):
    CROSS_DEVICE DATA_HUB or DRAG data that is not OWN_PROCESS (module docstring)."""
    return (
        rt.share_options is ShareOptions.CROSS_DEVICE
        and rt.visibility is Visibility.ALL
        and rt.intention in _LEAVING
    )


def may_serve_peer(rt: Runtime) -> bool:
    """Whether this device hands its data to a paired device that asks: its own data that leaves the
    device. Who the peer says reads does not count: a peer cannot prove it."""
    return not rt.origin and leaves_device(rt)


def consumed_by_peer(rt: Runtime) -> bool:
    """Whether a paired device's whole read consumes the data: always, but for DATA_HUB data."""
    return rt.intention is not Intention.DATA_HUB


def may_grant(is_admin: bool, permissions: Collection[str]) -> bool:
    """Whether the caller may GrantAccess: the system role."""
    return is_admin or MANAGE_UDMF_ACCESS in permissions


def check_grantable(rt: Runtime) -> None:
    """Grants make sense only where reads need them."""
    if rt.intention is Intention.DATA_HUB:
        raise InvalidArgument(f"{rt.key} is DATA_HUB data, which every app may read without a grant")


def check_insert_intention(intention: Intention | None) -> Intention:
    """The channel of an InsertData: required, and never DRAG."""
    if intention is None:
        raise InvalidArgument("InsertData needs options.intention (DATA_HUB, SYSTEM_SHARE, PICKER or MENU)")
    if intention is Intention.DRAG:
        raise InvalidArgument("drag data is set by the drag source through SetDragData, not InsertData")
    return intention


def check_drag_intention(intention: Intention | None) -> None:
    """SetDragData writes DRAG data only; its options may leave the intention unset."""
    if intention is not None and intention is not Intention.DRAG:
        raise InvalidArgument(f"SetDragData writes DRAG data, not {intention.name}: use InsertData")


def _check_match(key: Key | None, intention: Intention | None, op: str) -> Intention:
    if key is None and intention is None:
        raise InvalidArgument(f"{op} needs a key or an intention")
    if key is not None and intention is not None and key.intention is not intention:
        raise InvalidArgument(
            f"{op}: key {key} is in {key.intention.name}, but the intention given is {intention.name}"
        )
    resolved = key.intention if key is not None else intention
    assert resolved is not None
    return resolved


def check_channel_op(key: Key | None, intention: Intention | None, op: str) -> Intention:
    """QueryData and DeleteData: by key, by intention or both (which must agree); DATA_HUB only."""
    resolved = _check_match(key, intention, op)
    if resolved is Intention.DRAG:
        raise InvalidArgument(f"{op} does not work on DRAG data: the drop target reads it with GetData")
    if resolved is not Intention.DATA_HUB:
        raise InvalidArgument(
            f"{op} works on DATA_HUB only; {resolved.name} data is read by key with GetData"
        )
    return resolved


def check_update_target(key: Key | None, intention: Intention | None) -> Key:
    """UpdateData: a DATA_HUB key (and, if given, the matching intention)."""
    if key is None:
        raise InvalidArgument("UpdateData needs options.key: the key of the data to replace")
    if _check_match(key, intention, "UpdateData") is not Intention.DATA_HUB:
        raise InvalidArgument(f"UpdateData works on DATA_HUB keys only, not {key.intention.name} ({key})")
    return key

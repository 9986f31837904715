"""Which devices may hold which data: OpenHarmony's device-level rule, pure.

Data carries a security label S1 (low: app usage) … S4 (critical: credentials, health); a store's
`security_level` 1-4 is its label. Devices have a security level SL1-SL5 (what their TEE or secure
element can protect). Data goes only to a device whose level may hold its label
(`access-control-by-device-and-data-level.md`; `Security::CheckDeviceSecurityAbility`):

    SL1 → S1    SL2 → S1-S2    SL3 → S1-S3    SL4, SL5 → S1-S4

The sending side decides, from its own record of the receiver's level (set at pairing), never from
what the receiver claims about itself.
"""

from __future__ import annotations

from datamgr.errors import InvalidArgument

LABELS = range(1, 5)
DEVICE_LEVELS = range(1, 6)
_HIGHEST_LABEL = {1: 1, 2: 2, 3: 3, 4: 4, 5: 4}


def check_label(label: int) -> int:
    if not isinstance(label, int) or isinstance(label, bool) or label not in LABELS:
        raise InvalidArgument(f"invalid security label {label!r}: expected 1-4 (S1-S4)")
    return label


def check_device_level(level: int) -> int:
    if not isinstance(level, int) or isinstance(level, bool) or level not in DEVICE_LEVELS:
        raise InvalidArgument(f"invalid device security level {level!r}: expected 1-5 (SL1-SL5)")
    return level


def highest_label(device_level: int) -> int:
    """The most sensitive label a device of this level may hold."""
    return _HIGHEST_LABEL[check_device_level(device_level)]


def may_hold(device_level: int, label: int) -> bool:
    """True if a device of `device_level` (SL1-SL5) may receive data labelled `label` (S1-S4)."""
    return check_label(label) <= highest_label(device_level)


def refusal(device: str, device_level: int, label: int) -> str:
    """Why data of `label` does not go to `device`: the message of a skipped sync."""
    return (
        f"device {device} is SL{device_level} and may hold data up to S{highest_label(device_level)}; "
        f"this store is labelled S{label}"
    )

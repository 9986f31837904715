"""UDMF keys: `udmf://{intention}/{bundle}/{groupId}`, the name of one UnifiedData in a channel.

The intention segment is OpenHarmony's internal name (`DataHub`, `drag` in lower case, `SystemShare`,
`Picker`, `Menu`) and the bundle is the writer's. OpenHarmony draws the 32 groupId characters from
'0'..'z' (skipping '^'), which includes punctuation such as ':', ';', '<', '?', '[', '\\' and '`'; we
draw them from [A-Za-z0-9] only (about 190 random bits), so keys stay shell- and URL-safe. Parsing
follows OpenHarmony's checks: intention ⊂ [A-Za-z_], bundle ⊂ [A-Za-z0-9._+-].
"""

from __future__ import annotations

import enum
import re
import secrets
import string
from dataclasses import dataclass

from udmf.errors import InvalidArgument

SCHEME = "udmf://"
GROUP_ID_LENGTH = 32
GROUP_ID_ALPHABET = string.ascii_letters + string.digits
MAX_BUNDLE_LENGTH = 128
MAX_KEY_LENGTH = len(SCHEME) + len("SystemShare") + 1 + MAX_BUNDLE_LENGTH + 1 + GROUP_ID_LENGTH

_INTENTION_SEGMENT = re.compile(r"[A-Za-z_]+")
_BUNDLE = re.compile(r"[A-Za-z0-9._+-]+")
_GROUP_ID = re.compile(r"[A-Za-z0-9]+")


class Intention(enum.StrEnum):
    """A channel, valued by its key segment (OpenHarmony's internal intention names)."""

    DATA_HUB = "DataHub"
    DRAG = "drag"
    SYSTEM_SHARE = "SystemShare"
    PICKER = "Picker"
    MENU = "Menu"


@dataclass(frozen=True, slots=True)
class Key:
    intention: Intention
    bundle: str
    group_id: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.intention.value}/{self.bundle}/{self.group_id}"


def new_group_id() -> str:
    return "".join(secrets.choice(GROUP_ID_ALPHABET) for _ in range(GROUP_ID_LENGTH))


def new_key(intention: Intention, bundle: str) -> Key:
    """A fresh key for data `bundle` writes into `intention`."""
    check_bundle(bundle)
    return Key(intention, bundle, new_group_id())


def check_bundle(bundle: str) -> str:
    if not bundle or len(bundle) > MAX_BUNDLE_LENGTH or not _BUNDLE.fullmatch(bundle):
        shown = bundle[:MAX_BUNDLE_LENGTH]
        raise InvalidArgument(
            f"bundle {shown!r} must be 1-{MAX_BUNDLE_LENGTH} characters of A-Z a-z 0-9 . _ + -"
        )
    return bundle


def parse_key(text: str) -> Key:
    """The parts of a key; a malformed key or an unknown intention is an InvalidArgument."""
    shown = text if len(text) <= MAX_KEY_LENGTH else text[:MAX_KEY_LENGTH] + "..."
    if len(text) > MAX_KEY_LENGTH or not text.startswith(SCHEME):
        raise InvalidArgument(f"malformed key {shown!r}: expected udmf://<intention>/<bundle>/<groupId>")
    parts = text[len(SCHEME) :].split("/")
    if len(parts) != 3 or not all(parts):
        raise InvalidArgument(f"malformed key {shown!r}: expected udmf://<intention>/<bundle>/<groupId>")
    segment, bundle, group_id = parts
    if not _INTENTION_SEGMENT.fullmatch(segment):
        raise InvalidArgument(f"malformed key {shown!r}: the intention may hold only A-Z a-z _")
    try:
        intention = Intention(segment)
    except ValueError:
        names = ", ".join(i.value for i in Intention)
        raise InvalidArgument(f"key {shown!r} names unknown intention {segment!r} (one of {names})") from None
    if not _BUNDLE.fullmatch(bundle):
        raise InvalidArgument(f"malformed key {shown!r}: the bundle may hold only A-Z a-z 0-9 . _ + -")
    if len(group_id) != GROUP_ID_LENGTH or not _GROUP_ID.fullmatch(group_id):
        raise InvalidArgument(
            f"malformed key {shown!r}: the group id must be {GROUP_ID_LENGTH} characters of A-Z a-z 0-9"
        )
    return Key(intention, bundle, group_id)

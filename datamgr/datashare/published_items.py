"""A published item and the outcome of publishing it: what the SDK and the store (`published`) share,
without SQLAlchemy, which only the store needs.

Per-item result codes are OpenHarmony's DataShare service codes where one fits, its universal ones else.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ITEMS = 32  # items per publish call, as OpenHarmony's DataProxy (≤32 URIs per call)
MAX_SUBSCRIBER_ID = 128

OK = 0
PERMISSION_DENIED = 201  # the key names another app's data
INVALID_ITEM = 401  # no data, or a subscriber id that is too long
VERSION_NOT_NEWER = 1045  # E_VERSION_NOT_NEWER: a newer version is stored
URI_INVALID = 1048  # E_URI_NOT_EXIST: the key is not a datashareproxy URI


@dataclass(frozen=True, slots=True)
class PublishedItem:
    """One published item: its URI, its data (text or bytes) and the subscriber id it is meant for."""

    key: str
    data: str | bytes
    subscriber_id: str = ""


@dataclass(frozen=True, slots=True)
class OperationResult:
    """The outcome of one item of a publish: `result` 0 on success, else a code explained by `message`."""

    key: str
    result: int
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.result == OK

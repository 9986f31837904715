"""The UDMF data model (`@ohos.data.unifiedDataChannel`), in Python spelling.

A `UnifiedData` holds `UnifiedRecord`s; a record holds the same content in one or more types
(entries, type id -> value, in order: plain text and HTML of one paragraph). Values are those of
`udmf.values`; a struct or a value in a struct's wire form under the struct's type is kept as the
struct, so data reads back exactly as it was written. Data read from the daemon carries a `Runtime`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from udmf import structs, values
from udmf.errors import InvalidArgument
from udmf.utd import UtdRegistry

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Intention(enum.StrEnum):
    """A channel (OpenHarmony's JS values): DATA_HUB is public, DRAG is read once by the drop target,
    SYSTEM_SHARE, PICKER and MENU are read by key by an app the system grants."""

    DATA_HUB = "DataHub"
    DRAG = "Drag"
    SYSTEM_SHARE = "SystemShare"
    PICKER = "Picker"
    MENU = "Menu"


class ShareOptions(enum.IntEnum):
    """Who may read: the writing app only, apps on this device (the default), or paired devices too."""

    IN_APP = 0
    CROSS_APP = 1
    CROSS_DEVICE = 2


class Visibility(enum.IntEnum):
    """DATA_HUB visibility, honoured on insert: OWN_PROCESS hides an entry from all but its writer."""

    ALL = 0
    OWN_PROCESS = 1


class UnifiedDataProperties:
    """`tag`, `extras` (str -> value), `share_options`, and `timestamp`, which the daemon sets on write."""

    __slots__ = ("_timestamp", "extras", "share_options", "tag")

    def __init__(
        self,
        tag: str = "",
        extras: Mapping[str, Any] | None = None,
        share_options: ShareOptions = ShareOptions.CROSS_APP,
    ) -> None:
        self.tag = tag
        self.extras: dict[str, Any] = dict(extras or {})
        self.share_options = ShareOptions(share_options)
        self._timestamp = EPOCH

    @property
    def timestamp(self) -> datetime:
        """When the data was written (the epoch until then)."""
        return self._timestamp

    @classmethod
    def _read(
        cls, tag: str, extras: Mapping[str, Any], share_options: ShareOptions, timestamp: datetime
    ) -> UnifiedDataProperties:
        props = cls(tag, extras, share_options)
        props._timestamp = timestamp
        return props

    def _key(self) -> tuple[Any, ...]:
        return (self.tag, self.extras, self.share_options, self._timestamp)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnifiedDataProperties) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"UnifiedDataProperties(tag={self.tag!r}, extras={self.extras!r}, "
            f"share_options={self.share_options.name}, timestamp={self._timestamp.isoformat()})"
        )


class UnifiedRecord:
    """One item in several types. `UnifiedRecord(PlainText("hi"))` takes the struct's type;
    `UnifiedRecord("general.jpeg", jpeg_bytes)` names it; `UnifiedRecord()` starts empty."""

    __slots__ = ("_entries",)

    def __init__(self, type: str | structs.Struct | None = None, value: Any = None) -> None:
        self._entries: dict[str, Any] = {}
        if type is not None or value is not None:
            self.add_entry(type, value)

    def add_entry(self, type: str | structs.Struct | None, value: Any = None) -> None:
        """Adds (or, for a type it has, replaces) the value of `type`; a struct may stand for both."""
        if isinstance(type, structs.Struct) and value is None:
            type, value = type.type_id, type
        if type is None:
            if not isinstance(value, structs.Struct):
                raise InvalidArgument("an entry that is not a uniform data struct needs a type id")
            type = value.type_id
        if not isinstance(type, str) or not type:
            raise InvalidArgument(f"a type id must be a non-empty str, not {type!r}")
        if isinstance(value, structs.Struct) and value.type_id != type:
            raise InvalidArgument(f"a {value.__class__.__name__} is a {value.type_id}, not a {type}")
        values.check(value)
        self._put(type, value)

    def _put(self, type: str, value: Any) -> None:
        """Stores a value without checking it (the wire reader's way in, e.g. for a saved blob's Path)."""
        self._entries[type] = structs.from_value(type, value)

    def get_type(self) -> str:
        """The first entry's type ("" if the record is empty)."""
        return next(iter(self._entries), "")

    def get_value(self) -> Any:
        """The first entry's value (None if the record is empty)."""
        return next(iter(self._entries.values()), None)

    def get_entry(self, type: str) -> Any:
        """The value of `type`, None if the record has no such entry."""
        return self._entries.get(type)

    def get_entries(self) -> dict[str, Any]:
        """type id -> value, in the order they were added."""
        return dict(self._entries)

    def get_types(self) -> list[str]:
        return list(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnifiedRecord) and list(self._entries.items()) == list(
            other._entries.items()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"UnifiedRecord({self._entries!r})"


@dataclass(frozen=True, slots=True)
class Summary:
    """Bytes per type (`summary`) and in all (`total_size`), what a drop target sees before the data."""

    summary: dict[str, int] = field(default_factory=dict)
    total_size: int = 0

    @classmethod
    def of_types(cls, types: Iterable[str]) -> Summary:
        """A summary naming types without sizes (a lazy drag source's, before its data exists)."""
        return cls(dict.fromkeys(types, 0), 0)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the daemon knows of data it returns: its key, channel, writing bundle and summary; for
    CROSS_DEVICE data a paired device holds, that device's id (`device`, "" for this device's data)."""

    key: str
    intention: Intention | None
    writer: str
    summary: Summary
    device: str = ""


_registry: UtdRegistry | None = None


def _default_registry() -> UtdRegistry:
    global _registry  # noqa: PLW0603 - one preset registry per process, made on first use
    if _registry is None:
        _registry = UtdRegistry()
    return _registry


class UnifiedData:
    """Records to share, with `properties`; `runtime` is set on data read from the daemon."""

    __slots__ = ("_records", "properties", "runtime")

    def __init__(self, record: UnifiedRecord | None = None) -> None:
        self._records: list[UnifiedRecord] = []
        self.properties = UnifiedDataProperties()
        self.runtime: Runtime | None = None
        if record is not None:
            self.add_record(record)

    def add_record(self, record: UnifiedRecord) -> None:
        if not isinstance(record, UnifiedRecord):
            raise InvalidArgument(f"add_record takes a UnifiedRecord, not {type(record).__name__}")
        self._records.append(record)

    def get_records(self) -> list[UnifiedRecord]:
        return list(self._records)

    def get_types(self) -> list[str]:
        """Every entry type of every record, each once, in order."""
        return list(dict.fromkeys(t for r in self._records for t in r.get_types()))

    def has_type(self, type_id: str, registry: UtdRegistry | None = None) -> bool:
        """Whether an entry is of `type_id` or a type belonging to it (general.jpeg is a general.image).

        Relations come from `registry` (default: the preset types); a type it does not know only
        matches itself.
        """
        registry = registry or _default_registry()
        for entry_type in self.get_types():
            if entry_type == type_id:
                return True
            try:
                if type_id in registry.ancestors(entry_type):
                    return True
            except InvalidArgument:
                continue
        return False

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, UnifiedData)
            and self._records == other._records
            and self.properties == other.properties
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        key = f", key={self.runtime.key!r}" if self.runtime else ""
        return f"UnifiedData({self._records!r}, {self.properties!r}{key})"

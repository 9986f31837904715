"""Custom UTD declarations: the plain-dict form apps register and the daemon persists, and its format checks.

A declaration is a dict with the keys of `TypeDescriptor` (`type_id` and `belonging_to_types` required,
the rest optional); the exported form adds `owner_bundle`. The limits are OpenHarmony's
(`utd_cfgs_checker.cpp`, `custom_utd_json_parser.cpp`). Checks that need the registry (parents exist, no
cycles, no collisions, the total) live in `UtdRegistry`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from udmf.errors import InvalidArgument

MAX_DECLARATIONS_PER_BATCH = 50
MAX_LIST_ITEMS = 50  # parents, extensions and MIME types, each
MAX_TYPE_ID_LENGTH = 127
MAX_EXTENSION_OR_MIME_LENGTH = 127
MAX_TEXT_LENGTH = 255  # description, reference_url, icon_file
MAX_CUSTOM_TYPES = 200

TYPE_ID_PATTERN = re.compile(r"[A-Za-z0-9.-]+")
_LISTS = ("belonging_to_types", "filename_extensions", "mime_types")
_TEXTS = ("description", "reference_url", "icon_file")
KEYS = frozenset({"type_id", *_LISTS, *_TEXTS})


@dataclass(frozen=True, slots=True)
class Declaration:
    """One validated custom type, with the bundle that owns it."""

    type_id: str
    belonging_to_types: tuple[str, ...]
    description: str
    reference_url: str
    icon_file: str
    filename_extensions: tuple[str, ...]
    mime_types: tuple[str, ...]
    owner_bundle: str

    def to_dict(self) -> dict[str, object]:
        """The persisted form: lists as lists, `owner_bundle` included."""
        return {
            "type_id": self.type_id,
            "belonging_to_types": list(self.belonging_to_types),
            "description": self.description,
            "reference_url": self.reference_url,
            "icon_file": self.icon_file,
            "filename_extensions": list(self.filename_extensions),
            "mime_types": list(self.mime_types),
            "owner_bundle": self.owner_bundle,
        }


def check_owner_bundle(owner_bundle: object) -> str:
    if not isinstance(owner_bundle, str) or not owner_bundle:
        raise InvalidArgument("owner_bundle must be a non-empty string")
    return owner_bundle


def parse(raw: Mapping[str, object], owner_bundle: str) -> Declaration:
    """Check one declaration's format; raise InvalidArgument naming the type and the rule it breaks."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"a declaration must be a mapping, not {type(raw).__name__}")
    type_id = raw.get("type_id")
    if not isinstance(type_id, str) or not type_id:
        raise InvalidArgument("a declaration needs a non-empty string type_id")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise InvalidArgument(f"{type_id}: unknown keys {unknown}")
    if len(type_id) > MAX_TYPE_ID_LENGTH:
        raise InvalidArgument(f"{type_id[:40]}...: type_id longer than {MAX_TYPE_ID_LENGTH} characters")
    if not TYPE_ID_PATTERN.fullmatch(type_id):
        raise InvalidArgument(f"{type_id}: type_id may hold only A-Z a-z 0-9 '.' '-'")
    if not type_id.startswith(owner_bundle + ".") or len(type_id) == len(owner_bundle) + 1:
        raise InvalidArgument(f"{type_id}: type_id must be '{owner_bundle}.<name>' (prefixed by its bundle)")
    lists = {key: _strings(raw, key, type_id) for key in _LISTS}
    texts = {key: _text(raw, key, type_id) for key in _TEXTS}
    if not lists["belonging_to_types"]:
        raise InvalidArgument(f"{type_id}: belonging_to_types must name at least one parent")
    for ext in lists["filename_extensions"]:
        if not ext.startswith(".") or len(ext) < 2:
            raise InvalidArgument(f"{type_id}: filename extension {ext!r} must start with '.'")
    for value in (*lists["filename_extensions"], *lists["mime_types"]):
        if not value or len(value) > MAX_EXTENSION_OR_MIME_LENGTH:
            raise InvalidArgument(
                f"{type_id}: extensions and MIME types must be 1..{MAX_EXTENSION_OR_MIME_LENGTH} characters"
            )
    return Declaration(
        type_id=type_id,
        belonging_to_types=lists["belonging_to_types"],
        description=texts["description"],
        reference_url=texts["reference_url"],
        icon_file=texts["icon_file"],
        filename_extensions=lists["filename_extensions"],
        mime_types=lists["mime_types"],
        owner_bundle=owner_bundle,
    )


def parse_persisted(raw: Mapping[str, object]) -> Declaration:
    """Parse one dict of `Declaration.to_dict`'s form (as the daemon stored it)."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"a declaration must be a mapping, not {type(raw).__name__}")
    fields = dict(raw)
    owner_bundle = check_owner_bundle(fields.pop("owner_bundle", None))
    return parse(fields, owner_bundle)


def _strings(raw: Mapping[str, object], key: str, type_id: str) -> tuple[str, ...]:
    value = raw.get(key, ())
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidArgument(f"{type_id}: {key} must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"{type_id}: {key} must be a list of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise InvalidArgument(f"{type_id}: more than {MAX_LIST_ITEMS} {key}")
    return tuple(value)


def _text(raw: Mapping[str, object], key: str, type_id: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgument(f"{type_id}: {key} must be a string")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidArgument(f"{type_id}: {key} longer than {MAX_TEXT_LENGTH} characters")
    return value

"""Flexible type ids: the UTD a lookup returns when no declared type has the extension or MIME type.

The encoding is OpenHarmony's (`flexible_type.cpp`), so ids made here equal the ids a device makes::

    id      = "flex.z" + base32(payload)       RFC 4648 alphabet, lower case, no '=' padding, of UTF-8
    payload = "?" ["0=" belongs_to] [":1=" mime] [":2=" ext]

e.g. `?:2=.xyz` for an unknown extension, `?0=general.image:1=image/x-foo` for a MIME type constrained
to images. OpenHarmony rejects values containing `?:=\\`; here a value escapes `\\` and `:` with a
backslash instead, so every string round-trips and ids of the values OpenHarmony accepts are unchanged.
Decoding accepts only the canonical id of its fields, so each flexible type has exactly one id.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

PREFIX = "flex.z"
MAX_VALUE_LENGTH = 127  # a longer value is refused by OpenHarmony's decoder too

_KEYS = {"0": "belongs_to", "1": "mime_type", "2": "filename_extension"}


class FlexibleFields(NamedTuple):
    """What a flexible id carries; at least one of `mime_type`/`filename_extension` is set."""

    belongs_to: str | None
    mime_type: str | None
    filename_extension: str | None


def is_flexible(type_id: str) -> bool:
    return type_id.startswith(PREFIX)


def encode(fields: FlexibleFields) -> str:
    """The flexible id of `fields` (values already normalised by the caller, e.g. lower-cased)."""
    payload = "?"
    if fields.belongs_to:
        payload += "0=" + _escape(fields.belongs_to)
    if fields.mime_type:
        payload += ":1=" + _escape(fields.mime_type)
    if fields.filename_extension:
        payload += ":2=" + _escape(fields.filename_extension)
    return PREFIX + base64.b32encode(payload.encode()).decode("ascii").rstrip("=").lower()


def decode(type_id: str) -> FlexibleFields | None:
    """The fields of a canonical flexible id, or None if `type_id` is not one."""
    if not is_flexible(type_id):
        return None
    body = type_id[len(PREFIX) :]
    if not body or body != body.lower():
        return None
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        payload = raw.decode()
    except (binascii.Error, ValueError):
        return None
    if not payload.startswith("?"):
        return None
    values: dict[str, str] = {}
    pieces = _split(payload[1:])
    if pieces is None:
        return None
    for piece in pieces:
        if not piece:
            continue
        key, sep, value = piece.partition("=")
        if not sep or key not in _KEYS or key in values or not value or len(value) > MAX_VALUE_LENGTH:
            return None
        values[key] = value
    fields = FlexibleFields(values.get("0"), values.get("1"), values.get("2"))
    if fields.mime_type is None and fields.filename_extension is None:
        return None
    return fields if encode(fields) == type_id else None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _split(text: str) -> list[str] | None:
    """`text` cut at unescaped ':' and unescaped; None on a dangling backslash."""
    pieces: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                return None
            current.append(nxt)
        elif ch == ":":
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return pieces

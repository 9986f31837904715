"""What a device says about itself over mDNS: its TXT properties, encoded and validated.

A daemon advertises `<device id>._datamgr._tcp.local.`; the SRV record carries its peer port (the TCP
port of peer RPCs, 0 while it has none) and the TXT record these keys (RFC 6763: short keys, one
`key=value` item of at most 255 bytes each):

    txtvers=1   this layout           pv=1      the datamgr peer protocol version
    id=...      the device id         sl=3      the device security level, SL1-SL5
    name=...    the device's name     fp=...    its certificate fingerprint (unverified until paired)
    caps=...    comma list of capabilities, `name` or `name=value`, e.g. `datashare,udmf,ai=smollm2-135m`

Everything read from the network is untrusted: a missing or bad id, pv or sl makes the advert invalid
(`BadAdvert`); a bad name, fingerprint or capability is dropped and reported, the rest is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datamgr.config import check_device_name

SERVICE_TYPE = "_datamgr._tcp.local."
TXT_VERSION = "1"
PROTOCOL_VERSION = 1

MAX_ID = 64
MAX_FINGERPRINT = 128
MAX_CAPABILITIES = 32
MAX_ITEM_BYTES = 255  # one TXT item (`key=value`) has a one-byte length prefix
MAX_ADDRESSES = 8

_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID}}}")
_FINGERPRINT = re.compile(rf"[\x21-\x7e]{{1,{MAX_FINGERPRINT}}}")  # visible ASCII: hex, base64, colons
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}(=[A-Za-z0-9][A-Za-z0-9._+-]{0,63})?")
_SMALL_INT = re.compile(r"[0-9]{1,5}")


class BadAdvert(ValueError):
    """An advert from the network that cannot be used (its reason is the message)."""


@dataclass(frozen=True, slots=True)
class Advert:
    """A device's self-description, as advertised in TXT (the port and addresses come from SRV and A)."""

    device_id: str
    name: str
    security_level: int
    fingerprint: str = ""
    capabilities: tuple[str, ...] = ()
    protocol_version: int = PROTOCOL_VERSION


def instance_name(device_id: str) -> str:
    """The mDNS service instance name of a device: its id (cut to a DNS label's 63 bytes)."""
    return f"{device_id[:63]}.{SERVICE_TYPE}"


def encode_txt(advert: Advert) -> tuple[dict[str, str], list[str]]:
    """The TXT properties of our own advert, and the capabilities left out because they did not fit.

    Raises ValueError for an id, name, level or fingerprint that peers would reject: the composition
    root handed in something wrong."""
    if not _ID.fullmatch(advert.device_id):
        raise ValueError(f"device id {advert.device_id!r}: 1-{MAX_ID} of A-Z a-z 0-9 _ -")
    check_device_name(advert.name)
    if not 1 <= advert.security_level <= 5:
        raise ValueError(f"security level {advert.security_level}: 1-5 (SL1-SL5)")
    if advert.fingerprint and not _FINGERPRINT.fullmatch(advert.fingerprint):
        raise ValueError(f"fingerprint {advert.fingerprint!r}: 1-{MAX_FINGERPRINT} visible ASCII characters")
    caps: list[str] = []
    left_out: list[str] = []
    size = len("caps=")
    for cap in dict.fromkeys(advert.capabilities):
        cost = len(cap) + (1 if caps else 0)
        if not _CAPABILITY.fullmatch(cap) or len(caps) == MAX_CAPABILITIES or size + cost > MAX_ITEM_BYTES:
            left_out.append(cap)
            continue
        caps.append(cap)
        size += cost
    txt = {
        "txtvers": TXT_VERSION,
        "id": advert.device_id,
        "name": advert.name,
        "pv": str(advert.protocol_version),
        "sl": str(advert.security_level),
    }
    if advert.fingerprint:
        txt["fp"] = advert.fingerprint
    if caps:
        txt["caps"] = ",".join(caps)
    return txt, left_out


def decode_txt(properties: dict[bytes, bytes | None]) -> tuple[Advert, list[str]]:
    """The advert in TXT properties from the network, and notes on the values dropped from it.

    Keys are case-insensitive (RFC 6763 §6.4); unknown keys are ignored, so later versions may add some.
    """
    props: dict[str, bytes | None] = {}
    for key, value in properties.items():
        try:
            props.setdefault(key.decode("ascii").lower(), value)
        except UnicodeDecodeError:
            continue
    version = _text(props, "txtvers")
    if version is not None and version != TXT_VERSION:
        raise BadAdvert(f"unsupported txtvers {version[:16]!r}")
    device_id = _text(props, "id")
    if device_id is None or not _ID.fullmatch(device_id):
        raise BadAdvert(f"bad or missing id {_short(device_id)}")
    protocol_version = _small_int(props, "pv", 1, 65535)
    security_level = _small_int(props, "sl", 1, 5)
    notes: list[str] = []
    name = _text(props, "name") or ""
    try:
        check_device_name(name)
    except ValueError:
        notes.append(f"bad name {_short(name)} ignored")
        name = ""
    fingerprint = _text(props, "fp") or ""
    if fingerprint and not _FINGERPRINT.fullmatch(fingerprint):
        notes.append(f"bad fingerprint {_short(fingerprint)} ignored")
        fingerprint = ""
    caps: list[str] = []
    for cap in (_text(props, "caps") or "").split(","):
        if not cap:
            continue
        if not _CAPABILITY.fullmatch(cap) or len(caps) == MAX_CAPABILITIES:
            notes.append(f"capability {_short(cap)} ignored")
        elif cap not in caps:
            caps.append(cap)
    advert = Advert(device_id, name, security_level, fingerprint, tuple(caps), protocol_version)
    return advert, notes


def _text(props: dict[str, bytes | None], key: str) -> str | None:
    value = props.get(key)
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "\x00(not UTF-8)"  # fails every check below: reported as a bad value


def _small_int(props: dict[str, bytes | None], key: str, low: int, high: int) -> int:
    text = _text(props, key)
    if text is None or not _SMALL_INT.fullmatch(text) or not low <= int(text) <= high:
        raise BadAdvert(f"bad or missing {key} {_short(text)} (expected {low}-{high})")
    return int(text)


def _short(value: str | None) -> str:
    """A value for a log line: quoted, at most 40 characters, control characters escaped."""
    if value is None:
        return "(none)"
    return repr(value[:40] + ("..." if len(value) > 40 else ""))

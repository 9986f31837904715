"""DataShare URIs: `datashare:///{bundle}/{store}/{table}` and `datashareproxy://{bundle}/{path}`.

The empty authority in `datashare:///` is OpenHarmony's device-id slot; this daemon serves only its
own device there, so a non-empty authority is refused.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from datamgr.bundles import check_bundle
from datamgr.errors import InvalidArgument

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_URI_BYTES = 4096


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid {what} {name!r}: letters, digits and _ only, 1-64 characters")
    return name


def _check_printable(uri: str) -> None:
    """Control characters anywhere are refused: urlsplit would silently drop a tab or newline."""
    if not uri.isprintable():
        raise InvalidArgument(f"uri {uri!r} holds a control character (a tab, a newline, ...)")


@dataclass(frozen=True, slots=True)
class DataShareUri:
    """A parsed `datashare:///bundle/...` URI. `store`/`table` are set for table URIs."""

    bundle: str
    path: tuple[str, ...]

    @property
    def is_table(self) -> bool:
        return len(self.path) == 2

    @property
    def store(self) -> str:
        return self.path[0]

    @property
    def table(self) -> str:
        return self.path[1]

    def __str__(self) -> str:
        return "datashare:///" + "/".join((self.bundle, *self.path))


@functools.lru_cache(maxsize=4096)
def parse_uri(uri: str) -> DataShareUri:
    """Parses a `datashare:///` URI; raises InvalidArgument with the reason when it is malformed."""
    if not isinstance(uri, str) or not uri:
        raise InvalidArgument("uri is empty")
    if len(uri.encode()) > MAX_URI_BYTES:
        raise InvalidArgument(f"uri longer than {MAX_URI_BYTES} bytes")
    _check_printable(uri)
    parts = urlsplit(uri)
    # urlsplit forgives a leading space, an upper-case scheme and `datashare:/x`; the wire form is exact.
    if parts.scheme != "datashare" or not uri.startswith("datashare://"):
        raise InvalidArgument(f"malformed uri {uri!r}: expected datashare:///{{bundle}}/{{store}}/{{table}}")
    if parts.netloc:
        raise InvalidArgument(
            f"uri {uri!r} names device {parts.netloc!r}; only this device (datashare:///...) is served"
        )
    if parts.query or parts.fragment:
        raise InvalidArgument(f"uri {uri!r}: query parameters and fragments are not supported")
    segments = parts.path.split("/")
    if len(segments) < 2 or segments[0] != "" or any(s == "" for s in segments[1:]):
        raise InvalidArgument(f"malformed uri {uri!r}: expected datashare:///{{bundle}}/{{store}}/{{table}}")
    bundle = check_bundle(segments[1])
    path = tuple(segments[2:])
    for seg in path:
        check_name(seg, "uri segment")
    return DataShareUri(bundle, path)


def parse_table_uri(uri: str) -> DataShareUri:
    parsed = parse_uri(uri)
    if not parsed.is_table:
        raise InvalidArgument(
            f"uri {uri!r} does not name a table: expected datashare:///{{bundle}}/{{store}}/{{table}}"
        )
    return parsed


@dataclass(frozen=True, slots=True)
class ProxyUri:
    """A parsed `datashareproxy://{bundle}/{path}` URI (published data)."""

    bundle: str
    path: str

    def __str__(self) -> str:
        return f"datashareproxy://{self.bundle}/{self.path}"


_PROXY_PATH_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,256}$")


def parse_proxy_uri(uri: str) -> ProxyUri:
    if not isinstance(uri, str) or not uri.startswith("datashareproxy://"):
        raise InvalidArgument(f"malformed uri {uri!r}: expected datashareproxy://{{bundle}}/{{path}}")
    if len(uri.encode()) > 256 + len("datashareproxy://") + 128:
        raise InvalidArgument("datashareproxy uri too long")
    _check_printable(uri)
    rest = uri[len("datashareproxy://") :]
    bundle, sep, path = rest.partition("/")
    if not sep or not path or not _PROXY_PATH_RE.fullmatch(path) or "//" in path:
        raise InvalidArgument(f"malformed uri {uri!r}: expected datashareproxy://{{bundle}}/{{path}}")
    return ProxyUri(check_bundle(bundle), path)

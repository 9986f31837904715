"""The text a UnifiedRecord holds, for a reader that wants its words (a grounded chat's prompt).

Text is a plain-text struct's content, an HTML entry as its text (its plain_content, else its markup
without tags, scripts and styles), a hyperlink's description and URL, a content form's title,
description and link, and a string (or UTF-8 bytes) under any type that belongs to general.text.
Files, images, pixel maps and app-defined bytes have none. A record holds one content in several types
(the plain text and the HTML of one paragraph), so its text is one entry's: the first plain text
(general.plain-text or a type belonging to it) if it has one, else the first entry with text.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from udmf import structs
from udmf.data import UnifiedRecord
from udmf.errors import InvalidArgument
from udmf.utd import UtdRegistry

TEXT = "general.text"
PLAIN_TEXT = "general.plain-text"
HTML = "general.html"
_FEED = 1 << 16  # markup characters parsed at a time, until the text is long enough


def record_text(record: UnifiedRecord, registry: UtdRegistry, max_chars: int) -> str:
    """The record's text, at most `max_chars` characters ("" if it has none)."""
    found = ""
    for type_id, value in record.get_entries().items():
        ancestors = _ancestors(registry, type_id)
        text = _text(value, ancestors, max_chars).strip()
        if text and PLAIN_TEXT in ancestors:
            return text[:max_chars]
        found = found or text
    return found[:max_chars]


def _ancestors(registry: UtdRegistry, type_id: str) -> frozenset[str]:
    try:
        return registry.ancestors(type_id)
    except InvalidArgument:  # a type the registry does not know (an app's type since unregistered)
        return frozenset((type_id,))


def _text(value: Any, ancestors: frozenset[str], max_chars: int) -> str:
    if isinstance(value, structs.PlainText):
        return "\n".join(t for t in (value.abstract, value.text_content) if t)
    if isinstance(value, structs.HTML):
        return value.plain_content or html_text(value.html_content, max_chars)
    if isinstance(value, structs.Hyperlink):
        return f"{value.description} ({value.url})" if value.description else value.url
    if isinstance(value, structs.ContentForm):
        return "\n".join(t for t in (value.title, value.description, value.link_uri) if t)
    if TEXT not in ancestors:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode()
        except UnicodeDecodeError:
            return ""
    if not isinstance(value, str):
        return ""
    return html_text(value, max_chars) if HTML in ancestors else value


# fmt: off
_BLOCKS = frozenset((  # elements that end a line of text
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "footer",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "table", "td", "th", "title", "tr", "ul",
))
# fmt: on


class _Text(HTMLParser):
    """Collects the text of HTML outside script and style elements; a block element breaks the line."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.size = 0
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)
            self.size += len(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).split("\n"))
        return "\n".join(line for line in lines if line)


def html_text(markup: str, max_chars: int) -> str:
    """The text of `markup`, parsed only until it gave `max_chars` characters of text."""
    parser = _Text()
    for start in range(0, len(markup), _FEED):
        parser.feed(markup[start : start + _FEED])
        if parser.size >= max_chars:
            break
    else:
        parser.close()
    return parser.text()[:max_chars]

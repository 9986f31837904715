"""The AI service's grounded chats read DataShare tables as the calling app (aicap.grounding.Retriever).

The daemon hands over DataShareService.retrieve_as, which checks the app's read permission exactly as
Query does: a table the app may not read is PermissionDenied, and the chat fails before anything runs.
A row enters the prompt as its columns' text, one "name: value" line each (blobs left out), the
column that matched first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aicap.grounding import Passage, Source

RetrieveAs = Callable[..., Awaitable[list[Any]]]  # DataShareService.retrieve_as


class DataShareRetriever:
    def __init__(self, retrieve_as: RetrieveAs) -> None:
        self._retrieve_as = retrieve_as

    async def retrieve(self, app: str, source: Source, query: str) -> list[Passage]:
        rows = await self._retrieve_as(app, source.uri, query, source.k, source.predicates or None)
        return [Passage(r.uri, r.row_id, r.score, row_text(r.values, r.column)) for r in rows]


def row_text(values: dict[str, Any], first: str) -> str:
    """The row as the model reads it: the matched column first, then the others; no blobs."""
    names = sorted(values, key=lambda name: name != first)
    lines = []
    for name in names:
        value = values[name]
        if value is None or isinstance(value, bytes | bytearray):
            continue
        if name == first:
            lines.append(str(value))
        else:
            lines.append(f"{name}: {value}")
    return "\n".join(lines)

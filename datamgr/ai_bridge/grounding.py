"""The AI service's grounded chats read their sources as the calling app (aicap.grounding.Retriever).

The daemon hands over what each data service offers for reading as an app, with that app's own checks:
DataShareService.retrieve_as (the table's read permission, as Query), KvService.entries_as (the app's
own stores only, as GetEntries) and UdmfService.check_read_as/texts_as (GetData's rules; drag data
is consumed). A source the app may not read fails the chat before anything runs.

- A DataShare row enters the prompt as its columns' text, one "name: value" line each (blobs left
  out), the column that matched first.
- A KV store has no index: its first ai.max_context_scan entries with the prefix (at most
  ai.max_context_scan_bytes of values) are ranked by BM25 (`lexical`) over their keys and values; the
  best k enter, a string as it is, a number or boolean as JSON; bytes never.
- UDMF data enters as one passage per record with text (`udmf.text`), in record order, score 1.0.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aicap.grounding import Passage, Source
from datamgr.ai_bridge import lexical

RetrieveAs = Callable[..., Awaitable[list[Any]]]  # DataShareService.retrieve_as
EntriesAs = Callable[[str, str, str, int, int], Awaitable[list[tuple[str, Any]]]]  # KvService.entries_as
Limit = tuple[int, str]  # most bytes, the setting's name
CheckUdmf = Callable[[str, str, Limit], Awaitable[None]]  # UdmfService.check_read_as
UdmfTexts = Callable[[str, str, Limit, int], Awaitable[list[str]]]  # UdmfService.texts_as


@dataclass(frozen=True, slots=True)
class Bounds:
    scan_entries: int  # ai.max_context_scan: KV entries read per source
    scan_bytes: int  # ai.max_context_scan_bytes: of their values
    udmf_bytes: int  # ai.max_context_udmf_bytes: the largest UDMF data read
    text_chars: int  # ai.max_passage_chars: of a UDMF record's text, extracted


class AppRetriever:
    def __init__(
        self,
        datashare: RetrieveAs,
        kv: EntriesAs,
        udmf_check: CheckUdmf,
        udmf_texts: UdmfTexts,
        bounds: Bounds,
    ) -> None:
        self._datashare = datashare
        self._kv = kv
        self._udmf_check = udmf_check
        self._udmf_texts = udmf_texts
        self._bounds = bounds
        self._udmf_limit = (bounds.udmf_bytes, "ai.max_context_udmf_bytes")
        # one ranking per app at a time: an app's many chats queue behind each other, not beside others'
        self._ranking: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(1))

    async def check(self, app: str, source: Source) -> None:
        if source.kind == "udmf":
            await self._udmf_check(app, source.uri, self._udmf_limit)

    async def retrieve(self, app: str, source: Source, query: str) -> list[Passage]:
        if source.kind == "kv":
            return await self._entries(app, source, query)
        if source.kind == "udmf":
            texts = await self._udmf_texts(app, source.uri, self._udmf_limit, self._bounds.text_chars)
            return [Passage(source.uri, i, 1.0, text) for i, text in enumerate(texts) if text]
        rows = await self._datashare(app, source.uri, query, source.k, source.predicates or None)
        return [Passage(r.uri, r.row_id, r.score, row_text(r.values, r.column)) for r in rows]

    async def _entries(self, app: str, source: Source, query: str) -> list[Passage]:
        b = self._bounds
        found = await self._kv(app, source.store, source.prefix, b.scan_entries, b.scan_bytes)
        entries = [(key, text) for key, value in found if (text := value_text(value)) is not None]
        texts = [f"{key}\n{text}" for key, text in entries]
        async with self._ranking[app]:
            ranked = await asyncio.to_thread(lexical.rank, texts, query, source.k)
        return [Passage(source.uri, -1, score, entries[i][1], entries[i][0]) for i, score in ranked]


def value_text(value: Any) -> str | None:
    """A KV value as the model reads it: a string as it is, a number or boolean as JSON; None for bytes."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


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

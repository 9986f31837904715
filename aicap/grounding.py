"""Grounded answers: a chat's `context` sources are retrieved as the calling app, and what was found
goes into the prompt, before the question, within the context size; the answer's last chunk cites it.

aicap knows nothing of DataShare, KV stores or UDMF: the daemon gives the service a `Retriever`
(datamgr.ai_bridge), which retrieves as the app with the app's own permissions, so nothing the app could
not read itself reaches its prompt. A UDMF read may consume the data (drag data is read once), so UDMF
sources are read last: after every other source was read and every UDMF source checked, so that a
refused source consumes nothing. The passages go into the last user message, not into a system message
of their own: every chat template takes that, and the model reads them right before the question.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aicap.errors import InvalidArgument

DEFAULT_K = 4
INTRO = (
    "Answer the question from these sources; cite the ones you use by their number, like [1]. "
    "If they do not hold the answer, say so."
)


KINDS = ("datashare", "kv", "udmf")  # ContextSource's oneof
MAX_PREFIX_BYTES = 1024  # a KV key's most bytes
MAX_STORE_CHARS = 128  # a KV store name's most characters


@dataclass(frozen=True, slots=True)
class Source:
    """One checked pb.ContextSource. `kind` "datashare": `uri` a table, `predicates`; "kv": `store` one
    of the app's KV stores, `prefix` its keys'; "udmf": `uri` a udmf:// key (every record, k unused)."""

    uri: str
    k: int
    predicates: bytes = b""  # a serialized datamgr.v1.Predicates; empty: every row
    query: str = ""  # empty: the last user message
    kind: str = "datashare"
    store: str = ""
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved row, KV entry (`key`) or UDMF record (row_id: its index) as it enters the prompt."""

    uri: str
    row_id: int
    score: float
    text: str
    key: str = ""


class Retriever(Protocol):
    async def check(self, app: str, source: Source) -> None:
        """Raises what `retrieve` would for a source `app` may not read, without reading it (UDMF
        sources, whose read may consume them, are all checked before any is read)."""
        ...

    async def retrieve(self, app: str, source: Source, query: str) -> list[Passage]:
        """The rows of `source` best matching `query`, read as `app` (its read permission; the
        DataShare, KV or UDMF errors, e.g. PermissionDenied, otherwise)."""
        ...


def sources(items: Sequence[Any], max_sources: int, max_k: int) -> list[Source]:
    """The request's context sources (pb.ContextSource), checked: InvalidArgument for a bad one."""
    if len(items) > max_sources:
        raise InvalidArgument(
            f"{len(items)} context sources are more than ai.max_context_sources ({max_sources})"
        )
    out = [_source(i, item, max_k) for i, item in enumerate(items)]
    keys = [s.uri for s in out if s.kind == "udmf"]
    if len(set(keys)) < len(keys):  # a second read of drag data finds it consumed by the first
        raise InvalidArgument("a UDMF key is named twice among the context sources")
    return out


def _source(i: int, item: Any, max_k: int) -> Source:
    kind = item.WhichOneof("source")
    if kind not in KINDS:
        raise InvalidArgument(f"context source {i} names no source ({', '.join(KINDS)})")
    if kind == "udmf":
        if not item.udmf.key.startswith("udmf://"):
            raise InvalidArgument(f"context source {i}: {item.udmf.key!r} is not a udmf:// key")
        return Source(item.udmf.key, 0, kind="udmf")
    msg = getattr(item, kind)
    if msg.k > max_k:
        raise InvalidArgument(f"context source {i} asks for {msg.k} rows; at most {max_k}")
    k = msg.k or DEFAULT_K
    if kind == "datashare":
        if not msg.uri.startswith("datashare:///"):
            raise InvalidArgument(f"context source {i}: {msg.uri!r} is not a datashare:/// table URI")
        return Source(msg.uri, k, msg.predicates, msg.query)
    if not msg.store or len(msg.store) > MAX_STORE_CHARS:
        raise InvalidArgument(f"context source {i} names no KV store (1 to {MAX_STORE_CHARS} characters)")
    if len(msg.key_prefix.encode()) > MAX_PREFIX_BYTES:
        raise InvalidArgument(f"context source {i}: a key prefix is at most {MAX_PREFIX_BYTES} bytes")
    return Source(f"kv://{msg.store}", k, query=msg.query, kind="kv", store=msg.store, prefix=msg.key_prefix)


async def retrieve(retriever: Retriever, app: str, found: Sequence[Source], question: str) -> list[Passage]:
    """Every source's passages, read as `app`: the sources that only read first, together; then, once
    they all succeeded and every UDMF source passed its check, the UDMF sources, one at a time."""
    consuming = [s for s in found if s.kind == "udmf"]
    others = [s for s in found if s.kind != "udmf"]
    batches = await asyncio.gather(*(retriever.retrieve(app, s, s.query or question) for s in others))
    for s in consuming:
        await retriever.check(app, s)
    for s in consuming:
        batches.append(await retriever.retrieve(app, s, question))
    return [p for batch in batches for p in batch]


def last_user(messages: Sequence[dict[str, Any]]) -> int:
    """The index of the last user message (the question); InvalidArgument if there is none."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user" and isinstance(messages[i].get("content"), str):
            return i
    raise InvalidArgument("a grounded chat (context) needs a user message: the question")


def pack(
    passages: Sequence[Passage], budget: int, count: Callable[[str], int], max_chars: int
) -> list[Passage]:
    """The best passages, each cut to `max_chars`, whose blocks fit `budget` tokens together
    (`count` tokenizes); best first: ranks of several sources interleave by score order."""
    chosen: list[Passage] = []
    used = count(INTRO)
    for found in sorted(passages, key=lambda p: -p.score):
        cut = Passage(found.uri, found.row_id, found.score, found.text[:max_chars], found.key)
        cost = count(block(len(chosen) + 1, cut))
        if used + cost > budget:
            continue  # a shorter one further down may still fit
        chosen.append(cut)
        used += cost
    return chosen


def block(number: int, p: Passage) -> str:
    return f"[{number}] ({p.uri}, {locator(p.uri, p.row_id, p.key)})\n{p.text}\n"


def locator(uri: str, row_id: int, key: str) -> str:
    """How a citation names what it cites within its source: a KV entry by key, a UDMF record by its
    index, a DataShare row by id."""
    if key:
        return f"key {key!r}"
    return f"record {row_id}" if uri.startswith("udmf://") else f"row {row_id}"


def grounded(messages: list[dict[str, Any]], passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """`messages` with the passages put before the question in its last user message."""
    i = last_user(messages)
    out = [dict(m) for m in messages]
    blocks = "".join(block(n, p) for n, p in enumerate(passages, 1))
    body = blocks if passages else "(no source matched)\n"
    out[i]["content"] = f"{INTRO}\n\n{body}\nQuestion: {messages[i]['content']}"
    return out

"""Grounded answers: a chat's `context` sources are retrieved as the calling app, and what was found
goes into the prompt, before the question, within the context size; the answer's last chunk cites it.

aicap knows nothing of DataShare: the daemon gives the service a `Retriever` (datamgr.ai_bridge), which
retrieves as the app with the app's own permissions, so nothing the app could not read itself reaches
its prompt. The passages go into the last user message, not into a system message of their own: every
chat template takes that, and the model reads them right before the question.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aicap.errors import InvalidArgument

DEFAULT_K = 4
INTRO = (
    "Answer the question from these sources; cite the ones you use by their number, like [1]. "
    "If they do not hold the answer, say so."
)


@dataclass(frozen=True, slots=True)
class Source:
    """A DataShare table to retrieve from (pb.DataShareSource, checked)."""

    uri: str
    k: int
    predicates: bytes  # a serialized datamgr.v1.Predicates; empty: every row
    query: str  # empty: the last user message


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved row as it enters the prompt."""

    uri: str
    row_id: int
    score: float
    text: str


class Retriever(Protocol):
    async def retrieve(self, app: str, source: Source, query: str) -> list[Passage]:
        """The rows of `source` best matching `query`, read as `app` (its read permission; the
        DataShare errors, e.g. PermissionDenied, otherwise)."""
        ...


def sources(items: Sequence[Any], max_sources: int, max_k: int) -> list[Source]:
    """The request's context sources (pb.ContextSource), checked: InvalidArgument for a bad one."""
    if len(items) > max_sources:
        raise InvalidArgument(
            f"{len(items)} context sources are more than ai.max_context_sources ({max_sources})"
        )
    out = []
    for i, item in enumerate(items):
        if item.WhichOneof("source") != "datashare":
            raise InvalidArgument(f"context source {i} names no source (datashare)")
        ds = item.datashare
        if not ds.uri.startswith("datashare:///"):
            raise InvalidArgument(f"context source {i}: {ds.uri!r} is not a datashare:/// table URI")
        if ds.k > max_k:
            raise InvalidArgument(f"context source {i} asks for {ds.k} rows; at most {max_k}")
        out.append(Source(ds.uri, ds.k or DEFAULT_K, ds.predicates, ds.query))
    return out


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
        cut = Passage(found.uri, found.row_id, found.score, found.text[:max_chars])
        cost = count(block(len(chosen) + 1, cut))
        if used + cost > budget:
            continue  # a shorter one further down may still fit
        chosen.append(cut)
        used += cost
    return chosen


def block(number: int, p: Passage) -> str:
    return f"[{number}] ({p.uri}, row {p.row_id})\n{p.text}\n"


def grounded(messages: list[dict[str, Any]], passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """`messages` with the passages put before the question in its last user message."""
    i = last_user(messages)
    out = [dict(m) for m in messages]
    blocks = "".join(block(n, p) for n, p in enumerate(passages, 1))
    body = blocks if passages else "(no source matched)\n"
    out[i]["content"] = f"{INTRO}\n\n{body}\nQuestion: {messages[i]['content']}"
    return out

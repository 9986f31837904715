"""The SDK's sessions and pinned contexts (the daemon's CreateSession/PinContext, aicap.conversations).

with AiClient.connect() as ai:
    s = ai.create_session("You are a terse assistant.")
    print(s.chat("What is the capital of France?").text)
    print(s.chat("And of Italy?").text)          # only the new turn is sent; earlier turns' KV is reused
    s.transcript                                   # [{"role": "user", ...}, {"role": "assistant", ...}, ...]
    s.close()
    ai.pin_context("desk", "You are the help desk of a bakery.")
    ai.chat([("user", "When do you open?")], pinned_context="desk")

A session keeps its transcript in the daemon (in memory: a daemon restart loses it, NotFound after);
one turn at a time (a second is FailedPrecondition); a transcript past the model's context is
FailedPrecondition. Pinned contexts are per app, kept until unpinned or the daemon restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

from aicap._messages import Completion, Messages, Sampling
from aicap.v1 import aicap_pb2 as pb

if TYPE_CHECKING:
    from aicap.client import AiClient, AsyncAiClient, AsyncCompletionStream, CompletionStream

Turn = str | Messages
"""A session turn: the user's text, or messages (user and assistant only)."""


def turn_messages(turn: Turn) -> Messages:
    return [("user", turn)] if isinstance(turn, str) else turn


def transcript_of(msg: pb.Session) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in msg.transcript]


@dataclass(frozen=True, slots=True)
class PinnedContext:
    name: str
    model: str
    tokens: int  # of the pinned text rendered as the model's system message


def pinned_from_proto(msg: pb.PinnedContext) -> PinnedContext:
    return PinnedContext(msg.name, msg.model, msg.tokens)


class Session:
    """A conversation the daemon keeps (Apple's LanguageModelSession): `chat`/`stream` send only the
    new turn; `transcript` asks the daemon for the turns so far; `close` (or leaving `with`) frees it."""

    def __init__(self, client: AiClient, msg: pb.Session) -> None:
        self._client = client
        self.id, self.model, self.instructions = msg.id, msg.model, msg.instructions

    def stream(
        self, turn: Turn, *, timeout: float | None = None, **sampling: Unpack[Sampling]
    ) -> CompletionStream:
        return self._client.stream_chat(turn_messages(turn), timeout=timeout, session=self.id, **sampling)

    def chat(self, turn: Turn, *, timeout: float | None = None, **sampling: Unpack[Sampling]) -> Completion:
        return self._client.chat(turn_messages(turn), timeout=timeout, session=self.id, **sampling)

    @property
    def transcript(self) -> list[dict[str, str]]:
        return transcript_of(self._client._get_session(self.id))

    @property
    def responding(self) -> bool:
        return bool(self._client._get_session(self.id).responding)

    def close(self) -> None:
        self._client._close_session(self.id)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({self.id!r}, model={self.model!r})"


class AsyncSession:
    """Session for AsyncAiClient: `await s.chat(...)`, `async for chunk in s.stream(...)`,
    `await s.transcript()`, `await s.close()` (or `async with`)."""

    def __init__(self, client: AsyncAiClient, msg: pb.Session) -> None:
        self._client = client
        self.id, self.model, self.instructions = msg.id, msg.model, msg.instructions

    def stream(
        self, turn: Turn, *, timeout: float | None = None, **sampling: Unpack[Sampling]
    ) -> AsyncCompletionStream:
        return self._client.stream_chat(turn_messages(turn), timeout=timeout, session=self.id, **sampling)

    async def chat(
        self, turn: Turn, *, timeout: float | None = None, **sampling: Unpack[Sampling]
    ) -> Completion:
        return await self._client.chat(turn_messages(turn), timeout=timeout, session=self.id, **sampling)

    async def transcript(self) -> list[dict[str, str]]:
        return transcript_of(await self._client._get_session(self.id))

    async def close(self) -> None:
        await self._client._close_session(self.id)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r}, model={self.model!r})"


def session_fields(
    session: str | Session | AsyncSession | None, pinned_context: str | None
) -> dict[str, Any]:
    """A ChatRequest's `session` and `pinned_context` fields."""
    sid = session.id if isinstance(session, Session | AsyncSession) else session or ""
    return {"session": sid, "pinned_context": pinned_context or ""}

"""Sessions and pinned contexts: what an app keeps between its chats (pure state, event-loop only).

A session (Apple's LanguageModelSession) is a conversation: its instructions (the system message of
every turn), its transcript of user and assistant turns, and the tokens its KV cache holds, namely
the last turn's prompt and answer exactly as the model computed them (`kv_tokens`, with their text
`kv_text`), so that the next turn's prompt begins with those very tokens (aicap.prompts.continued)
and hits their cached blocks. One turn runs at a time (`begin`/`end`); a turn joins the transcript
only when it ends normally (`commit`). A pinned context (ML Kit's cached context) is an app's named
system message, rendered and tokenized once. Both belong to one app: another app's id or name is
NotFound, as if it did not exist. Sessions idle for `idle_s` are closed. Both live in the daemon's
memory only: a restart loses them (apps create them again).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aicap.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(eq=False, slots=True)
class Session:
    id: str
    app: str
    model: str
    instructions: str
    transcript: list[dict[str, Any]] = field(default_factory=list)  # {"role", "content"} turns
    kv_tokens: list[int] = field(default_factory=list)  # the last turn's prompt and answer tokens
    kv_text: str = ""  # their text, as the chat template renders them
    responding: bool = False
    turn: int = 0  # turns begun: `end` ends only its own
    closed: bool = False
    last_used: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        """Its hold on the engine's cached blocks (BlockManager.hold)."""
        return ("session", self.id)

    def messages(self, turn: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The prompt's messages for a new turn: instructions, transcript, the turn."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return system + self.transcript + turn

    def chars(self) -> int:
        return len(self.instructions) + sum(len(m["content"]) for m in self.transcript)

    def commit(self, turn: list[dict[str, Any]], answer: str, tokens: list[int], text: str) -> None:
        """A turn that ended normally: it and its answer join the transcript; `tokens` and `text` are
        what the KV cache now holds (the turn's prompt and answer, or just its prompt)."""
        self.transcript += [*turn, {"role": "assistant", "content": answer}]
        self.kv_tokens, self.kv_text = tokens, text


@dataclass(frozen=True, slots=True)
class Pinned:
    app: str
    name: str
    model: str
    text: str
    tokens: list[int]  # the system message alone, rendered by the model's template, tokenized
    rendered: str  # that rendering

    @property
    def key(self) -> tuple[str, str, str]:
        return ("pinned", self.app, self.name)


class Sessions:
    def __init__(self, max_per_app: int, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_per_app = max_per_app
        self.idle_s = idle_s
        self._clock = clock
        self._by_app: dict[str, dict[str, Session]] = {}

    def create(self, app: str, model: str, instructions: str) -> Session:
        """A new session of `app`; ResourceExhausted past ai.max_sessions_per_app."""
        mine = self._by_app.setdefault(app, {})
        if len(mine) >= self.max_per_app:
            raise ResourceExhausted(
                f"app {app} has {len(mine)} open sessions (ai.max_sessions_per_app {self.max_per_app}): "
                "close one first (idle ones close by themselves after ai.session_idle_s)"
            )
        s = Session("sess_" + secrets.token_urlsafe(12), app, model, instructions, last_used=self._clock())
        mine[s.id] = s
        return s

    def get(self, app: str, session_id: str) -> Session:
        s = self._by_app.get(app, {}).get(session_id)
        if s is None:
            raise NotFound(f"no session {session_id!r} of app {app} (closed, expired, or never created)")
        s.last_used = self._clock()
        return s

    def begin(self, app: str, session_id: str) -> Session:
        """The session, now responding; FailedPrecondition if a turn runs already."""
        s = self.get(app, session_id)
        if s.responding:
            raise FailedPrecondition(
                f"session {session_id} is responding: one request at a time per session (wait for its answer)"
            )
        s.responding = True
        s.turn += 1
        return s

    def end(self, s: Session, turn: int) -> None:
        """Turn `turn` of the session is over (again: nothing, nor for a later turn)."""
        if s.turn == turn:
            s.responding = False
        s.last_used = self._clock()

    def close(self, app: str, session_id: str) -> Session:
        s = self.get(app, session_id)
        self._remove(s)
        return s

    def expired(self) -> list[Session]:
        """Closes and returns the sessions idle (not responding) for longer than idle_s."""
        limit = self._clock() - self.idle_s
        gone = [
            s
            for mine in self._by_app.values()
            for s in mine.values()
            if not s.responding and s.last_used < limit
        ]
        for s in gone:
            self._remove(s)
        return gone

    def count(self, app: str) -> int:
        return len(self._by_app.get(app, ()))

    def apps(self) -> list[str]:
        return sorted(self._by_app)

    def _remove(self, s: Session) -> None:
        s.closed = True
        mine = self._by_app.get(s.app, {})
        mine.pop(s.id, None)
        if not mine:
            self._by_app.pop(s.app, None)


class PinnedContexts:
    def __init__(self, max_per_app: int, max_chars: int) -> None:
        self.max_per_app = max_per_app
        self.max_chars = max_chars
        self._by_app: dict[str, dict[str, Pinned]] = {}

    def check(self, app: str, name: str, text: str) -> None:
        """InvalidArgument for a bad name or text, ResourceExhausted for a new name past the bound."""
        if not NAME.fullmatch(name):
            raise InvalidArgument(
                f"pinned context name {name[:80]!r}: 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if not text:
            raise InvalidArgument("the pinned context's text is empty")
        if len(text) > self.max_chars:
            raise InvalidArgument(
                f"the pinned context's text has {len(text)} characters, more than ai.max_pinned_chars "
                f"({self.max_chars})"
            )
        mine = self._by_app.get(app, {})
        if name not in mine and len(mine) >= self.max_per_app:
            raise ResourceExhausted(
                f"app {app} has {len(mine)} pinned contexts (ai.max_pinned_per_app {self.max_per_app}): "
                "unpin one first"
            )

    def put(self, p: Pinned) -> Pinned | None:
        """Pins `p` (checked first), returning the one it replaces."""
        mine = self._by_app.setdefault(p.app, {})
        old = mine.get(p.name)
        mine[p.name] = p
        return old

    def get(self, app: str, name: str) -> Pinned:
        p = self._by_app.get(app, {}).get(name)
        if p is None:
            raise NotFound(f"no pinned context {name!r} of app {app}: pin it first (PinContext)")
        return p

    def get_or_none(self, app: str, name: str) -> Pinned | None:
        return self._by_app.get(app, {}).get(name)

    def remove(self, app: str, name: str) -> Pinned:
        p = self.get(app, name)
        mine = self._by_app[app]
        del mine[name]
        if not mine:
            del self._by_app[app]
        return p

    def count(self, app: str) -> int:
        return len(self._by_app.get(app, ()))

    def apps(self) -> list[str]:
        return sorted(self._by_app)

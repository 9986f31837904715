"""AiService's chunks → OpenAI's answers (pure: no I/O): a whole `chat.completion` / `text_completion`,
or one streamed `chat.completion.chunk` / `text_completion` event per chunk, and the usage.

The engine reports the log-probability of each chosen token, not the model's top alternatives: a
request's `top_logprobs` (chat) or `logprobs: k` (completions) gets each position's chosen token alone
in its list of alternatives, whatever k it asked for.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aicap.v1 import aicap_pb2 as pb
from datamgr.ai_http._formats import tool_calls_out

Kind = Literal["chat", "text"]
_FINISH = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}


@dataclass(slots=True)
class _Sample:
    text: list[str] = field(default_factory=list)
    chars: int = 0  # characters of text so far (completions' text_offset)
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # chat: logprobs.content entries
    tokens: list[str] = field(default_factory=list)  # completions: logprobs' four lists
    token_logprobs: list[float] = field(default_factory=list)
    top: list[dict[str, float]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    finish: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    started: bool = False  # streamed: its role was sent (chat)


class Answer:
    """One request's answer, built from its chunks in order. `piece(token)` is the token's bytes
    (for log-probabilities); `logprobs` says whether they were asked for, `top` how many alternatives."""

    def __init__(
        self,
        kind: Kind,
        model: str,
        n: int,
        piece: Callable[[int], bytes],
        logprobs: bool = False,
        top: int = 0,
        include_usage: bool = False,
    ) -> None:
        self.kind, self.model, self._piece = kind, model, piece
        self._logprobs, self._top, self.include_usage = logprobs, top, include_usage
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self._samples = [_Sample() for _ in range(n)]
        self.prompt_tokens = self.completion_tokens = self.cached_tokens = 0

    # ---- every chunk ----

    def add(self, chunk: pb.CompletionChunk) -> dict[str, Any] | None:
        """Takes the chunk in; returns its streamed event, or None when it has nothing to tell (a
        token whose text is held back, no log-probabilities asked for)."""
        s = self._samples[chunk.index]
        lp = self._add_logprobs(s, chunk) if self._logprobs else None
        s.text.append(chunk.text)
        s.chars += len(chunk.text)
        finish = None
        if chunk.finish_reason:
            finish = s.finish = _FINISH.get(chunk.finish_reason, "stop")
            u = chunk.usage
            self.prompt_tokens = u.prompt_tokens
            self.completion_tokens += u.completion_tokens
            if chunk.index == 0:
                self.cached_tokens = u.cached_tokens
        if not (chunk.text or finish or lp):
            return None
        if self.kind == "text":
            choice: dict[str, Any] = {"index": chunk.index, "text": chunk.text, "logprobs": lp}
        else:
            delta: dict[str, Any] = {"role": "assistant"} if not s.started else {}
            s.started = True
            delta["content"] = chunk.text
            if chunk.tool_calls:  # the sample's last chunk: the calls, whole
                s.tool_calls = tool_calls_out(chunk.tool_calls)
                delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(s.tool_calls)]
                delta["content"] = chunk.text or None
            choice = {"index": chunk.index, "delta": delta, "logprobs": lp}
        choice["finish_reason"] = finish
        return self._event([choice])

    def _add_logprobs(self, s: _Sample, chunk: pb.CompletionChunk) -> dict[str, Any] | None:
        if not chunk.logprobs:
            return None
        if self.kind == "chat":
            content = []
            for token, logprob in zip(chunk.token_ids, chunk.logprobs, strict=False):
                raw = self._piece(token)
                entry: dict[str, Any] = {"token": raw.decode(errors="replace"), "logprob": logprob}
                entry["bytes"] = list(raw)
                entry["top_logprobs"] = [dict(entry)] if self._top else []
                content.append(entry)
            s.logprobs.extend(content)
            return {"content": content, "refusal": None}
        tokens = [self._piece(t).decode(errors="replace") for t in chunk.token_ids]
        logprobs = list(chunk.logprobs)
        top = [{t: lp} for t, lp in zip(tokens, logprobs, strict=False)] if self._top else []
        offsets = [s.chars] * len(tokens)
        s.tokens += tokens
        s.token_logprobs += logprobs
        s.top += top
        s.offsets += offsets
        return {
            "tokens": tokens,
            "token_logprobs": logprobs,
            "top_logprobs": top if self._top else None,
            "text_offset": offsets,
        }

    # ---- streamed ----

    def _event(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            event["usage"] = None
        return event

    def usage_event(self) -> dict[str, Any]:
        """The last streamed event when `stream_options.include_usage`: no choices, the usage."""
        event = self._event([])
        event["usage"] = self.usage()
        return event

    # ---- whole ----

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    def whole(self) -> dict[str, Any]:
        """The answer once every chunk is in."""
        choices = []
        for i, s in enumerate(self._samples):
            text = "".join(s.text)
            choice: dict[str, Any] = {"index": i}
            if self.kind == "chat":
                choice["message"] = {"role": "assistant", "content": text}
                if s.tool_calls:
                    choice["message"] = {
                        "role": "assistant",
                        "content": text or None,
                        "tool_calls": s.tool_calls,
                    }
                choice["logprobs"] = {"content": s.logprobs, "refusal": None} if self._logprobs else None
            else:
                choice["text"] = text
                choice["logprobs"] = (
                    {
                        "tokens": s.tokens,
                        "token_logprobs": s.token_logprobs,
                        "top_logprobs": s.top if self._top else None,
                        "text_offset": s.offsets,
                    }
                    if self._logprobs
                    else None
                )
            choice["finish_reason"] = s.finish
            choices.append(choice)
        return {
            "id": self.id,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage(),
        }

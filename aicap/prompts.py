"""Prompts made off the event loop: the size bound, chat rendering, tokenizing, and which declared
shared prefix a prompt starts with.

Tokenizing 500,000 characters takes the CPU for about half a second; on the event loop that stalls
every other app's calls. So a text is first measured in characters (no tokenizing: more characters
than `max_prompt_chars` never fit the context), then rendered and tokenized on a small pool of
threads. llama_tokenize only reads the vocabulary (each call builds its own tokenizer session over
the const vocab), so the pool's threads share a model's one Tokenizer; and it never decodes, so
tokenizing adds no OpenMP team beside the inference thread's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aicap import structured
from aicap.answers import longest
from aicap.chat import capabilities, render_chat
from aicap.config import AiConfig, SharedPrefix
from aicap.engine.tokenizer import Tokenizer, TokenizerClosed
from aicap.errors import InvalidArgument, Unavailable
from aicap.structured import Format
from aicap.tools import Tools, template_inputs

if TYPE_CHECKING:
    from llguidance import LLMatcher

THREADS = 2  # tokenizing is milliseconds per bounded prompt; two threads leave the cores to inference
CHARS_PER_TOKEN = 8  # max_prompt_chars 0: this many characters per context cell (typical text: 4-6)
SHARED_SALT = "\0shared\0"  # + the prefix's name: no bundle name holds a NUL
T = TypeVar("T")
Kind = Literal["complete", "chat"]


@dataclass(frozen=True, slots=True)
class Prompt:
    tokens: list[int]
    shared: tuple[str, int] = ("", 0)  # (salt, tokens) of the declared shared prefix it starts with
    tool_format: Format | None = None  # it asks for tool calls: the answer's format (aicap.tools)
    text: str = ""  # a chat's rendered text (the tokens are its, or a prefix's and then its rest's)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items `a` and `b` have in common."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


def continued(
    prefix: tuple[Sequence[int], str] | None, text: str, tokenize: Callable[[str], list[int]]
) -> list[int]:
    """The tokens of `text`: when it begins with a prefix's text, the prefix's own tokens and then the
    rest's (a session's last prompt and answer as the model computed them, token for token, so their
    cached KV is hit; or a pinned context's); otherwise all of `text` tokenized."""
    if prefix is not None and prefix[0] and text.startswith(prefix[1]):
        rest = text[len(prefix[1]) :]
        return list(prefix[0]) + (tokenize(rest) if rest else [])
    return tokenize(text)


class Prompts:
    def __init__(self, config: AiConfig) -> None:
        self.config = config
        self._prefixes = config.shared_prefixes if config.engine.isolate_apps else ()
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="aicap-tokenize")
        self._lock = threading.Lock()
        self._running = 0  # jobs running on the pool now (busy)
        # a model's tokenizer → (prefix name, kind, chat template) → the prefix's tokens
        self._tokens: weakref.WeakKeyDictionary[Tokenizer, dict[tuple[str, Kind, str], list[int]]] = (
            weakref.WeakKeyDictionary()
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- on the event loop ----

    def max_chars(self, n_ctx: int) -> int:
        return self.config.max_prompt_chars or CHARS_PER_TOKEN * n_ctx

    def check_chars(self, chars: int, n_ctx: int, model: str, what: str) -> None:
        """InvalidArgument naming ai.max_prompt_chars when a text is too long to tokenize at all."""
        limit = self.max_chars(n_ctx)
        if chars > limit:
            how = "" if self.config.max_prompt_chars else f", {CHARS_PER_TOKEN} x the n_ctx of {model}"
            raise InvalidArgument(
                f"the {what} has {chars} characters, more than the {limit} a request may send to model "
                f"{model} (ai.max_prompt_chars{how}); it would not fit the context"
            )

    def busy(self) -> int:
        """How many tokenizing jobs run now (CPU the inference thread's team cannot have)."""
        return self._running

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the tokenizing pool."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._counted, fn, *args)
        except TokenizerClosed:
            raise Unavailable("the model was removed") from None

    async def completion(self, tok: Tokenizer, text: str, app: str) -> Prompt:
        return await self.run(self._completion, tok, text, app)

    async def chat(
        self,
        tok: Tokenizer,
        template: str,
        messages: list[dict[str, Any]],
        app: str,
        tools: Tools | None = None,
        prefix: tuple[list[int], str] | None = None,
        recent: Sequence[tuple[Sequence[int], str]] = (),
    ) -> Prompt:
        """`prefix`: (tokens, their text) the rendered prompt is expected to begin with (`continued`);
        `recent`: (tokens, text) it may begin with (aicap.answers): the longest that it does is used."""
        return await self.run(self._chat, tok, template, messages, app, tools, prefix, recent)

    async def grammar(self, tok: Tokenizer, fmt: Format) -> str:
        """The format compiled for the model's vocabulary (InvalidArgument with the reason if not)."""
        return await self.run(self._grammar, tok, fmt)

    async def matcher(self, tok: Tokenizer, grammar: str, replayed: list[int]) -> LLMatcher:
        """A matcher of a compiled grammar that has read `replayed` (structured.matcher)."""
        return await self.run(self._matcher, tok, grammar, replayed)

    # ---- on the pool ----

    def _counted(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            self._running += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._running -= 1

    def _completion(self, tok: Tokenizer, text: str, app: str) -> Prompt:
        with tok.using():
            tokens = tok.tokenize(text, add_special=True)
            return Prompt(tokens, self._shared(tok, tokens, app, "complete", ""))

    def _chat(
        self,
        tok: Tokenizer,
        template: str,
        messages: list[dict[str, Any]],
        app: str,
        tools: Tools | None,
        prefix: tuple[list[int], str] | None = None,
        recent: Sequence[tuple[Sequence[int], str]] = (),
    ) -> Prompt:
        with tok.using():
            definitions, fmt = None, None
            if tools is not None and tools.active:
                definitions = tools.definitions()
                fmt = Format(
                    "json_schema", json.dumps(tools.schema(definitions)), "JSON schema of the tool calls"
                )
            defs: list[dict[str, Any]] | None = None
            if definitions is not None or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
                messages, defs = template_inputs(messages, definitions, capabilities(template))
            bos, eos = tok.token_text(tok.bos), tok.token_text(tok.eos)
            text = render_chat(template, messages, bos, eos, tools=defs)
            start = longest([*([prefix] if prefix else []), *recent], text)
            tokens = continued(start, text, lambda t: tok.tokenize(t, add_special=False, parse_special=True))
            return Prompt(tokens, self._shared(tok, tokens, app, "chat", template), fmt, text)

    def _grammar(self, tok: Tokenizer, fmt: Format) -> str:
        return structured.compile_format(tok.grammar_tokenizer(), fmt)

    def _matcher(self, tok: Tokenizer, grammar: str, replayed: list[int]) -> LLMatcher:
        return structured.matcher(tok.grammar_tokenizer(), grammar, replayed)

    def _shared(
        self, tok: Tokenizer, tokens: list[int], app: str, kind: Kind, template: str
    ) -> tuple[str, int]:
        """The declared prefix for `app` that shares the most leading tokens with the prompt, and how
        many: those tokens are the declared text's own, so sharing their blocks shows nothing else."""
        best = ("", 0)
        for p in self._prefixes:
            if p.for_app(app):
                n = common_prefix(tokens, self._prefix_tokens(tok, p, kind, template))
                if n > best[1]:
                    best = (SHARED_SALT + p.name, n)
        return best

    def _prefix_tokens(self, tok: Tokenizer, p: SharedPrefix, kind: Kind, template: str) -> list[int]:
        """The prefix as the model sees it: a Complete prompt's start, or a Chat's system message."""
        key = (p.name, kind, template)
        with self._lock:
            found = self._tokens.setdefault(tok, {}).get(key)
        if found is not None:
            return found
        if kind == "complete":
            tokens = tok.tokenize(p.text, add_special=True)
        else:
            system = [{"role": "system", "content": p.text}]
            try:
                text = render_chat(template, system, tok.token_text(tok.bos), tok.token_text(tok.eos), False)
                tokens = tok.tokenize(text, add_special=False, parse_special=True)
            except InvalidArgument:  # the template wants more than a system message: no chat form
                tokens = []
        with self._lock:
            self._tokens.setdefault(tok, {})[key] = tokens
        return tokens

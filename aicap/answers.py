"""Chat answers as the model wrote them, for the next turn of a client that keeps no session.

A chat client of the OpenAI API resends the whole history each turn, its answers as text. Tokenized
again, an answer's text need not give back the tokens the model generated (it may have written " hel"
"lo" where the tokenizer makes " hello"), and from the first such token on the prompt misses the prefix
cache: in the workloads benchmark's chats (issue 14) 3 of 8 second turns found 384-416 of their 536
prompt tokens cached instead of 496, and turns started up to twice as late. llama-server and vLLM
tokenize again and miss the same way.

So the service remembers each app's last finished chats, per model (by its tokenizer: a model
replaced under its name has another, and the entries of the old go with it): the prompt's tokens and
the answer's, with their text as the chat template renders them. A chat whose rendered prompt begins with
one of those texts takes that one's tokens and tokenizes only the rest (prompts.continued), as a
session's next turn does (aicap.sessions): the same tokens the KV was computed for, so the history is
found cached up to the new message. An entry a later chat continues is replaced by that chat's, so a
conversation takes one entry. Entries are an app's own (another app's texts never match its prompts'
salted cache anyway), and bounded: `per_app` entries an app, and `max_tokens` tokens a model (about
8 bytes each with their text); past that the app that keeps the most loses its oldest entry, so one
app's flood of chats cannot take another's. Event-loop only.
"""

from __future__ import annotations

import weakref
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

PER_APP = 16  # conversations remembered per app and model
MAX_TOKENS = 262_144  # tokens remembered per model, all apps


@dataclass(frozen=True, slots=True)
class Answered:
    tokens: array[int]  # the prompt's tokens and the answer's, as computed
    text: str  # their text, as the template renders them (special tokens included)


def longest(prefixes: Sequence[tuple[Sequence[int], str]], text: str) -> tuple[Sequence[int], str] | None:
    """Of the (tokens, text) prefixes whose text `text` begins with, the longest (None if none)."""
    best: tuple[Sequence[int], str] | None = None
    for tokens, prefix in prefixes:
        if tokens and text.startswith(prefix) and (best is None or len(prefix) > len(best[1])):
            best = (tokens, prefix)
    return best


class _Model:
    """One model's entries: app → its entries, oldest first; tokens per app, kept as they change."""

    __slots__ = ("apps", "sizes")

    def __init__(self) -> None:
        self.apps: dict[str, list[Answered]] = {}
        self.sizes: dict[str, int] = {}


class RecentAnswers:
    def __init__(self, per_app: int = PER_APP, max_tokens: int = MAX_TOKENS) -> None:
        self.per_app, self.max_tokens = per_app, max_tokens
        self._by: weakref.WeakKeyDictionary[object, _Model] = weakref.WeakKeyDictionary()  # by tokenizer

    def get(self, vocab: object, app: str) -> list[tuple[Sequence[int], str]]:
        """The (tokens, text) `app` may continue from on the model of tokenizer `vocab`."""
        model = self._by.get(vocab)
        return [(a.tokens, a.text) for a in model.apps.get(app, ())] if model else []

    def add(self, vocab: object, app: str, tokens: Sequence[int], text: str) -> None:
        """A finished chat: its prompt and answer tokens and their rendered text. Drops what it
        continues (an entry whose text it begins with) and, past the bounds, the oldest."""
        if len(tokens) > self.max_tokens:
            return
        model = self._by.setdefault(vocab, _Model())
        kept = [a for a in model.apps.get(app, ()) if not text.startswith(a.text)]
        kept.append(Answered(array("i", tokens), text))
        kept = kept[-self.per_app :]
        model.apps[app] = kept
        model.sizes[app] = sum(len(a.tokens) for a in kept)
        total = sum(model.sizes.values())
        while total > self.max_tokens:
            top = max(model.sizes, key=model.sizes.__getitem__)
            n = len(model.apps[top].pop(0).tokens)
            model.sizes[top] -= n
            total -= n
            if not model.apps[top]:
                del model.apps[top], model.sizes[top]

    def tokens(self, vocab: object) -> int:
        """Tokens remembered for the model of tokenizer `vocab`."""
        model = self._by.get(vocab)
        return sum(model.sizes.values()) if model else 0

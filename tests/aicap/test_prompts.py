"""Prompts off the event loop (the real vocabulary): the character bound before any tokenizing,
tokenizing and chat rendering on the pool's threads, and which declared shared prefix a prompt
starts with (only for the apps it lists, only while apps are isolated)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from aicap.answers import RecentAnswers
from aicap.config import AiConfig, SharedPrefix
from aicap.engine.model_runner import default_model_path
from aicap.engine.tokenizer import Tokenizer, TokenizerClosed
from aicap.errors import InvalidArgument
from aicap.prompts import SHARED_SALT, Prompts, common_prefix

SYSTEM = "You are the help desk of Example Bank. Answer briefly and politely."
CONFIG = AiConfig(shared_prefixes=(SharedPrefix("desk", SYSTEM, frozenset({"com.a"})),))


class Recording:
    """The tokenizer, noting which threads tokenize."""

    def __init__(self, tok: Tokenizer) -> None:
        self._tok = tok
        self.threads: set[int] = set()

    def tokenize(self, *args: Any, **kw: Any) -> list[int]:
        self.threads.add(threading.get_ident())
        return self._tok.tokenize(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


@pytest.fixture(scope="module")
def tok() -> Iterator[Tokenizer]:
    t = Tokenizer(default_model_path())
    yield t
    t.close()


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([1, 2, 3], [1, 5, 3]) == 1
    assert common_prefix([], [1]) == 0
    assert common_prefix([7], [8]) == 0


def test_the_character_bound_is_checked_without_tokenizing_and_names_its_setting() -> None:
    prompts = Prompts(CONFIG)
    try:
        prompts.check_chars(8 * 512, 512, "m", "prompt")
        with pytest.raises(
            InvalidArgument, match=r"4097 characters.*ai\.max_prompt_chars, 8 x the n_ctx of m"
        ):
            prompts.check_chars(8 * 512 + 1, 512, "m", "prompt")
    finally:
        prompts.close()
    prompts = Prompts(dataclasses.replace(CONFIG, max_prompt_chars=100))
    try:
        prompts.check_chars(100, 512, "m", "messages")
        with pytest.raises(
            InvalidArgument, match=r"the messages has 101 characters.*\(ai\.max_prompt_chars\)"
        ):
            prompts.check_chars(101, 512, "m", "messages")
    finally:
        prompts.close()


@pytest.mark.model
def test_prompts_are_tokenized_off_the_event_loop_and_share_only_a_declared_prefix(tok: Tokenizer) -> None:
    rec = Recording(tok)
    prompts = Prompts(CONFIG)
    template = tok.chat_template()
    assert template
    system = len(tok.tokenize(SYSTEM, add_special=True))
    chat_system = len(tok.tokenize(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n", add_special=False))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]

    async def main() -> None:
        loop_thread = threading.get_ident()
        p = await prompts.completion(rec, SYSTEM + " Where is the branch?", "com.a")  # type: ignore[arg-type]
        assert p.tokens == tok.tokenize(SYSTEM + " Where is the branch?", add_special=True)
        assert p.shared[0] == SHARED_SALT + "desk" and system - 1 <= p.shared[1] <= system
        c = await prompts.chat(rec, template, messages, "com.a")  # type: ignore[arg-type]
        assert c.shared == (SHARED_SALT + "desk", chat_system)
        outsider = await prompts.completion(rec, SYSTEM + " Where is the branch?", "com.b")  # type: ignore[arg-type]
        assert outsider.shared == ("", 0)
        other = await prompts.completion(rec, "Nothing like it.", "com.a")  # type: ignore[arg-type]
        assert other.shared == ("", 0)
        assert loop_thread not in rec.threads and rec.threads

    try:
        asyncio.run(main())
    finally:
        prompts.close()


@pytest.mark.model
def test_nothing_is_shared_when_apps_are_not_isolated(tok: Tokenizer) -> None:
    prompts = Prompts(
        dataclasses.replace(CONFIG, engine=dataclasses.replace(CONFIG.engine, isolate_apps=False))
    )
    try:
        p = asyncio.run(prompts.completion(tok, SYSTEM + " Where?", "com.a"))
        assert p.shared == ("", 0)  # every block is shared anyway, under one salt
    finally:
        prompts.close()


@pytest.mark.model
def test_a_tokenizer_closed_while_in_use_is_freed_when_the_use_ends() -> None:
    t = Tokenizer(default_model_path())
    with t.using():
        t.close()  # the model was removed while a pool thread tokenizes
        assert t.token_text(t.eos)  # still readable
        with pytest.raises(TokenizerClosed):
            t.tokenize("no new calls")
    assert t._model is None


@pytest.mark.model
def test_a_chat_continues_an_answer_as_the_model_wrote_it(tok: Tokenizer) -> None:
    """An answer whose tokens are not what its text tokenizes to (the model wrote " hel" "lo") comes
    back in the next turn as those very tokens, whose KV is cached, for the app it was given to
    (aicap.answers); for another app the text is tokenized as usual."""
    prompts = Prompts(AiConfig())
    answers = RecentAnswers()
    template = tok.chat_template()
    assert template
    first = [{"role": "user", "content": "Say hello."}]
    written = tok.tokenize(" hel", add_special=False) + tok.tokenize("lo there", add_special=False)
    answer = tok.detokenize(written)
    assert tok.tokenize(answer, add_special=False) != written  # the text tokenizes otherwise

    async def main() -> None:
        p1 = await prompts.chat(tok, template, first, "com.a")
        answers.add(tok, "com.a", p1.tokens + written, p1.text + answer)
        second = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "Again."}]
        mine = await prompts.chat(tok, template, second, "com.a", None, None, answers.get(tok, "com.a"))
        theirs = await prompts.chat(tok, template, second, "com.b", None, None, answers.get(tok, "com.b"))
        assert mine.tokens[: len(p1.tokens) + len(written)] == p1.tokens + written
        assert theirs.tokens[: len(p1.tokens)] == p1.tokens and theirs.tokens != mine.tokens
        assert mine.text == theirs.text
        assert tok.detokenize(mine.tokens, True) == tok.detokenize(theirs.tokens, True)

    try:
        asyncio.run(main())
    finally:
        prompts.close()

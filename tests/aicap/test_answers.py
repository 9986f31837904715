"""Stateless chats' answers as computed (aicap.answers): which remembered prefix a prompt continues,
what a conversation's next turn replaces, the bounds, and that entries are per app and per model."""

from __future__ import annotations

import gc

from aicap.answers import RecentAnswers, longest


class Vocab:
    """Stands for a model's tokenizer (the entries' key, held weakly)."""


def test_longest_takes_the_longest_text_the_prompt_begins_with() -> None:
    prefixes = [([1], "ab"), ([1, 2, 3], "abcd"), ([9], "x"), ([], "abcde")]
    assert longest(prefixes, "abcdef") == ([1, 2, 3], "abcd")  # one without tokens never counts
    assert longest(prefixes, "abxy") == ([1], "ab")
    assert longest(prefixes, "zzz") is None
    assert longest([], "abc") is None


def test_a_conversations_next_turn_replaces_its_entry() -> None:
    vocab = Vocab()
    answers = RecentAnswers()
    answers.add(vocab, "com.a", [1, 2, 3], "<s>u1 a1")
    answers.add(vocab, "com.a", [7, 8], "<s>v1 b1")  # another conversation
    answers.add(vocab, "com.a", [1, 2, 3, 4, 5], "<s>u1 a1 u2 a2")  # the first one's next turn
    got = answers.get(vocab, "com.a")
    assert [(list(t), s) for t, s in got] == [([7, 8], "<s>v1 b1"), ([1, 2, 3, 4, 5], "<s>u1 a1 u2 a2")]


def test_entries_are_the_apps_own_and_the_models_own() -> None:
    vocab, other = Vocab(), Vocab()
    answers = RecentAnswers()
    answers.add(vocab, "com.a", [1, 2], "ab")
    assert answers.get(vocab, "com.b") == []
    assert answers.get(other, "com.a") == []
    del vocab  # the model was removed or replaced: its tokenizer goes, and its entries with it
    gc.collect()
    assert answers.tokens(other) == 0 and len(answers._by) == 0


def test_an_app_keeps_at_most_per_app_entries_the_newest() -> None:
    vocab = Vocab()
    answers = RecentAnswers(per_app=3)
    for i in range(5):
        answers.add(vocab, "com.a", [i], f"conversation {i}")
    assert [s for _, s in answers.get(vocab, "com.a")] == [f"conversation {i}" for i in (2, 3, 4)]


def test_past_the_token_bound_the_app_keeping_most_loses_its_oldest() -> None:
    vocab = Vocab()
    answers = RecentAnswers(max_tokens=100)
    answers.add(vocab, "com.quiet", [1] * 30, "q")
    for i in range(4):  # a flood of another app's chats
        answers.add(vocab, "com.flood", [2] * 30, f"f{i}")
    assert answers.tokens(vocab) <= 100
    assert [s for _, s in answers.get(vocab, "com.quiet")] == ["q"]  # the flood paid for itself
    assert [s for _, s in answers.get(vocab, "com.flood")] == ["f2", "f3"]
    answers.add(vocab, "com.big", [3] * 101, "too long")  # more than the bound alone: not kept
    assert answers.get(vocab, "com.big") == []

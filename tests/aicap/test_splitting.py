"""split_text (OpenHarmony's splitText): chunk sizes, coverage in order, overlap, and where it cuts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicap import split_text
from aicap.splitting import spans

texts = st.text(alphabet=st.sampled_from("ab cd.\n!?,xyz数据。"), max_size=600) | st.text(max_size=300)


@settings(max_examples=400, deadline=None)
@given(text=texts, size=st.integers(1, 120), ratio=st.floats(0, 0.95))
def test_chunks_are_small_cover_the_text_in_order_and_overlap_as_asked(
    text: str, size: int, ratio: float
) -> None:
    cuts = spans(text, size, ratio)
    chunks = split_text(text, size, ratio)
    assert chunks == [text[a:b] for a, b in cuts]
    if not text:
        assert chunks == []
        return
    assert cuts[0][0] == 0 and cuts[-1][1] == len(text)
    overlap = int(size * ratio)
    for a, b in cuts:
        assert 0 < b - a <= size
    for (a0, b0), (a1, b1) in itertools.pairwise(cuts):
        assert a0 < a1 and b0 < b1  # in order, always advancing
        shared = b0 - a1
        assert 0 <= shared <= overlap  # no gap; never more overlap than asked
        if overlap and b0 - a0 > 1:
            assert shared > 0  # some overlap whenever it was asked and the chunk could give it


@given(
    text=st.text(alphabet="abcdef", min_size=1, max_size=400),
    size=st.integers(2, 60),
    ratio=st.floats(0, 0.9),
)
def test_without_spaces_the_overlap_is_exact(text: str, size: int, ratio: float) -> None:
    overlap = int(size * ratio)
    cuts = spans(text, size, ratio)
    for (a0, b0), (a1, _) in itertools.pairwise(cuts):
        assert b0 - a1 == min(overlap, b0 - a0 - 1)


def test_it_cuts_at_paragraphs_then_sentences_then_words() -> None:
    text = "First sentence here. Second one follows.\n\nA new paragraph begins with words."
    assert split_text(text, 50) == [
        "First sentence here. Second one follows.\n\n",
        "A new paragraph begins with words.",
    ]
    # a sentence's end in the chunk's first half would waste half of it: a word boundary is used instead
    assert split_text("One two. Three four five six seven.", 20) == [
        "One two. Three four ",
        "five six seven.",
    ]
    assert split_text("One two three four. Five six seven.", 24) == [
        "One two three four.",
        " Five six seven.",
    ]
    assert split_text("abcdefghij", 4) == ["abcd", "efgh", "ij"]


def test_overlapping_chunks_start_at_a_word() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    chunks = split_text(text, 24, 0.3)
    assert all(len(c) <= 24 for c in chunks)
    assert all(c[0] != " " and text[text.index(c) - 1] == " " for c in chunks[1:])
    assert "".join(c for c in chunks).replace(" ", "").count("alpha") == 1


def test_a_short_text_is_one_chunk_and_bad_arguments_are_refused() -> None:
    assert split_text("short", 100, 0.5) == ["short"]
    assert split_text("", 10) == []
    with pytest.raises(ValueError, match="size"):
        split_text("x", 0)
    with pytest.raises(ValueError, match="overlap_ratio"):
        split_text("x", 10, 1.0)
    with pytest.raises(ValueError, match="overlap_ratio"):
        split_text("x", 10, -0.1)

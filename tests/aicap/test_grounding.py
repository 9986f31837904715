"""Grounded chats' pure parts (aicap.grounding): checking the sources, packing passages into the room
the prompt has, and where they go."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aicap import grounding
from aicap.errors import InvalidArgument
from aicap.grounding import Passage
from aicap.v1 import aicap_pb2 as pb

URI = "datashare:///com.example.notes/db/notes"


def words(text: str) -> int:
    return len(text.split())


def test_sources_are_checked_and_default_k() -> None:
    ok = pb.ContextSource(datashare=pb.DataShareSource(uri=URI))
    (s,) = grounding.sources([ok], max_sources=2, max_k=8)
    assert (s.uri, s.k, s.predicates, s.query) == (URI, grounding.DEFAULT_K, b"", "")
    with pytest.raises(InvalidArgument, match="max_context_sources"):
        grounding.sources([ok] * 3, max_sources=2, max_k=8)
    with pytest.raises(InvalidArgument, match="names no source"):
        grounding.sources([pb.ContextSource()], max_sources=2, max_k=8)
    bad_uri = pb.ContextSource(datashare=pb.DataShareSource(uri="file:///etc/passwd"))
    with pytest.raises(InvalidArgument, match="not a datashare"):
        grounding.sources([bad_uri], max_sources=2, max_k=8)
    many = pb.ContextSource(datashare=pb.DataShareSource(uri=URI, k=9))
    with pytest.raises(InvalidArgument, match="at most 8"):
        grounding.sources([many], max_sources=2, max_k=8)


def test_the_passages_go_before_the_question_of_the_last_user_message() -> None:
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "When is the dentist?"},
    ]
    out = grounding.grounded(msgs, [Passage(URI, 7, 0.9, "Dentist on Tuesday at 9.")])
    assert out[:3] == msgs[:3] and msgs[3]["content"] == "When is the dentist?"  # not mutated
    text = out[3]["content"]
    assert text.index("[1] (" + URI + ", row 7)\nDentist on Tuesday at 9.") < text.index(
        "Question: When is the dentist?"
    )
    assert "(no source matched)" in grounding.grounded(msgs, [])[3]["content"]
    with pytest.raises(InvalidArgument, match="needs a user message"):
        grounding.grounded([{"role": "system", "content": "x"}], [])


def test_pack_takes_the_best_that_fit_and_cuts_each_to_max_chars() -> None:
    long = Passage(URI, 1, 0.9, "word " * 100)
    short = Passage(URI, 2, 0.5, "tiny text")
    best = Passage(URI, 3, 0.95, "the best one")
    budget = words(grounding.INTRO) + 20
    chosen = grounding.pack([short, long, best], budget, words, max_chars=10_000)
    assert [p.row_id for p in chosen] == [3, 2]  # the long one does not fit; a shorter one after it does
    cut = grounding.pack([long], 10_000, words, max_chars=20)
    assert cut[0].text == ("word " * 100)[:20]


@given(
    st.lists(st.tuples(st.floats(0, 1), st.text(max_size=200)), max_size=20),
    st.integers(0, 400),
)
def test_pack_never_exceeds_its_budget(items: list[tuple[float, str]], room: int) -> None:
    passages = [Passage(URI, i, score, text) for i, (score, text) in enumerate(items)]
    budget = words(grounding.INTRO) + room
    chosen = grounding.pack(passages, budget, words, max_chars=120)
    used = words(grounding.INTRO) + sum(words(grounding.block(n, p)) for n, p in enumerate(chosen, 1))
    assert used <= budget
    assert [p.score for p in chosen] == sorted((p.score for p in chosen), reverse=True)


def test_the_sdks_context_carries_datashare_predicates_serialized() -> None:
    from aicap import Context
    from datamgr.client import DataSharePredicates
    from datamgr.v1 import datashare_pb2

    preds = DataSharePredicates().equal_to("folder", "home")
    msg = Context(URI, k=3, predicates=preds, query="wifi").proto()
    assert (msg.datashare.uri, msg.datashare.k, msg.datashare.query) == (URI, 3, "wifi")
    assert (
        DataSharePredicates.from_proto(datashare_pb2.Predicates.FromString(msg.datashare.predicates)) == preds
    )
    assert Context(URI).proto().datashare.predicates == b""

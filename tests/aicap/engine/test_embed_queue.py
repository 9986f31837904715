"""The embedding batches' fairness (aicap.engine.embed_queue), exact: which texts each batch takes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aicap.engine.embed_queue import EmbedJob, EmbedQueue


def job(tenant: str, *lengths: int, background: bool = False) -> EmbedJob:
    """A job whose text i is `lengths[i]` tokens, each token its (tenant, i) mark for the checks."""
    return EmbedJob(tenant, [[i] * n for i, n in enumerate(lengths)], background)


def names(batch: list[tuple[EmbedJob, int]]) -> list[str]:
    return [f"{j.tenant}{i}" for j, i in batch]


def test_one_app_fills_the_budget_and_a_long_text_goes_alone() -> None:
    q: EmbedQueue[EmbedJob] = EmbedQueue(batch_tokens=10, max_texts=64)
    q.add(job("a", 4, 4, 4, 30, 2))
    assert names(q.next_batch()) == ["a0", "a1"]
    assert names(q.next_batch()) == ["a2"]  # the 30-token text does not fit beside it
    assert names(q.next_batch()) == ["a3"]  # alone, though over the budget
    assert names(q.next_batch()) == ["a4"]
    assert not q and q.next_batch() == []


def test_apps_take_turns_one_text_each() -> None:
    q: EmbedQueue[EmbedJob] = EmbedQueue(batch_tokens=100, max_texts=64)
    q.add(job("a", *[1] * 10))
    q.add(job("b", 1, 1))
    assert names(q.next_batch()) == ["a0", "b0", "a1", "b1", *(f"a{i}" for i in range(2, 10))]


def test_the_next_batch_starts_after_the_last_app_served() -> None:
    q: EmbedQueue[EmbedJob] = EmbedQueue(batch_tokens=2, max_texts=64)
    for t in "abc":
        q.add(job(t, *[1] * 4))
    assert names(q.next_batch()) == ["a0", "b0"]
    assert names(q.next_batch()) == ["c0", "a1"]
    assert names(q.next_batch()) == ["b1", "c1"]
    assert names(q.next_batch()) == ["a2", "b2"]


def test_max_texts_bounds_a_batch() -> None:
    q: EmbedQueue[EmbedJob] = EmbedQueue(batch_tokens=1000, max_texts=3)
    q.add(job("a", *[1] * 5))
    assert [len(q.next_batch()), len(q.next_batch())] == [3, 2]


def test_background_gets_only_what_the_apps_leave() -> None:
    q: EmbedQueue[EmbedJob] = EmbedQueue(batch_tokens=4, max_texts=64)
    q.add(job("indexer", 1, 1, 1, background=True))
    q.add(job("a", 2, 2, 1))
    assert names(q.next_batch()) == ["a0", "a1"]  # full: nothing for the background
    assert names(q.next_batch()) == ["a2", "indexer0", "indexer1", "indexer2"]


def test_an_app_arriving_goes_before_queued_background_work() -> None:
    q: EmbedQueue[EmbedJob] = EmbedQueue(batch_tokens=2, max_texts=64)
    q.add(job("indexer", *[1] * 6, background=True))
    assert names(q.next_batch()) == ["indexer0", "indexer1"]
    q.add(job("a", 1))
    assert names(q.next_batch()) == ["a0", "indexer2"]


def test_a_cancelled_job_loses_its_texts_not_yet_taken() -> None:
    q: EmbedQueue[EmbedJob] = EmbedQueue(batch_tokens=2, max_texts=64)
    a, b = job("a", 1, 1, 1, 1), job("b", 1, 1, 1)
    q.add(a)
    q.add(b)
    assert names(q.next_batch()) == ["a0", "b0"]
    assert q.waiting() == 5
    a.cancelled = True
    assert q.waiting() == 2
    assert names(q.next_batch()) == ["b1", "b2"]
    assert not q


jobs = st.lists(
    st.tuples(st.sampled_from("abc"), st.lists(st.integers(1, 12), min_size=1, max_size=6), st.booleans()),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(jobs=jobs, budget=st.integers(1, 20), max_texts=st.integers(1, 5), cancel=st.sets(st.integers(0, 7)))
def test_every_text_once_in_order_within_bounds(
    jobs: list[tuple[str, list[int], bool]], budget: int, max_texts: int, cancel: set[int]
) -> None:
    q: EmbedQueue[EmbedJob] = EmbedQueue(budget, max_texts)
    made = [job(t, *lengths, background=bg) for t, lengths, bg in jobs]
    for j in made:
        q.add(j)
    taken: dict[int, list[int]] = {id(j): [] for j in made}
    rounds = 0
    while q:
        rounds += 1
        assert rounds <= 1000
        if rounds == 2:  # some callers leave after the first batch
            for k in cancel:
                if k < len(made):
                    made[k].cancelled = True
        batch = q.next_batch()
        tokens = sum(len(j.texts[i]) for j, i in batch)
        assert batch or not q
        assert len(batch) <= max_texts
        assert tokens <= budget or len(batch) == 1
        if any(j.background for j, _ in batch):  # background only once no app text waits
            assert not any(not j.background and not j.cancelled and j.sent < len(j.texts) for j in made)
        for j, i in batch:
            taken[id(j)].append(i)
    for j in made:
        got = taken[id(j)]
        assert got == list(range(len(got)))  # in order, once each
        if not j.cancelled:
            assert len(got) == len(j.texts)

"""The in-memory vector index: exact below its threshold, HNSW above, against a brute-force scan."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from datamgr.datashare.vectors import VectorIndex


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, dim))
    return _unit(centers[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim)))


def _brute(vecs: np.ndarray, docs: list[int], q: np.ndarray, n: int) -> list[int]:
    sims = vecs @ (q / np.linalg.norm(q))
    return [docs[i] for i in np.argsort(-sims, kind="stable")[:n]]


def test_exact_scan_is_brute_force() -> None:
    vecs = _clustered(500)
    index = VectorIndex(32, hnsw_min=10_000)
    index.add(list(range(1000, 1500)), vecs)
    for q in vecs[:20]:
        found = index.search(q, 10)
        assert [d for d, _ in found] == _brute(vecs, list(range(1000, 1500)), q, 10)
        assert found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert index.kind == "exact" and len(index) == 500


def test_removal_and_replacement() -> None:
    vecs = _clustered(100)
    index = VectorIndex(32, hnsw_min=10_000)
    index.add(range(100), vecs)
    index.remove([0, 99, 50, 12345])  # an unknown doc is ignored
    assert len(index) == 97
    assert all(d not in (0, 99, 50) for d, _ in index.search(vecs[0], 100))
    index.add([7], vecs[:1])  # doc 7 now holds vector 0
    assert index.search(vecs[0], 1)[0][0] == 7
    assert len(index) == 97


def test_hnsw_past_the_threshold_finds_what_brute_force_finds() -> None:
    vecs = _clustered(3000)
    docs = list(range(3000))
    index = VectorIndex(32, hnsw_min=1000)
    index.add(docs[:2000], vecs[:2000])
    assert index.maybe_build() and index.kind == "hnsw"
    index.add(docs[2000:], vecs[2000:])
    index.remove(docs[:100])
    assert len(index) == 2900
    live_vecs, live_docs = vecs[100:], docs[100:]
    recall = []
    for q in _clustered(50, seed=1):
        truth = _brute(live_vecs, live_docs, q, 10)
        found = [d for d, _ in index.search(q, 10)]
        assert not set(found) & set(docs[:100])
        recall.append(len(set(found) & set(truth)) / 10)
    assert np.mean(recall) >= 0.9
    assert len(index.search(vecs[500], 600)) == 600  # wider than the graph's default beam


def test_changes_while_the_graph_is_built_are_kept() -> None:
    vecs = _clustered(1200)
    index = VectorIndex(32, hnsw_min=1000)
    index.add(range(1000), vecs[:1000])
    done = threading.Event()

    def build() -> None:
        index.maybe_build()
        done.set()

    thread = threading.Thread(target=build)
    thread.start()
    index.add(range(1000, 1200), vecs[1000:])
    index.remove([3])
    thread.join()
    assert done.is_set() and index.kind == "hnsw"
    assert len(index) == 1199
    assert index.search(vecs[1100], 1)[0][0] == 1100
    assert all(d != 3 for d, _ in index.search(vecs[3], 50))

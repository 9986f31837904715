"""One indexed column's vectors in memory, for nearest-neighbour search by cosine similarity.

Below `hnsw_min` vectors an exact scan (one numpy matrix product) answers: at 10,000 x 384 float32
(15 MB) it takes a few milliseconds. From `hnsw_min` on, an HNSW graph (usearch, cosine, float16
vectors) answers in well under a millisecond; it is built in the background from the exact matrix,
which serves until the graph is complete, then goes. Both are rebuilt from the database at start: the
vectors table is the truth, this is only an index of it, and a caller checks every doc it returns
against the table (a doc whose row was deleted a moment ago may still be here).

Thread-safe: the indexer adds and removes on one thread while searches run on reader threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
Docs = npt.NDArray[np.int64]
HNSW_CONNECTIVITY = 16
HNSW_EXPANSION_ADD = 64
HNSW_EXPANSION_SEARCH = 128  # raised to the number asked for when that is larger


def _unit(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32)


class _Flat:
    """Unit vectors in a growable matrix; a removal moves the last row into the hole."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.mat = np.zeros((0, dim), np.float32)
        self.docs = np.zeros(0, np.int64)
        self.n = 0
        self.pos: dict[int, int] = {}

    def add(self, docs: Docs, vecs: Vectors) -> None:
        self.remove(docs)
        need = self.n + len(docs)
        if need > len(self.mat):
            size = max(need, 2 * len(self.mat), 64)
            self.mat = np.resize(self.mat, (size, self.dim))
            self.docs = np.resize(self.docs, size)
        self.mat[self.n : need] = vecs
        self.docs[self.n : need] = docs
        for i, doc in enumerate(docs.tolist(), self.n):
            self.pos[doc] = i
        self.n = need

    def remove(self, docs: Sequence[int] | Docs) -> None:
        for doc in np.asarray(docs, np.int64).tolist():
            i = self.pos.pop(doc, None)
            if i is None:
                continue
            last = self.n - 1
            if i != last:
                self.mat[i] = self.mat[last]
                moved = int(self.docs[last])
                self.docs[i] = moved
                self.pos[moved] = i
            self.n = last

    def search(self, query: Vectors, n: int) -> list[tuple[int, float]]:
        if self.n == 0:
            return []
        sims = self.mat[: self.n] @ query
        n = min(n, self.n)
        top = np.argpartition(-sims, n - 1)[:n] if n < self.n else np.arange(self.n)
        top = top[np.argsort(-sims[top], kind="stable")]
        return list(zip(self.docs[top].tolist(), sims[top].astype(float).tolist(), strict=True))

    def snapshot(self) -> tuple[Docs, Vectors]:
        return self.docs[: self.n].copy(), self.mat[: self.n].copy()


def _hnsw(dim: int) -> Any:
    from usearch.index import Index  # imported when a column first grows past the exact scan

    return Index(
        ndim=dim,
        metric="cos",
        dtype="f16",
        connectivity=HNSW_CONNECTIVITY,
        expansion_add=HNSW_EXPANSION_ADD,
        expansion_search=HNSW_EXPANSION_SEARCH,
    )


class VectorIndex:
    """The vectors of one (table, column): `add`, `remove`, `search`; `maybe_build` (on a worker
    thread) turns the exact scan into an HNSW graph once there are `hnsw_min` vectors."""

    def __init__(self, dim: int, hnsw_min: int, threads: int = 1) -> None:
        self.dim = dim
        self._hnsw_min = hnsw_min
        self._threads = threads
        self._lock = threading.Lock()
        self._flat: _Flat | None = _Flat(dim)
        self._graph: Any = None
        self._log: list[tuple[str, Docs, Vectors | None]] | None = None  # changes while a graph is built

    def __len__(self) -> int:
        with self._lock:
            return self._flat.n if self._flat is not None else len(self._graph)

    @property
    def kind(self) -> str:
        """ "hnsw" once the graph serves, else "exact"."""
        return "exact" if self._flat is not None else "hnsw"

    def add(self, docs: Sequence[int] | Docs, vectors: Vectors) -> None:
        """Adds (or replaces) vectors by doc; they are normalized here."""
        docs = np.asarray(docs, np.int64)
        if not len(docs):
            return
        vecs = _unit(np.asarray(vectors, np.float32).reshape(len(docs), self.dim))
        with self._lock:
            if self._flat is not None:
                self._flat.add(docs, vecs)
                if self._log is not None:
                    self._log.append(("add", docs, vecs))
            else:
                self._graph_add(docs, vecs)

    def remove(self, docs: Sequence[int] | Docs) -> None:
        docs = np.asarray(docs, np.int64)
        if not len(docs):
            return
        with self._lock:
            if self._flat is not None:
                self._flat.remove(docs)
                if self._log is not None:
                    self._log.append(("remove", docs, None))
            else:
                self._graph_remove(docs)

    def _graph_add(self, docs: Docs, vecs: Vectors) -> None:
        self._graph_remove(docs)
        self._graph.add(docs.astype(np.uint64), vecs, threads=self._threads)

    def _graph_remove(self, docs: Docs) -> None:
        for doc in docs.astype(np.uint64).tolist():
            if doc in self._graph:
                self._graph.remove(doc)

    def search(self, query: Vectors, n: int) -> list[tuple[int, float]]:
        """Up to `n` (doc, cosine similarity) pairs nearest to `query`, best first."""
        q = _unit(np.asarray(query, np.float32).reshape(1, self.dim))[0]
        with self._lock:
            if self._flat is not None:
                return self._flat.search(q, n)
            size = len(self._graph)
            if size == 0:
                return []
            wide = n > HNSW_EXPANSION_SEARCH  # the graph's beam must be as wide as the answer
            if wide:
                self._graph.expansion_search = n
            try:
                found = self._graph.search(q, min(n, size), exact=False)
            finally:
                if wide:
                    self._graph.expansion_search = HNSW_EXPANSION_SEARCH
        return [(int(d), 1.0 - float(dist)) for d, dist in zip(found.keys, found.distances, strict=True)]

    def maybe_build(self) -> bool:
        """Builds the HNSW graph if the exact scan has grown to `hnsw_min` vectors (blocking: call it
        on a worker thread); searches keep using the exact scan meanwhile. True if it built one."""
        with self._lock:
            if self._flat is None or self._log is not None or self._flat.n < self._hnsw_min:
                return False
            docs, vecs = self._flat.snapshot()
            self._log = []
        graph = _hnsw(self.dim)
        try:
            if len(docs):
                graph.add(docs.astype(np.uint64), vecs, threads=self._threads)
        except BaseException:
            with self._lock:
                self._log = None
            raise
        with self._lock:
            log, self._log = self._log or [], None
            self._graph, self._flat = graph, None
            for op, changed, changed_vecs in log:
                if op == "add":
                    assert changed_vecs is not None
                    self._graph_add(changed, changed_vecs)
                else:
                    self._graph_remove(changed)
        return True

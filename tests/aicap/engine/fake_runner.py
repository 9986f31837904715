"""A stand-in for ModelRunner that models llama.cpp's unified KV cells exactly enough to check the
engine's bookkeeping: a cell has a position, a token and a set of seq ids, and is free when the set
is empty. Its "model" derives each logit vector from the tokens a sequence can see in its cells, so
output that matches `reference()` proves the engine gave every sequence exactly its own history.
decode() asserts that a sequence's cells hold positions 0..p-1 exactly once each."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aicap.engine.model_runner import DecodeError

VOCAB = 32
EOG = 0


@dataclass(frozen=True, slots=True)
class FakeConfig:
    n_ctx: int
    n_seq_max: int
    n_batch: int = 512
    kv_unified: bool = True
    cache_type: str = "f16"
    n_threads: int = 1


def logits_for(history: Sequence[int]) -> np.ndarray:
    out = np.zeros(VOCAB, dtype=np.float32)
    out[1 + hash(tuple(history)) % (VOCAB - 1)] = 5.0  # never the EOG token: ignore_eos not needed
    out[EOG] = 4.0 if len(history) % 7 == 0 else -1.0
    return out


def reference(prompt: list[int], max_tokens: int, stop_at_eog: bool) -> list[int]:
    tokens = list(prompt)
    out: list[int] = []
    while len(out) < max_tokens:
        t = int(logits_for(tokens).argmax())
        out.append(t)
        tokens.append(t)
        if stop_at_eog and t == EOG:
            break
    return out


class FakeRunner:
    def __init__(self, n_ctx: int, n_seq_max: int) -> None:
        self.config = FakeConfig(n_ctx, n_seq_max)
        self.n_vocab = VOCAB
        self.eos = EOG
        self.eog = frozenset({EOG})
        self.cells: dict[int, tuple[int, int, set[int]]] = {}  # cell → (pos, token, seq ids)
        self._next = 0
        self.fail_next_decode = False  # inject llama_decode's "no KV slot" once
        self.refuse_restore = False  # llama.cpp refuses a state (no room for its cells)
        self.digest = "fa" * 32  # the model file's sha256

    def _visible(self, slot: int) -> list[int]:
        mine = sorted((pos, tok) for pos, tok, seqs in self.cells.values() if slot in seqs)
        assert [p for p, _ in mine] == list(range(len(mine))), f"seq {slot} has cells at {mine}"
        return [t for _, t in mine]

    def logits_for(self, history: Sequence[int]) -> np.ndarray:
        """The "model": a subclass may predict otherwise (one that copies its input, say)."""
        return logits_for(history)

    def decode(
        self, work: Sequence[tuple[int, Sequence[int], int, int]], lone: bool = False
    ) -> dict[int, np.ndarray]:
        n = sum(len(w[1]) for w in work)
        if self.fail_next_decode or n > self.config.n_ctx - len(self.cells):
            self.fail_next_decode = False
            raise DecodeError(1)
        out = {}
        for slot, tokens, pos, want in work:
            seen = self._visible(slot)
            assert len(seen) == pos, f"seq {slot} decodes at {pos} but holds {len(seen)} cells"
            for k, tok in enumerate(tokens):
                self._put(pos + k, tok, {slot})
            history = [*seen, *tokens]
            cut = len(history) - want
            out[slot] = np.stack([self.logits_for(history[: cut + j + 1]) for j in range(want)])
        return out

    def _put(self, pos: int, tok: int, seqs: set[int]) -> None:
        self.cells[self._next] = (pos, tok, seqs)
        self._next += 1

    def drop(self, slot: int, from_pos: int = 0) -> None:
        self.drop_range(slot, from_pos, 1 << 30)

    def drop_range(self, slot: int, p0: int, p1: int) -> None:
        for cell, (pos, _, seqs) in list(self.cells.items()):
            if slot in seqs and p0 <= pos < p1:
                seqs.discard(slot)
                if not seqs:
                    del self.cells[cell]

    def share_range(self, src: int, dst: int, p0: int, p1: int) -> None:
        moved = 0
        for pos, _, seqs in self.cells.values():
            if p0 <= pos < p1:
                assert not (dst in seqs and src not in seqs), f"seq {dst} already has a cell at {pos}"
                if src in seqs:
                    seqs.add(dst)
                    moved += 1
        assert moved == p1 - p0, f"seq {src} lacks cells in [{p0}, {p1})"

    def save(self, slot: int) -> bytes:
        return pickle.dumps([(pos, tok) for pos, tok, seqs in self.cells.values() if slot in seqs])

    def restore(self, slot: int, state: bytes) -> None:
        if self.refuse_restore:
            raise RuntimeError(f"could not restore the KV state of slot {slot}")
        cells = pickle.loads(state)
        assert len(cells) <= self.config.n_ctx - len(self.cells), "no room to restore"
        for pos, tok in cells:
            self._put(pos, tok, {slot})

"""Constrained decoding: a constrained sample's llguidance matcher says which tokens may come next.

Each step computes the masks of all its constrained samples together (llguidance's executor runs them
in parallel and drops the GIL), the engine samples each from its logits with the disallowed tokens at
-inf (greedy or not), and the chosen token advances the matcher. End-of-generation tokens are allowed
only where the grammar may end; a matcher that is stopped (its grammar complete, nothing may follow)
ends its sample ("stop"), as does one in an error state (a parser limit hit), which is logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from llguidance import LLExecutor

    from aicap.engine.sequence import Sequence

log = logging.getLogger("aicap.engine")


class Grammar:
    """The masks of one engine's constrained samples, for a vocabulary of `n_vocab` tokens."""

    def __init__(self, n_vocab: int, threads: int) -> None:
        self.n_vocab = n_vocab
        self._threads = threads
        self._executor: LLExecutor | None = None  # made on the first constrained step

    def masks(self, seqs: list[Sequence]) -> np.ndarray:
        """One row per sequence (each with a matcher): True where a token is allowed next."""
        import llguidance.numpy as lln

        matchers = [(s.matcher, i) for i, s in enumerate(seqs) if s.matcher is not None]
        assert len(matchers) == len(seqs)
        bits = lln.allocate_token_bitmask(len(seqs), self.n_vocab)
        if len(matchers) == 1:
            lln.fill_next_token_bitmask(matchers[0][0], bits, 0)
        else:
            if self._executor is None:
                from llguidance import LLExecutor

                self._executor = LLExecutor(self._threads)
            lln.fill_next_token_bitmask_par(self._executor, matchers, bits)
        # bit t % 32 of little-endian word t // 32 is token t
        return np.unpackbits(bits.view(np.uint8), axis=1, count=self.n_vocab, bitorder="little").view(bool)

    @staticmethod
    def advance(seq: Sequence, token: int) -> None:
        """The matcher reads the sampled token; the sample ends if its grammar is complete."""
        m = seq.matcher
        assert m is not None
        if not m.consume_token(token) or m.is_error():
            log.warning("structured output stopped early: %s", m.get_error() or "token refused")
            seq.ended = True
        elif m.is_stopped():
            if m.stop_reason() not in ("NoExtension", "NoExtensionBias", "EndOfSentence"):
                log.warning("structured output stopped early: %s", m.stop_reason())
            seq.ended = True

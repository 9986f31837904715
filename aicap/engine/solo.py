"""A lone sequence decodes on the model's shipped weights (`ai.solo_weights`).

Fast weights (aicap.weights) load a Q4_1 model as its Q8_0 copy, which computes prompts and batches
of sequences faster but reads 1.5x the bytes a token: a step of one sequence decoding one token is
bound by those bytes, and ran 10.5 ms on the shipped Q4_1 weights against 12.4 ms on the copy here
(bare `llama_decode`, 2 threads, 200 tokens of context). A second llama.cpp context on the shipped
file (`Solo`, one sequence, `SOLO_N_CTX` cells) therefore takes the steps whose whole work is one
sequence's few tokens (a decode and its draft, at most `SOLO_MAX_TOKENS`): the model runner copies
the sequence's KV into it when such a step comes (~23 KB a token), and copies back what it computed
before any other work touches the main context. The two files are one model within rounding
(aicap.weights), so their KV cells are interchangeable as the same model's cells computed in another
batch are: logits agree within the tolerance the engine's tests allow.

Copying back takes only the new tokens: `tail_state` cuts the positions from p0 on out of llama.cpp's
per-sequence state (its layout as of llama-cpp-python 0.3.x: a header, each cell's position and seq
ids, then per layer the K rows and the V rows of those cells), which the main context restores under
a spare seq id and gives to the sequence's slot with llama_memory_seq_cp. Blocks the prefix cache
publishes while the sequence decodes here are tagged in the main context once their cells are back.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import llama_cpp
import numpy as np

if TYPE_CHECKING:
    from aicap.config import RunnerConfig

# a decode and its draft (ai.spec_draft_max, 8): more tokens run faster on the fast weights (measured
# here: 8 tokens of one sequence in 40 ms as Q8_0 against 47 as Q4_1)
SOLO_MAX_TOKENS = 9
SOLO_N_CTX = 4096  # cells of the solo context: a longer sequence decodes on the main one
_HEAD = 8  # the state's leading bytes (kept as they are)


def tail_state(state: bytes, p0: int) -> bytes:
    """llama.cpp's per-sequence state with only its cells at positions >= p0 (the same layout, so
    llama_state_seq_set_data restores it). ValueError if the bytes are not that layout."""
    view = memoryview(state)
    off = _HEAD
    n_stream, n_cells = struct.unpack_from("<II", state, off)
    if n_stream != 1:
        raise ValueError(f"a state of {n_stream} streams")
    off += 8
    out: list[bytes | memoryview] = [view[:_HEAD]]
    metas, keep = [], []
    for i in range(n_cells):
        pos, n_ids = struct.unpack_from("<iI", state, off)
        size = 8 + 4 * n_ids
        if pos >= p0:
            keep.append(i)
            metas.append(view[off : off + size])
        off += size
    out.append(struct.pack("<II", n_stream, len(keep)))
    out += metas
    v_trans, n_layer = struct.unpack_from("<II", state, off)
    if v_trans:
        raise ValueError("a transposed V cache (flash attention off)")
    out.append(view[off : off + 8])
    off += 8
    rows = np.asarray(keep, dtype=np.intp)
    for _ in range(2 * n_layer):  # K of every layer, then V of every layer
        _type, row = struct.unpack_from("<iQ", state, off)
        out.append(view[off : off + 12])
        off += 12
        cells = np.frombuffer(state, dtype=np.uint8, count=n_cells * row, offset=off).reshape(n_cells, row)
        out.append(cells[rows].tobytes())
        off += n_cells * row
    if off != len(state):
        raise ValueError(f"state layout not understood ({off} of {len(state)} bytes)")
    return b"".join(out)


class Solo:
    """The second context: one sequence (llama seq id 0) mirroring a main-context `slot`.

    The main context holds the slot's KV for positions below `synced`, this one for positions below
    `end`; `shares` are the prefix cache's cell tags (holder, p0, p1) that wait for the cells."""

    def __init__(self, path: Path, config: RunnerConfig) -> None:
        params = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise FileNotFoundError(f"cannot load model {path}")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx = min(config.n_ctx, SOLO_N_CTX)
        cparams.n_batch = cparams.n_ubatch = SOLO_MAX_TOKENS
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = config.n_threads
        cparams.flash_attn_type = 1
        cparams.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self._model)
            raise RuntimeError("cannot create the solo llama.cpp context")
        self._mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(SOLO_MAX_TOKENS, 0, 1)
        self.path = path
        self.slot: int | None = None
        self.synced = 0
        self.end = 0
        self.shares: list[tuple[int, int, int]] = []
        try:
            self._check_layout()
        except (RuntimeError, ValueError):
            self.close()
            raise

    def _check_layout(self) -> None:
        """RuntimeError or ValueError unless this llama.cpp's state is the layout tail_state cuts."""
        b = self.batch
        for i in range(2):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = 1, i, 1, False
            b.seq_id[i][0] = 0
        b.n_tokens = 2
        if llama_cpp.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("the solo context cannot decode")
        state = self.state()
        llama_cpp.llama_memory_clear(self._mem, True)
        tail = tail_state(state, 1)
        if not 0 < len(tail) < len(state) or tail_state(state, 0) != state:
            raise ValueError("state layout not understood")

    def takes(self, work: Sequence[tuple[int, Sequence[int], int, int]]) -> bool:
        """Whether a step's work is one sequence's few tokens that fit here."""
        if len(work) != 1:
            return False
        _slot, tokens, pos, _want = work[0]
        return 0 < len(tokens) <= SOLO_MAX_TOKENS and pos + len(tokens) <= self.n_ctx

    def enter(self, slot: int, state: bytes, pos: int) -> bool:
        """Mirrors `slot`, whose KV (`state`) covers positions below `pos`; False if it does not fit."""
        llama_cpp.llama_memory_clear(self._mem, True)
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self.ctx, buf, len(state), 0) != len(state):
            llama_cpp.llama_memory_clear(self._mem, True)
            return False
        self.slot, self.synced, self.end = slot, pos, pos
        self.shares.clear()
        return True

    def state(self) -> bytes:
        size = llama_cpp.llama_state_seq_get_size(self.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.ctx, buf, size, 0)
        return ctypes.string_at(buf, written)

    def drop(self, from_pos: int) -> None:
        """Forgets this sequence's KV from `from_pos` on (a rejected draft)."""
        llama_cpp.llama_memory_seq_rm(self._mem, 0, from_pos, -1)
        self.end = min(self.end, from_pos)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self._mem, True)
        self.slot = None
        self.synced = self.end = 0
        self.shares.clear()

    def set_threads(self, n: int) -> None:
        llama_cpp.llama_set_n_threads(self.ctx, n, n)

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self._model)

